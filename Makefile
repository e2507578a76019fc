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

install-dev: $(BIN)/python
	$(BIN)/pip install -q '$(TORCH_CPU)'
	$(BIN)/pip install -q -e '.[dev]'

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
