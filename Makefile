# Smart Meter Watchdog: the front door. `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Settings live in .env (see .env.example; the Python code reads it too) and the environment.
-include .env

PYTHON_BOOT ?= python3
VENV        := .venv
PY          := $(VENV)/bin/python
SMW_JARS_DIR   ?= $(CURDIR)/.deps/jars
# spark-submit reads spark-defaults.conf (connector jars, interpreter) from here.
SPARK_CONF_DIR ?= $(abspath $(SMW_JARS_DIR)/../spark-conf)
export SMW_JARS_DIR SPARK_CONF_DIR
SPARK_SUBMIT := $(VENV)/bin/spark-submit
PYTEST_ARGS ?=

STAMP_VENV  := $(VENV)/.installed
STAMP_JARS  := .deps/.jars-installed
STAMP_NODE  := infra/reqlite/node_modules/.installed
MAVEN_POMS  := infra/maven/pom.xml $(wildcard infra/maven/*/pom.xml)

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "; printf "Smart Meter Watchdog\n\nTargets:\n"} \
	     /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@printf "\nVariables: DATE=YYYY-MM-DD for batch, PYTEST_ARGS for test; settings in .env (see .env.example)\n"

## ---------------------------------------------------------------- setup
.PHONY: setup
setup: $(STAMP_VENV) $(STAMP_JARS) $(STAMP_NODE) ## Install everything: .venv, Maven jars (Kafka, Cassandra, Spark connectors), reqlite
	@echo "setup complete"

$(STAMP_VENV): pyproject.toml
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

$(STAMP_JARS): $(MAVEN_POMS) $(STAMP_VENV)
	mvn -B -q -f infra/maven/pom.xml -Djars.dir=$(SMW_JARS_DIR) package
	$(PY) -m smw.jars prune
	@touch $@

$(STAMP_NODE): infra/reqlite/package.json infra/reqlite/package-lock.json
	cd infra/reqlite && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

## ---------------------------------------------------------------- local stack
.PHONY: up down status init
up: setup ## Start Kafka (KRaft), Cassandra and reqlite on 127.0.0.1; wait until ready
	$(PY) -m smw.services up

down: ## Stop the services started by `make up` (by pid file)
	@if [ -x $(PY) ]; then $(PY) -m smw.services down; else echo "nothing to stop (no .venv)"; fi

status: ## Show each service with pid, address, readiness and memory
	@$(PY) -m smw.services status

init: up ## Create Kafka topics, Cassandra keyspace/tables, RethinkDB tables/indexes (idempotent)
	$(PY) -m smw.init

## ---------------------------------------------------------------- tests
.PHONY: test test-unit
test: setup browser-deps up init ## Run the whole test suite against the local services (what CI runs)
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: setup ## Run only the tests that need no service
	$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

## ---------------------------------------------------------------- benchmarks
.PHONY: web screenshots bench-web browser-deps
web: ## Serve the dashboard and APIs with waitress on 127.0.0.1:8000 (SMW_WEB_HOST/PORT to change)
	$(PY) -m webapp

browser-deps: ## Install Debian's chromium and chromium-driver for the browser test (skipped when present)
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq chromium chromium-driver; }

screenshots: browser-deps ## Write PNGs of the main pages to docs/screenshots (sample data in smw_screens)
	$(PY) -m webapp.screenshots

bench-web: ## House daily-kWh API p50/p99 under 50 clients; one alert to 200 SSE subscribers
	$(PY) -m webapp.bench

.PHONY: bench
bench: ## Run every benchmark
	@echo "benchmarks are added with the layers they measure; none yet"

## ---------------------------------------------------------------- demo
.PHONY: demo
demo: ## The whole pipeline from a fresh clone (not built yet)
	@echo "make demo is not built yet: see the README for what works today"; exit 1

## ---------------------------------------------------------------- housekeeping
.PHONY: clean clean-data
clean-data: down ## Stop services and delete their data and logs (var/)
	rm -rf var

clean: clean-data ## Also delete .venv, fetched jars and node_modules
	rm -rf $(VENV) .deps infra/reqlite/node_modules
