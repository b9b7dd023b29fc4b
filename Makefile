# duration: `make help` lists the targets. Stages are file targets: finished work is skipped.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PY       ?= $(shell command -v python3.11 || command -v python3)
VENV     := .venv
BIN      := $(VENV)/bin
STAMP    := $(VENV)/.installed-$(shell cat pyproject.toml requirements.lock | cksum | cut -d' ' -f1)
# The extras the lock holds, and the platform it is resolved for (the machines here).
LOCKED   := dev spark docs

COLOR    ?= green
TRAIN    ?= 2021-01
VAL      ?= 2021-02
TEST     ?= 2021-03
FEATURES ?= default
TRIALS   ?= 30
BASELINES ?= all
SEED     ?= 42
MONTH    ?= 2021-04
FROM     ?= 2021-02
TO       ?= 2023-04
# the cycle's own are settings (DURATION_CYCLE_TRIALS, _WINDOW, _LIVE); given here, they win
CYCLE_FLAGS = $(if $(CYCLE_TRIALS),--trials $(CYCLE_TRIALS)) $(if $(CYCLE_WINDOW),--window $(CYCLE_WINDOW)) $(if $(CYCLE_LIVE),--live $(CYCLE_LIVE))
RIDES    ?= 1000
RATE     ?= 100
CONCURRENCY ?= 4
LOAD_CLIENTS ?= 4 8 16 32
REF      ?= b5f36cc
# The defaults above are the CLI's own (tests/unit/cli/test_defaults.py holds them equal);
# ports, folders and the rest come from the environment (docs/configuration.md).
# Debian packages the project runs, as command:package (installed only where missing).
SYSTEM   := nginx:nginx-light initdb:postgresql wrk:wrk chromium:chromium \
            prometheus:prometheus prometheus-alertmanager:prometheus-alertmanager

# The data folder, as duration.settings derives it: DURATION_DATA_DIR, else $DURATION_HOME/data.
DATA      := $(or $(DURATION_DATA_DIR),$(if $(DURATION_HOME),$(DURATION_HOME)/data,data))
MONTHS    := $(TRAIN) $(VAL) $(TEST)
RAW       := $(foreach m,$(MONTHS),$(DATA)/raw/$(COLOR)_tripdata_$(m).parquet)
PROCESSED := $(foreach m,$(MONTHS),$(DATA)/processed/$(COLOR)_tripdata_$(m).parquet)
FEATDIR   := $(DATA)/features/$(COLOR)-$(FEATURES)-train-$(TRAIN)
FEATS     := $(FEATDIR)/X_$(TEST).npz

.PHONY: help install lock system download prepare features pipeline test test-fast lint format bench bench-scale \
        bench-spark bench-serve bench-compare bench-faults notebook mlflow mlflow-start mlflow-stop spark-up spark-down \
        serve serve-status serve-stop deploy screenshot clean postgres postgres-stop \
        postgres-backup load monitor monitor-months cycle replay docs traffic monitor-served ab-report \
        automate automate-stop automate-demo observe observe-stop observe-demo report

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  Variables: COLOR=$(COLOR) TRAIN=$(TRAIN) VAL=$(VAL) TEST=$(TEST) FEATURES=$(FEATURES) TRIALS=$(TRIALS) BASELINES=$(BASELINES) SEED=$(SEED) MONTH=$(MONTH) FROM=$(FROM) TO=$(TO) CYCLE_TRIALS CYCLE_WINDOW CYCLE_LIVE (default: the settings) RIDES=$(RIDES) RATE=$(RATE) CONCURRENCY=$(CONCURRENCY)"

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m pip check
	@if [ -d .git ]; then $(BIN)/pre-commit install --install-hooks >/dev/null; fi
	@rm -f $(VENV)/.installed-* && touch $@

lock: ## Lock every package (extras: dev spark docs) with its hashes, for Python 3.11, into requirements.lock
	$(BIN)/uv pip compile pyproject.toml $(foreach e,$(LOCKED),--extra $(e)) \
	  --python-version 3.11 --python-platform x86_64-manylinux_2_28 --generate-hashes \
	  --custom-compile-command "make lock" --quiet --output-file requirements.lock

install: $(STAMP) system ## Create .venv from requirements.lock, the package itself, the git hook, and the Debian packages

system: ## Install the Debian packages it runs where missing (nginx-light, postgresql, wrk)
	@scripts/system-packages.sh $(SYSTEM)

$(DATA)/raw/$(COLOR)_tripdata_%.parquet: | $(STAMP)
	$(BIN)/duration download --color $(COLOR) --month $*

$(DATA)/processed/$(COLOR)_tripdata_%.parquet: $(DATA)/raw/$(COLOR)_tripdata_%.parquet
	$(BIN)/duration prepare --color $(COLOR) --month $*

$(FEATS): $(PROCESSED)
	$(BIN)/duration vectorize --color $(COLOR) --features $(FEATURES) --train $(TRAIN) --val $(VAL) --test $(TEST)

download: $(RAW) ## Download the train/val/test months into data/raw
prepare: $(PROCESSED) ## Prepare them into data/processed
features: $(FEATS) ## Fit the DictVectorizer and vectorize the months

pipeline: $(FEATS) system ## Run everything: baselines, search, register, promote (starts the server)
	$(BIN)/duration pipeline --color $(COLOR) --features $(FEATURES) --train $(TRAIN) \
	  --val $(VAL) --test $(TEST) --trials $(TRIALS) --seed $(SEED) --baselines $(BASELINES) \
	  --summary reports/pipeline.json

test: $(STAMP) system ## Run the test suite in random order, 2 workers (real servers on free ports)
	$(BIN)/python -m pytest --durations=15

test-fast: $(STAMP) ## The fast loop: no server, no mirror (under a minute)
	$(BIN)/python -m pytest -m "not server and not mirror"

lint: $(STAMP) ## ruff (lint, format, complexity), the layer contract, mypy on src/, the docs build
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir $(VENV)/site

docs: $(STAMP) ## Serve the docs site on 127.0.0.1:8000 (mkdocs-material; rebuilds on change)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr 127.0.0.1:8000

format: $(STAMP) ## Apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP) ## Benchmark prepare+vectorize against the course's approach (reports/)
	$(BIN)/python -m benchmarks.benchmark

bench-scale: $(STAMP) ## Benchmark the whole pipeline at yellow scale, 30 trials, against a full-data reference (reports/)
	$(BIN)/python -m benchmarks.bench_scale

bench-spark: $(STAMP) ## Benchmark the search: local against Spark, green and yellow scale (reports/)
	$(BIN)/python -m benchmarks.bench_spark

notebook: $(STAMP) ## Open Jupyter Lab with the project's environment as the kernel
	$(BIN)/python -m pip install --quiet -e '.[dev,notebook]'
	$(BIN)/python -m ipykernel install --sys-prefix --name duration --display-name "duration (.venv)"
	$(BIN)/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) notebooks/

spark-up: $(STAMP) ## Start a local Spark master and worker on 127.0.0.1 (needs Java 17)
	$(BIN)/duration spark up

spark-down: $(STAMP) ## Stop the local Spark master and worker
	$(BIN)/duration spark down

serve: $(STAMP) system ## Serve the Production version at 127.0.0.1:$SERVE_PORT/invocations (nginx in front)
	$(BIN)/duration serve start

serve-status: $(STAMP) ## JSON: the serving version, its pid, and whether it answers
	$(BIN)/duration serve status

serve-stop: $(STAMP) ## Stop serving
	$(BIN)/duration serve stop --wait 600

deploy: $(STAMP) system ## CD step: serve the Production version after a smoke test, with no dropped request
	$(BIN)/duration deploy --wait 600

traffic: $(STAMP) ## Replay RIDES real rides of MONTH through the served model (RATE a second, CONCURRENCY at once)
	$(BIN)/duration traffic --color $(COLOR) --month $(MONTH) --rides $(RIDES) --rate $(RATE) --concurrency $(CONCURRENCY)

monitor-served: $(STAMP) ## What was served of MONTH against its real durations, by version (reports/served-MONTH.json)
	$(BIN)/duration monitor --served --color $(COLOR) --month $(MONTH) --summary reports/served-$(MONTH).json

ab-report: $(STAMP) ## Canary or shadow against Production on MONTH's real durations: promote, abort or continue
	$(BIN)/duration ab report --color $(COLOR) --month $(MONTH) --summary reports/ab-$(MONTH).json

bench-serve: $(STAMP) system ## Benchmark serving with wrk: requests/s, p99, the floor, logging's cost (reports/)
	$(BIN)/python -m benchmarks.bench_serve

bench-faults: $(STAMP) system ## kill -9 under traffic (5 tries), hostile bodies, password guessing (reports/faults.md)
	$(BIN)/python -m benchmarks.faults

bench-compare: $(STAMP) system ## Serving at REF (default b5f36cc) against this checkout, paired rounds (reports/compare.md)
	$(BIN)/python -m benchmarks.bench_compare --ref $(REF)

automate: $(STAMP) system ## Start the orchestrator (Dagster) that decides each TLC month as it is published; prints the UI's link
	$(BIN)/duration automate start

automate-stop: $(STAMP) ## Stop the orchestrator (and its runs in flight)
	$(BIN)/duration automate stop

automate-demo: $(STAMP) system ## A year by itself: 2023-04..12 published one by one, decided with no command typed (reports/automate.md)
	$(BIN)/python -m benchmarks.automate_demo $(if $(CYCLE_LIVE),--live $(CYCLE_LIVE))

report: $(STAMP) ## The model's life FROM..TO on one offline page (reports/model-life-FROM-TO.html, and in MLflow)
	$(BIN)/duration report --from $(FROM) --to $(TO)

observe: $(STAMP) system ## Start Prometheus and Alertmanager on 127.0.0.1: serving metrics, alert rules, alerts to the channel
	$(BIN)/duration observe start

observe-stop: $(STAMP) ## Stop Prometheus, Alertmanager and the alert relay
	$(BIN)/duration observe stop

observe-demo: $(STAMP) system ## On a home with two versions (automate-demo --keep DIR): a replay counted by Prometheus, a killed canary alerted (reports/observe.md)
	$(BIN)/python -m benchmarks.observe_demo

monitor: $(STAMP) system ## Monitor Production on MONTH: quality, drift, verdict (reports/monitor-MONTH.json)
	$(BIN)/duration monitor --color $(COLOR) --month $(MONTH) --summary reports/monitor-$(MONTH).json

cycle: $(STAMP) system ## Monitor MONTH; retrain, gate on MONTH and promote if it drifted (reports/cycle-MONTH.json)
	$(BIN)/duration cycle --color $(COLOR) --month $(MONTH) $(CYCLE_FLAGS) --summary reports/cycle-$(MONTH).json

replay: $(STAMP) system ## The cycle for every month FROM..TO the source has, in order (reports/replay.json)
	$(BIN)/duration cycle --color $(COLOR) --from $(FROM) --to $(TO) $(CYCLE_FLAGS) --summary reports/replay.json

monitor-months: $(STAMP) system ## Monitor Production on every month FROM..TO the source has (reports/monitoring.md)
	$(BIN)/python -m scripts.monitor_months --color $(COLOR) --from $(FROM) --to $(TO)

postgres: $(STAMP) system ## Start a local PostgreSQL on 127.0.0.1 (data in .postgres/); prints the store URI
	$(BIN)/duration db start

postgres-stop: $(STAMP) ## Stop the local PostgreSQL
	$(BIN)/duration db stop

postgres-backup: $(STAMP) ## pg_dump the local MLflow database into .postgres/backups/
	$(BIN)/duration db backup

load: $(STAMP) system ## Load-test SQLite, PostgreSQL and team (auth+TLS) servers with many clients (reports/)
	$(BIN)/python -m benchmarks.load --clients $(LOAD_CLIENTS)

mlflow: $(STAMP) ## Run the MLflow server in the foreground (UI on 127.0.0.1:$MLFLOW_PORT)
	$(BIN)/duration server run

mlflow-start: $(STAMP) ## Start the MLflow server in the background if none answers
	$(BIN)/duration server start

mlflow-stop: $(STAMP) ## Stop the background MLflow server
	$(BIN)/duration server stop

screenshot: $(STAMP) ## Screenshot the registry and the search for the README (needs chromium)
	$(BIN)/python -m scripts.screenshot

clean: ## Remove processed data and features (keeps downloads, the venv and MLflow)
	rm -rf $(DATA)/processed $(DATA)/features
