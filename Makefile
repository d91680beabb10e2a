# PNS: one place for every developer and CI command.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed
PNS_HOME ?= $(CURDIR)/.pns-home
export PNS_HOME

.PHONY: venv install run test test-fast lint bench faults clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test,lint]'
	touch $(STAMP)

venv install: $(STAMP)

## Start pnsd (and pnsweb once it exists) with the demo PTS under an embedded home ($(PNS_HOME)).
run: $(STAMP)
	$(VENV)/bin/pnsd start --home $(PNS_HOME)

## Lint, then the whole test suite (slow integration tests included).
test: $(STAMP) lint
	$(PY) -m pytest -q -p no:cacheprovider

## The suite without the slow integration tests.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check protocols pnsd pnsweb tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
