# `make test`: set up .venv (and .venv-ccxt) if needed, then lint, type-check and run the tests.
# `make run`:  the main job on the embedded default (no keys, no internet).
# `make ccxt-env`: ccxt in an environment of its own (it pins exact versions of attrs, idna,
#   urllib3 and others), for the test that drives its Backpack client against the local exchange.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CCXT_VENV  := .venv-ccxt
CCXT_REQS  := tests/local_exchange/ccxt-requirements.txt
CCXT_STAMP := $(CCXT_VENV)/.installed

.PHONY: test run lint typecheck pytest bench clean ccxt-env

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,exchange]'
	touch $(STAMP)

$(CCXT_STAMP): $(CCXT_REQS)
	$(PYTHON) -m venv $(CCXT_VENV)
	$(CCXT_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CCXT_VENV)/bin/python -m pip install --quiet -r $(CCXT_REQS)
	touch $(CCXT_STAMP)

ccxt-env: $(CCXT_STAMP)

lint: $(STAMP)
	$(BIN)/ruff check oms adapters tests examples
	$(BIN)/ruff format --check oms adapters tests examples

typecheck: $(STAMP)
	$(BIN)/mypy --strict oms adapters/oms_backpack adapters/oms_local_exchange examples

pytest: $(STAMP) $(CCXT_STAMP)
	$(BIN)/python -m pytest -q

test: lint typecheck pytest

run: $(STAMP)
	$(BIN)/python -m oms_backpack.run

bench: $(STAMP)
	$(BIN)/python -m oms_backpack.bench

clean:
	rm -rf $(VENV) $(CCXT_VENV) .mypy_cache .pytest_cache .ruff_cache
