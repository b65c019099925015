# The README's two commands: `make run` and `make test`. Both set up first. `make run` ends by committing
# dvc.lock and metrics/ as the baseline that `dvc metrics diff` / `dvc exp show` compare with (scripts/dvc_baseline.py).
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3.11
# pip warns about every package missing from this machine's local extra index: harmless, filtered.
QUIET := 2>&1 | { grep -v 'is ignored: it is neither a file nor a directory' || true; }
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true
export DVC_NO_ANALYTICS := 1
export TOKENIZERS_PARALLELISM := false
# Python caches compiled modules (__pycache__) on first import. Some machines set PYTHONDONTWRITEBYTECODE=1
# globally; with --no-compile below every process would then compile every imported module from source again
# (11.4 s of a 61 s `vlpeft train`, on each of the ~15 processes of `dvc repro` and every CLI test).
unexport PYTHONDONTWRITEBYTECODE
# ... and keeps those caches out of the source tree: a __pycache__ inside vlpeft/ would change the hash of the
# code directories that DVC stages depend on (multitask/dvc.yaml's ../vlpeft deps are outside the reach of any
# .dvcignore), so stages would rerun for nothing.
export PYTHONPYCACHEPREFIX := $(CURDIR)/$(VENV)/pycache
# dvc.yaml's commands (`vlpeft ...`) run in a shell: the venv's console scripts must be on its PATH.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup system run multitask test lint format bench clean image image-local

setup: system $(STAMP)

# System packages: Java for the caption metrics (PTB tokenizer, METEOR) and PostgreSQL for the
# multi-worker sweep tests. apt-get runs only when something is missing.
system:
	@missing=""; \
	command -v java >/dev/null 2>&1 || missing="$$missing default-jre-headless"; \
	{ command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; } || missing="$$missing postgresql"; \
	command -v git >/dev/null 2>&1 || missing="$$missing git"; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $$missing; \
	fi

# torch first, with an exact pin (the CPU wheel on local disk); then the full lock; then the package.
# --no-compile: Python compiles only the modules a command imports, on first use, instead of every file of
# every wheel at install time (torch alone: 196 s with byte-compilation, 111 s without, same busy machine).
PIP := $(BIN)/pip install -q --disable-pip-version-check --no-compile
$(STAMP): requirements/lock.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0 $(QUIET)
	$(PIP) -r requirements/lock.txt $(QUIET)
	$(PIP) --no-deps --no-build-isolation -e . $(QUIET)
	touch $(STAMP)

run: setup
	@git config user.email >/dev/null || git config user.email "vlpeft@localhost"
	@git config user.name >/dev/null || git config user.name "vlpeft"
	$(BIN)/dvc repro
	$(BIN)/python scripts/dvc_baseline.py

# VL-Adapter's multi-task setting (VQA + GQA + NLVR2 + captions on one BART), its own DVC pipeline.
multitask: setup
	cd multitask && dvc repro

test: setup
	$(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
	$(BIN)/python scripts/format_params.py

bench: setup
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b; done

# The container image (Dockerfile) for users who can reach a container registry: docker or podman, whichever
# is installed (ENGINE=podman to choose). CoreNLP for SPICE only with a checksum: CORENLP_SHA256=<sum of
# stanford-corenlp-full-2015-12-09.zip> (none could be obtained where this was written; see README).
IMAGE ?= vlpeft:$(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
ENGINE ?= $(shell command -v docker >/dev/null 2>&1 && echo docker || echo podman)
CORENLP_SHA256 ?=
WITH_SPICE ?= $(if $(CORENLP_SHA256),1,0)
DOCKER_BUILD_ARGS ?=
image:
	@[ "$(WITH_SPICE)" = 1 ] || echo "note: building without the CoreNLP jars (SPICE -> null); set CORENLP_SHA256 to include them"
	$(ENGINE) build -t $(IMAGE) --build-arg WITH_SPICE=$(WITH_SPICE) --build-arg CORENLP_SHA256=$(CORENLP_SHA256) \
	  $(DOCKER_BUILD_ARGS) .

# The same Dockerfile built and run on a machine without registry access (root; Debian's docker.io, a
# debootstrap base, an offline wheelhouse), then stages run in it through kfp.local.DockerRunner. Not in
# `make test` (44 min cold on 2 busy cores, 6-13 GB scratch): see README, "Container image".
image-local: setup
	PYTHON=$(abspath $(BIN))/python scripts/image/build-local.sh

clean:
	rm -rf $(VENV) .pytest_cache
