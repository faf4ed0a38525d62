# vesselseg: `make demo` runs the whole pipeline locally; `make test` runs the test suite (both tiers, tests/README.md),
# `make test-fast` its unit tier.
# Both install what they need first (`make setup`, idempotent). `make images` builds the container images and
# `make demo RUNNER=docker` runs every task in its own container of them.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup system-deps demo test test-fast compile store-up store-down clean

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

RUNNER ?= subprocess
# QUICK=1: the same DAG with a model fine-tuned QUICK_STEPS steps instead of FinetuneConfig's default: a few minutes,
# and a weaker model; it says so before and after the run (benchmarks/results/demo_profile.md).
QUICK ?=
QUICK_STEPS ?= 100
QUICK_NOTE := QUICK=1: a weaker model, fine-tuned $(QUICK_STEPS) steps instead of the demo's default to finish in a \
	few minutes; it is not expected to beat Frangi. Plain make demo trains the model that does.
DEMO_ARGS := $(if $(filter 1,$(QUICK)),--set finetune_overrides.training.steps=$(QUICK_STEPS))

demo: setup
	@if [ "$(RUNNER)" = docker ]; then docker/engine.sh start >/dev/null; fi
	@$(if $(filter 1,$(QUICK)),echo "$(QUICK_NOTE)")
	$(BIN)/vesselseg run-local --recipe demo-cpu --runner $(RUNNER) $(DEMO_ARGS)
	@$(if $(filter 1,$(QUICK)),echo; echo "$(QUICK_NOTE)")

# Headless Chromium renders the HTML report in a test; Debian's package, installed when we are root.
system-deps:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium is missing: install Debian's chromium package for the report screenshot test"; exit 1; fi; }

# The container tests (tests/integration/test_containers.py) install and start a Docker engine where we are root on
# Debian, or report themselves skipped with the reason (-rs prints it).
test: setup system-deps
	VESSELSEG_REQUIRE_CHROMIUM=1 $(BIN)/python -m pytest -q -rs tests/unit tests/integration

test-fast: setup
	$(BIN)/python -m pytest -q -rs tests/unit

compile: setup
	$(BIN)/vesselseg compile --out build/pipeline.yaml

store-up: setup
	$(BIN)/vesselseg store up

store-down: setup
	$(BIN)/vesselseg store down

# --- images and cluster (see docker/README.md and docs/kubeflow.md; a KFP host for the cluster targets) ---
CLUSTER_CONFIG ?= manifests/cluster-config.yaml
RUN_ARGS ?=
CRON ?= 0 0 3 * * 1
.PHONY: images compile-cluster pipeline-upload run schedule

# BASE=official (the Python image by tag from a registry) or BASE=debian (made from Debian packages: no registry);
# IMAGES picks among cpu cuda trainjob. Where root on Debian, installs and starts a Docker engine first.
BASE ?= official
IMAGES ?= cpu cuda trainjob

images:
	docker/engine.sh install
	docker/engine.sh start >/dev/null
	BASE=$(BASE) IMAGES="$(IMAGES)" docker/build-images.sh

compile-cluster: setup
	set -a; [ ! -f build/images.env ] || . build/images.env; set +a; \
	$(BIN)/vesselseg compile-cluster --cluster $(CLUSTER_CONFIG) --out build/pipeline-cluster.yaml

pipeline-upload: compile-cluster
	$(BIN)/vesselseg upload --package build/pipeline-cluster.yaml

run: setup
	$(BIN)/vesselseg submit $(RUN_ARGS)

schedule: setup
	$(BIN)/vesselseg schedule --cron "$(CRON)"

clean:
	-$(BIN)/vesselseg store down
	rm -rf build runs .work
