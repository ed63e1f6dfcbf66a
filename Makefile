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

# pyproject's addopts deselect the tests marked slow; test-slow runs only those (the
# reliability suite's kills, interrupts and overlapping runs: a few minutes).
test: $(STAMP)
	$(BIN)/python -m pytest

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

demo: $(STAMP)
	bash sample_data/demo.sh

# Quick scale (N = 1,000,000) by default; BENCH_SCALE=full for N = 5,000,000, where the
# targets are judged. Data goes to $BENCH_DIR (default /tmp/mbp-bench), never the repo.
BENCH_SCALE ?= quick
bench: $(STAMP)
	$(BIN)/python benchmarks/run.py --scale $(BENCH_SCALE)

lint: $(STAMP)
	$(BIN)/ruff check mbp tests
	$(BIN)/ruff format --check mbp
	$(BIN)/mypy mbp

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
