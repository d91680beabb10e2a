# PNS: one place for every developer and CI command.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed
PNS_HOME ?= $(CURDIR)/.pns-home
export PNS_HOME

.PHONY: venv install run cluster pg test test-fast lint browser node-worker containers bench faults soak clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test,lint,bench]'
	touch $(STAMP)

venv install: $(STAMP)

## Start pnsd (in the background) and pnsweb (in the foreground) with the demo PTS under an
## embedded home ($(PNS_HOME)). Ctrl-C, or SIGTERM/SIGINT/SIGHUP to make, stops both.
WEB_USER ?= demo
WEB_PASSWORD ?= demo
WEB_PORT ?= 5000
run: $(STAMP)
	@echo "console: http://127.0.0.1:$(WEB_PORT)/console/"
	@echo "web API: http://127.0.0.1:$(WEB_PORT)/v0.6/ and http://127.0.0.1:$(WEB_PORT)/v1/processes"
	@echo "         (user $(WEB_USER), password $(WEB_PASSWORD)); pnsd home $(PNS_HOME),"
	@echo "         log $(PNS_HOME)/pnsd.log; Ctrl-C stops pnsweb and pnsd"
	@PNSWEB_PASSWORD='$(WEB_PASSWORD)' exec $(PY) scripts/devrun.py '$(PNS_HOME)' '$(WEB_PORT)' '$(WEB_USER)'

## A local cluster: PostgreSQL (data in $(CLUSTER_DIR)/pg), two pnsd nodes on it and pnsweb
## fronting both (scripts/cluster.py). Ctrl-C, or SIGTERM/SIGINT/SIGHUP to make, stops them all.
CLUSTER_DIR ?= $(CURDIR)/.pns-cluster
CLUSTER_PORT ?= 5050
cluster: $(STAMP) pg
	@PNSWEB_PASSWORD='$(WEB_PASSWORD)' exec $(PY) scripts/cluster.py '$(CLUSTER_DIR)' \
		'$(CLUSTER_PORT)' '$(WEB_USER)'

## PostgreSQL's server programs from the distribution's packages (the shared job store's tests
## and `make cluster` start their own server from them; as root, as CI runs; elsewhere install
## the postgresql package yourself, or those tests are skipped).
pg:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || { \
		apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
		echo "make: no PostgreSQL server programs: the shared job store's tests are skipped"

## Lint, then the whole test suite (slow integration tests included).
test: $(STAMP) lint browser node-worker containers pg
	$(PY) -m pytest -q -p no:cacheprovider

## Headless Chromium from the distribution's packages, for the console's browser tests (as root,
## as CI runs; elsewhere install the chromium package yourself, or those tests are skipped).
CHROMIUM ?= /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || [ "$$(id -u)" != 0 ] || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	@test -x $(CHROMIUM) || echo "make: no $(CHROMIUM): the console's browser tests are skipped"

## The Node.js worker runtime's packages (workers/node, from its lock file), for its tests; node
## and npm come from the distribution's packages when missing (as root, as CI runs).
NODE_WORKER := workers/node
node-worker: $(NODE_WORKER)/node_modules/.installed
$(NODE_WORKER)/node_modules/.installed: $(NODE_WORKER)/package-lock.json
	@command -v npm >/dev/null || [ "$$(id -u)" != 0 ] || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; }
	@if command -v npm >/dev/null; then cd $(NODE_WORKER) && npm ci --no-audit --no-fund \
		&& touch node_modules/.installed; \
	else echo "make: no npm: the Node.js worker's tests are skipped"; fi

## podman (and runc, which runs containers where crun cannot: cgroups in hybrid mode) from the
## distribution's packages, for the container worker tests (as root; elsewhere they are skipped).
containers:
	@command -v podman >/dev/null && command -v runc >/dev/null || [ "$$(id -u)" != 0 ] || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc \
		>/dev/null; }
	@command -v podman >/dev/null || echo "make: no podman: the container worker tests are skipped"

## The suite without the slow integration tests.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check protocols pnslog pnsd pnsweb tests bench faults harness scripts
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

## The benchmarks (their chart needs matplotlib: the `bench` extra, in the venv above).
bench: $(STAMP)
	$(PY) -m bench

## The fault-injection suite and a modest leak soak (python -m faults --help for options).
faults: $(STAMP)
	$(PY) -m faults

## The memory soak at full length: 100,000 echo runs per path, RSS growth judged.
soak: $(STAMP)
	$(PY) -m faults --soak --soak-requests 100000

clean:
	rm -rf $(NODE_WORKER)/node_modules $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
