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
# The venv first on PATH: spark-submit finds pyspark (SPARK_HOME) through `python3`;
# SPARK_LOCAL_IP keeps the driver, its block manager and UI on SPARK_DRIVER_HOST (loopback by default).
# SPARK_MASTER (environment, .env or `make batch SPARK_MASTER=spark://host:7077`) is spark-submit's
# --master; the python -m jobs read it themselves. A master that is not local gets the code and the
# Python environment shipped by the session itself (smw.ship; `make package` builds both ahead).
DRIVER_IP    := SPARK_LOCAL_IP="$${SPARK_LOCAL_IP:-$(or $(SPARK_DRIVER_HOST),127.0.0.1)}"
SPARK_SUBMIT := $(DRIVER_IP) PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/spark-submit $(if $(SPARK_MASTER),--master "$(SPARK_MASTER)")
# The streaming jobs run as `python -m`: pyspark starts their JVM deaf to Ctrl-C, so the
# driver alone hears it, stops its queries and exits 0. Under spark-submit the same Ctrl-C
# would also reach the JVM, which shuts Spark down under the driver's feet.
SPARK_JOB    := $(DRIVER_IP) $(if $(SPARK_MASTER),SPARK_MASTER="$(SPARK_MASTER)") $(PY) -m
PYTEST_ARGS ?=
# VERBOSE=1: Spark's own log on the console too (it always goes to var/log/spark.log).
ifdef VERBOSE
export SMW_SPARK_CONSOLE_LEVEL := info
endif

STAMP_VENV  := $(VENV)/.installed
STAMP_JARS  := .deps/.jars-installed
SPARK_DEFAULTS := $(SPARK_CONF_DIR)/spark-defaults.conf
SPARK_CLASSES  := $(abspath $(SMW_JARS_DIR)/../spark-cds/spark.jsa)
STAMP_NODE  := infra/reqlite/node_modules/.installed
MAVEN_POMS  := infra/maven/pom.xml $(wildcard infra/maven/*/pom.xml)

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "; printf "Smart Meter Watchdog\n\nTargets:\n"} \
	     /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@printf "\nVariables: DATE=YYYY-MM-DD for batch, PYTEST_ARGS for test, SEEDS=1-8 for eval-alerts, VERBOSE=1 for Spark's own log; settings in .env (see .env.example)\n"

## ---------------------------------------------------------------- setup
.PHONY: setup
setup: $(STAMP_VENV) $(STAMP_JARS) $(SPARK_DEFAULTS) $(SPARK_CLASSES) $(STAMP_NODE) ## Install everything: .venv, Maven jars (Kafka, Cassandra, Spark connectors), Spark's class archive, reqlite
	@echo "setup complete"

# Every Python package, transitive ones and the build backend included, comes from requirements.lock
# at the pinned version and only if its archive has a listed hash (make lock writes it); then the
# project itself, without dependencies or build isolation (its backend is in the lock too).
$(STAMP_VENV): pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes -r requirements.lock
	@# setuptools warns that an editable install can be shadowed by a folder of the package's name: not here.
	PYTHONWARNINGS=ignore $(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $@

# Re-resolve requirements.lock from pyproject.toml's pins (the .[test] set and the build backend), with
# the hash of every archive PyPI has for each version. LOCK_ARGS="--upgrade" also moves the transitive
# packages to their newest versions; LOCK_ARGS="--upgrade-package NAME" one of them.
LOCK_ARGS ?=
PIP_TOOLS ?= pip-tools==7.6.2
.PHONY: lock
lock: ## Re-resolve requirements.lock (pinned, hashed) from pyproject.toml; LOCK_ARGS="--upgrade" for newer transitive packages
	@test -x .deps/lock-venv/bin/pip-compile || { $(PYTHON_BOOT) -m venv .deps/lock-venv && \
	  .deps/lock-venv/bin/python -m pip install --quiet '$(PIP_TOOLS)'; }
	CUSTOM_COMPILE_COMMAND="make lock" .deps/lock-venv/bin/pip-compile --quiet --generate-hashes --strip-extras \
	  --extra test --all-build-deps --unsafe-package smart-meter-watchdog --no-emit-find-links \
	  --output-file requirements.lock $(LOCK_ARGS) pyproject.toml

$(STAMP_JARS): $(MAVEN_POMS) $(STAMP_VENV)
	@# Maven's console library writes colour resets even in batch mode: stripped, errors kept.
	@# --strict-checksums: an artifact whose checksum does not match Maven Central's fails the build.
	set -o pipefail; mvn -B -q --strict-checksums -f infra/maven/pom.xml -Djars.dir=$(SMW_JARS_DIR) package 2>&1 \
	  | sed -u -e 's/\x1b\[[0-9;]*m//g' -e '/^$$/d'
	$(PY) -m smw.jars prune
	@touch $@

# Rewritten when the Spark settings in the code change, not only on a new jar set.
$(SPARK_DEFAULTS): smw/spark.py smw/config.py $(STAMP_JARS)
	$(PY) -m smw.spark defaults

# Spark's classes parsed and verified once, mapped by every Spark JVM at start (JVM class-data
# sharing): a short job starts ~2.5 s sooner. Rebuilt with the class path (pyspark, jars, settings).
$(SPARK_CLASSES): $(SPARK_DEFAULTS) $(STAMP_VENV)
	$(PY) -m smw.spark archive-classes

$(STAMP_NODE): infra/reqlite/package.json infra/reqlite/package-lock.json
	cd infra/reqlite && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

## ---------------------------------------------------------------- local stack
.PHONY: up down status init
up: setup ## Start Kafka (KRaft), Cassandra and reqlite on 127.0.0.1; wait until ready (services configured elsewhere are left alone)
	@$(PY) -m tools.services up

down: ## Stop the services started by `make up` (by pid file)
	@if [ -x $(PY) ]; then $(PY) -m tools.services down; else echo "nothing to stop (no .venv)"; fi

status: ## Show each service with pid, address, readiness and memory
	@$(PY) -m tools.services status

# make init and every job target (they depend on it) start a local service that the configuration
# places on 127.0.0.1 and that is not running, and say so; a service at any other address is only
# connected to. LOCAL_SERVICES=0: never start one (a service that is down is then an error).
init: setup ## Create Kafka topics, Cassandra keyspace/tables, RethinkDB tables/indexes on the configured hosts (idempotent; starts local ones that are down)
	@$(PY) -m tools.services ensure
	@$(PY) -m smw.init

## ---------------------------------------------------------------- multi-node cluster
# Three Kafka brokers (KRaft, SASL/SCRAM), three Cassandra nodes (passwords), a Spark master and two
# workers that cannot read this checkout, on 127.0.0.1-3 beside the local stack (docs/cluster.md).
.PHONY: cluster-up cluster-status cluster-down test-cluster
cluster-up: setup ## Start the multi-node stack (3 Kafka, 3 Cassandra, Spark master + 2 workers) on 127.0.0.1-3; clients' settings in var/cluster/cluster.env
	@$(PY) -m tools.cluster up

cluster-status: ## Show each cluster node with pid, address, readiness and memory, and whether the cluster is whole
	@$(PY) -m tools.cluster status

cluster-down: ## Stop the processes `make cluster-up` started (by pid file; data in var/cluster is kept)
	@if [ -x $(PY) ]; then $(PY) -m tools.cluster down; else echo "nothing to stop (no .venv)"; fi

# The fault tests' jobs run on the cluster's master with the code and Python environment shipped
# (make package builds both ahead); the alert job's live feed is the local stack's RethinkDB (make up).
test-cluster: up cluster-up package ## Run the cluster tests against the multi-node stack: tests/cluster (marker cluster), the fault tests among them (docs/cluster.md)
	$(PY) -m pytest -m cluster tests/cluster $(PYTEST_ARGS)

## ---------------------------------------------------------------- pipeline
.PHONY: generate replay land land-once
GENERATE_ARGS ?= --houses 20 --days 14 --seed 1 --out var/gen
generate: setup ## Generate REDD-like houses with ground-truth spikes (GENERATE_ARGS="--houses N --days D ...")
	$(PY) -m datasets.generate $(GENERATE_ARGS)

.PHONY: replay land land-once
REPLAY_ARGS ?= --source synthetic --houses 10 --days 1
replay: init ## Replay a dataset into Kafka (REPLAY_ARGS="--source parquet:DIR --speed 60"; see --help)
	$(PY) -m ingest.replay $(REPLAY_ARGS)

.PHONY: serial
SERIAL_ARGS ?=
serial: init ## Read a serial meter into Kafka (SERIAL_ARGS="--device /dev/ttyACM0 --type emu2|pulse --house H")
	@test -n "$(SERIAL_ARGS)" || { echo 'usage: make serial SERIAL_ARGS="--device /dev/ttyACM0 --type emu2 --house H"'; exit 2; }
	$(PY) -m ingest.serial $(SERIAL_ARGS)

.PHONY: pulse-store price-store
pulse-store: init ## Store pulse-meter blinks from the events topic in Cassandra for the pulse-meter API
	$(PY) -m ingest.pulse_store

price-store: init ## Store EMU-2 prices from the events topic as their houses' tariff history (cost views use it)
	$(PY) -m ingest.price_store

.PHONY: land land-once
LAND_ARGS ?=
land: init ## Land Kafka readings into the Parquet raw zone continuously (Ctrl-C stops cleanly)
	@$(SPARK_JOB) ingest.land $(LAND_ARGS)

land-once: init ## Land everything in Kafka now, then stop (nightly runs)
	@$(SPARK_JOB) ingest.land --once $(LAND_ARGS)

.PHONY: package
package: setup ## Build what executors of a cluster master get: the code zip and the venv-pack archive of .venv (.deps/dist/)
	@$(PY) -m smw.ship

.PHONY: cqlsh
CQL ?=
cqlsh: setup ## Cassandra's shell on the configured keyspace (CQL="SELECT ..." runs one statement and exits)
	@$(PY) -m smw.cql $(if $(CQL),-e "$(CQL)")

.PHONY: batch houses
DATE ?=
BATCH_ARGS ?=
batch: init ## Nightly batch into Cassandra for DATE=YYYY-MM-DD (default: yesterday); BATCH_ARGS="--from D --to D"
	@$(SPARK_SUBMIT) batch/nightly.py $(if $(DATE),--date $(DATE)) $(BATCH_ARGS)

houses: init ## Register houses (time zone, zip) from HOUSES=path/to/houses.parquet
	@test -n "$(HOUSES)" || { echo "usage: make houses HOUSES=path/to/houses.parquet"; exit 2; }
	$(PY) -m batch.houses $(HOUSES)

## ---------------------------------------------------------------- tests
# Streaming alerts: the job, its quality evaluation and its benchmark.
.PHONY: stream stream-reset eval-alerts bench-stream
STREAM_ARGS ?=
EVAL_ARGS ?=
SEEDS ?=
BENCH_STREAM_ARGS ?=
stream: init ## Raise overshoot / no-data / new-peak alerts from Kafka into RethinkDB and Cassandra (Ctrl-C stops cleanly)
	@$(SPARK_JOB) streaming.alerts $(STREAM_ARGS)

stream-reset: ## Forget the alert job's place in Kafka and its meter state (stop the job first); its next start begins afresh
	@$(PY) -c 'import shutil; from smw import config, zones; p = zones.checkpoint(config.load(), "alerts"); \
	  shutil.rmtree(p, ignore_errors=True); print(f"removed {p}: make stream starts afresh (see --starting-offsets)")'

eval-alerts: init ## Alert quality on generated spikes: precision, recall, false alerts per house-day (SEEDS=1-8: a row per seed)
	$(PY) -m tools.evaluate_alerts $(if $(SEEDS),--seeds $(SEEDS)) $(EVAL_ARGS)

bench-stream: init ## Alert job: sustained readings/s and produce-to-changefeed latency p50/p95/p99 at 10k/40k/80k/160k readings/s, and the 4x-meters scale test
	$(PY) -m tools.bench_stream $(BENCH_STREAM_ARGS)

.PHONY: test test-unit
# Without chromium (and no root to install it) every other test runs, then the run fails saying how
# to install it: the browser tests are never skipped silently.
test: setup up init ## Run the whole test suite against the local services (what CI runs)
	@if ( $(call apt_packages,$(BROWSER_COMMANDS),$(BROWSER_PACKAGES),$(BROWSER_USERS)) ); then \
	  $(PY) -m pytest $(PYTEST_ARGS); \
	else \
	  echo "running every test except the browser tests (marker browser)" >&2; \
	  $(PY) -m pytest -m "not browser" $(PYTEST_ARGS); \
	  echo "error: the browser tests did not run: chromium and chromedriver are missing; install them with" \
	       "'$(BROWSER_INSTALL)', then run make test again" >&2; \
	  exit 1; \
	fi

test-unit: setup ## Run only the tests that need no service
	$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

## ---------------------------------------------------------------- benchmarks
.PHONY: bench bench-generate bench-ingest bench-land bench-batch kcat
BENCH_INGEST_ARGS ?=
BENCH_LAND_ARGS ?=
BENCH_BATCH_ARGS ?=
# Without kcat (and no root to install it) the other benchmarks run, then the run fails saying how to
# install it.
bench: init ## Run every benchmark, one at a time, into one results page (docs/benchmarks.md)
	@if ( $(call apt_packages,kcat,kcat,$(KCAT_USERS)) ); then \
	  $(PY) -m tools.benchreport bench-generate bench-ingest bench-land bench-batch bench-stream bench-web; \
	else \
	  echo "running every benchmark except bench-ingest, which compares with kcat" >&2; \
	  $(PY) -m tools.benchreport bench-generate bench-land bench-batch bench-stream bench-web; \
	  echo "error: bench-ingest did not run: kcat is missing; install it with '$(KCAT_INSTALL)'," \
	       "then run make bench-ingest" >&2; \
	  exit 1; \
	fi

bench-generate: setup ## Generator readings/s, MB/s and peak RSS at 10M and 100M readings to Parquet
	$(PY) -m tools.bench_generate

# System packages from Debian: installed by root (CI), otherwise the one command that installs them.
# $(call apt_packages,commands that must exist,Debian packages,what needs them)
apt_packages = missing=""; for c in $(1); do command -v $$c >/dev/null || missing="$$missing $$c"; done; \
  if [ -z "$$missing" ]; then :; \
  elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
    apt-get update -qq && apt-get install -y -qq $(2); \
  else \
    echo "error:$$missing not installed ($(3)); install with: sudo apt-get install -y $(2)" >&2; exit 1; \
  fi
KCAT_USERS       := bench-ingest compares with it
KCAT_INSTALL     := sudo apt-get install -y kcat
BROWSER_COMMANDS := chromium chromedriver
BROWSER_PACKAGES := chromium chromium-driver
BROWSER_USERS    := the browser tests and make screenshots drive them
BROWSER_INSTALL  := sudo apt-get install -y $(BROWSER_PACKAGES)

kcat: ## Install kcat (Debian package), the librdkafka reference producer of bench-ingest (as root; else prints the command)
	@$(call apt_packages,kcat,kcat,$(KCAT_USERS))

bench-ingest: kcat init ## Replay producer readings/s into Kafka (acks=all) side by side with kcat, medians of 5
	$(PY) -m tools.bench_ingest $(BENCH_INGEST_ARGS)

bench-batch: setup ## Nightly job vs DuckDB, same six outputs, at 10M, 100M and 600M readings (BENCH_BATCH_ARGS="--sizes 10M,100M --work DIR")
	$(PY) -m tools.bench_batch $(BENCH_BATCH_ARGS)

bench-land: init ## Landing throughput: readings/s from Kafka into the raw zone (median of 3)
	$(PY) -m tools.bench_land $(BENCH_LAND_ARGS)

.PHONY: web notify screenshots bench-web browser-deps
web: init ## Serve the dashboard and APIs with uvicorn (an event loop in front of the Flask app) on 127.0.0.1:8000 (SMW_WEB_HOST/PORT/THREADS/PROCESSES to change)
	$(PY) -m webapp

NOTIFY_ARGS ?=
notify: init ## Deliver alert changes to users by webhook and e-mail (SMW_SMTP_*; NOTIFY_ARGS="--expire-s 3600"; Ctrl-C stops it)
	$(PY) -m webapp.notify $(NOTIFY_ARGS)

browser-deps: ## Install Debian's chromium and chromium-driver for the browser tests (skipped when present; as root, else prints the command)
	@$(call apt_packages,$(BROWSER_COMMANDS),$(BROWSER_PACKAGES),$(BROWSER_USERS))

screenshots: browser-deps ## Write PNGs of the main pages to docs/screenshots (sample data in smw_screens)
	$(PY) -m tools.screenshots

bench-web: init ## House daily-kWh API p50/p95/p99 under 50 clients, cache off/on, 1 and 2 server processes; one alert to 1,000 SSE subscribers, and the API while they stay connected
	$(PY) -m tools.bench_web


## ---------------------------------------------------------------- demo
.PHONY: demo demo-stop demo-status
DEMO_ARGS ?=
demo: setup ## The whole pipeline: services, history, nightly batch, live alerts and dashboard on 127.0.0.1:8000 (DEMO_ARGS="--houses 50 --days 14 --speed 60")
	$(PY) -m tools.demo start $(DEMO_ARGS)

demo-status: ## Which demo processes are running
	$(PY) -m tools.demo status

demo-stop: ## Stop the demo's jobs and web app, then the local services
	@test -x $(PY) && $(PY) -m tools.demo stop || true
	$(MAKE) down

## ---------------------------------------------------------------- housekeeping
.PHONY: clean clean-data
clean-data: down ## Stop services and delete their data and logs (var/)
	rm -rf var

clean: clean-data ## Also delete .venv, fetched jars and node_modules
	rm -rf $(VENV) .deps infra/reqlite/node_modules
