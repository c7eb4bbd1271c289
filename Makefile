# The two commands a newcomer runs: `make setup`, then `make test`.
.PHONY: setup lock test lint format bench quickstart cluster-smoke

VENV ?= .venv
export EVORL_CACHE ?= $(CURDIR)/.cache
export TORCH_EXTENSIONS_DIR ?= $(EVORL_CACHE)/torch_extensions
export ALFWORLD_DATA ?= $(EVORL_CACHE)/alfworld
export HF_HUB_OFFLINE ?= 1

setup:
	bash scripts/setup.sh

# Regenerate requirements/lock-*.txt after changing requirements/*.txt (docs/cluster.md "Install and locks").
lock:
	bash scripts/lock.sh

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format:
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: lint
	$(VENV)/bin/python -m pytest -x -q --durations=15 tests

bench:
	bash benchmarks/run_all.sh

quickstart:
	$(VENV)/bin/evorl train --config configs/quickstart.yaml

# README "On a GPU cluster" on this one machine: 3 raylets with token auth, `ray job submit` of one
# quickstart iteration, placement, checkpoint and resume checks (3-6 min on 2 cores; docs/cluster.md).
cluster-smoke:
	$(VENV)/bin/python scripts/cluster_smoke.py
