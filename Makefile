# FreshRank: `make demo` runs the nightly pipeline on a simulated shop; `make test` tests it.
# Both set everything up first (virtualenv, Python packages, Java 17) when it is missing.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
DAYS ?= 3
PYSPARK_PIN := $(shell grep -E '^pyspark==' requirements.txt)

export FRESHRANK_HOME := $(CURDIR)
export AIRFLOW_HOME ?= $(CURDIR)/var/airflow
export AIRFLOW_CONFIG ?= $(CURDIR)/airflow.cfg
export SPARK_LOCAL_IP ?= 127.0.0.1
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL ?= 2
export GIT_PYTHON_REFRESH := quiet
export PATH := $(BIN):$(PATH)

.PHONY: setup java demo test test-fast lint format soak bench bench-compression bench-training bench-preprocess \
	bench-freshness bench-ids bench-real bench-ablation bench-serving bench-intraday \
	bench-cluster-training chaos up down clean
setup: java $(VENV)/.installed

java:
	@scripts/ensure_java.sh

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	@echo "== installing Python packages into $(VENV) (a few minutes the first time)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt -r requirements-dev.txt
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	# A venv that still has the dropped Spark provider's pyspark-client has a mixed pyspark.
	$(BIN)/python -c "import pyspark, sys; v = pyspark.__version__; sys.exit(0 if '$(PYSPARK_PIN)'.endswith(v) else 'pyspark ' + v + ' is not $(PYSPARK_PIN): rm -rf $(VENV), then make setup')"
	touch $@

demo: setup
	$(BIN)/python -m ops.demo --reset --days $(DAYS)

test: setup lint
	$(BIN)/python -m pytest

# The inner loop: no JVM, no servers, under 2 minutes (a test that starts Spark fails here).
test-fast: setup lint
	FRESHRANK_TEST_NO_JVM=1 $(BIN)/python -m pytest -m "not spark and not slow and not e2e"

# Reliability: spoiled deliveries through preprocess + validate, then faults (kill -9, full
# disk, registry down), each against its documented outcome (var/chaos/{chaos,faults}.md).
chaos: setup
	$(BIN)/python -m ops.chaos --out var/chaos
	$(BIN)/python -m ops.faults --out var/chaos

# A long soak: NIGHTS simulated nights in a row through the real scheduler (about a minute
# each), with disk and memory per night in var/bench/soak.json.
NIGHTS ?= 30
soak: setup
	$(BIN)/python -m ops.soak --nights $(NIGHTS) --out var/bench/soak.json

up: setup
	scripts/up.sh

down:
	scripts/down.sh

# Benchmarks write JSON (and plots) under var/bench/; `make bench` runs them all (hours:
# the freshness run alone takes about 2 h on 2 cores), or run one at a time.
bench: bench-compression bench-training bench-preprocess bench-freshness bench-ids bench-real \
	bench-ablation bench-serving bench-intraday bench-cluster-training

bench-compression: setup
	$(BIN)/python -m benchmarks.compression --out var/bench

bench-training: setup
	$(BIN)/python -m benchmarks.training --out var/bench

bench-preprocess: setup
	$(BIN)/python -m benchmarks.preprocess --out var/bench

# The real shop: ../shared/data's retail log (or INPUT=...), 30 bootstrap days + 14 nights.
INPUT ?= ../shared/data/online-retail-2010-12_2011-05.csv.gz
bench-real: setup
	$(BIN)/python -m benchmarks.real --out var/bench --input $(INPUT)

bench-freshness: setup
	$(BIN)/python -m benchmarks.freshness --out var/bench

# What each part of the model adds: reads the worlds bench-real and bench-freshness leave.
bench-ablation: setup
	$(BIN)/python -m benchmarks.ablation --out var/bench

# The champion served from the registry: raw rows, online-store lookups, in process and HTTP.
bench-serving: setup
	$(BIN)/python -m benchmarks.serving --out var/bench

bench-intraday: setup
	$(BIN)/python -m benchmarks.intraday --out var/bench

# Training as a Spark barrier stage on a local standalone cluster vs one local worker.
bench-cluster-training: setup
	$(BIN)/python -m benchmarks.cluster_training --out var/bench

bench-ids: setup
	$(BIN)/python -m benchmarks.ids --out var/bench

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf var
