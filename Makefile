# Short task list. `make demo` and `make test` are the two commands README.md opens with.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint format bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: setup
	$(BIN)/streamrec demo

test: setup
	OPENBLAS_NUM_THREADS=1 $(BIN)/pytest

lint: setup
	$(BIN)/ruff check streamrec tests bench
	$(BIN)/ruff format --check streamrec tests bench
	$(BIN)/mypy

format: setup
	$(BIN)/ruff check --fix streamrec tests bench
	$(BIN)/ruff format streamrec tests bench

bench: setup
	OPENBLAS_NUM_THREADS=1 $(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache streamrec-state
