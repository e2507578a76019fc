# Two entry points a new user needs; everything else hangs off them.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

.PHONY: install serve test lint
install: $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'

serve: install
	$(BIN)/meshplan serve

test: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check . && $(BIN)/mypy
