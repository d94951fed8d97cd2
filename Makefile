# Fresh machine, only Python 3.11 needed:  make demo   |   make test
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/lmscope: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	touch $(BIN)/lmscope

install: $(BIN)/lmscope

demo: install
	$(BIN)/lmscope demo --out lmscope-demo --overwrite

test: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/python -m pytest

.PHONY: install demo test
