# `make test`: set up .venv if needed, then lint, type-check and run the tests.
# `make run`:  the main job on the embedded default (no keys, no internet).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test run lint typecheck pytest bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,exchange]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check oms adapters tests examples
	$(BIN)/ruff format --check oms adapters tests examples

typecheck: $(STAMP)
	$(BIN)/mypy --strict oms adapters/oms_backpack adapters/oms_local_exchange examples

pytest: $(STAMP)
	$(BIN)/python -m pytest -q

test: lint typecheck pytest

run: $(STAMP)
	$(BIN)/python -m oms_backpack.run

bench: $(STAMP)
	$(BIN)/python -m oms_backpack.bench

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
