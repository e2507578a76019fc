# Two entry points a new user needs; everything else hangs off them.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch that pip finds on this project's machines (a local wheel); installed
# before meshplan[runtime] so that the `torch>=2.6` requirement takes it instead of a CUDA build.
TORCH_CPU ?= torch==2.13.0

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

.PHONY: install install-dev browser serve test lint
install: $(BIN)/python
	$(BIN)/pip install -q -e '.[service]'

# torchtitan 0.2.2 (the TOML era) for the launch tests, beside 0.3.0: its config parser only
# needs tyro (from 0.3.0's dependencies); the tests put this folder first on sys.path.
TORCHTITAN_02 := $(VENV)/frameworks/torchtitan-0.2

install-dev: $(BIN)/python
	$(BIN)/pip install -q '$(TORCH_CPU)'
	DS_BUILD_OPS=0 $(BIN)/pip install -q -e '.[dev,frameworks]'
	test -d $(TORCHTITAN_02)/torchtitan || \
	  $(BIN)/pip install -q --no-deps --target $(TORCHTITAN_02) torchtitan==0.2.2

# Headless Chromium for the page tests (Debian's package; Playwright drives it, it downloads
# no browser of its own).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the page tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

serve: install
	$(BIN)/meshplan serve

test: install-dev browser
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -q

lint: install-dev
	$(BIN)/ruff check . && $(BIN)/mypy
