# The one entry point: `make up` runs a local cluster, `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# Empty: `up` chooses from the cores (cluster/services/shape.py); set them to override.
INSTANCES ?=
WORKERS   ?=
PORT      ?= 8080
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: install system-deps up test test-fast lint format mypy bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

system-deps:
	./scripts/install-system-deps.sh

up: install system-deps
	$(BIN)/relay-cluster up $(if $(INSTANCES),--instances $(INSTANCES)) \
		$(if $(WORKERS),--workers $(WORKERS)) --port $(PORT)

test: install system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The inner loop: pure and unit tests only, no PostgreSQL, Redis, nginx or relay process.
test-fast: install
	$(BIN)/python -m pytest -m "not services" tests/unit tests/fuzz $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check cluster tests loadtest
	$(BIN)/ruff format --check cluster tests loadtest
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff check --fix cluster tests loadtest
	$(BIN)/ruff format cluster tests loadtest

mypy: install
	$(BIN)/mypy

bench: install system-deps
	$(BIN)/python -m loadtest.bench $(BENCH_ARGS)

clean:
	rm -rf .data .pytest_cache .mypy_cache .ruff_cache
