# Everything runs from .venv, made here from nothing but python3.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-slow lint demo bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

demo: $(STAMP)
	bash sample_data/demo.sh

lint: $(STAMP)
	$(BIN)/ruff check mbp tests
	$(BIN)/ruff format --check mbp
	$(BIN)/mypy mbp

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
