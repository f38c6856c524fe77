# customer-metrics — `make help` lists the targets.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PG_URL ?= postgresql://postgres@127.0.0.1:5432/postgres

.DEFAULT_GOAL := help
.PHONY: help install run migrate test test-sqlite test-postgres fuzz lint typecheck format bench clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv with the customer-metrics command in .venv/bin

run: install ## Migrate and serve on the embedded SQLite database
	$(BIN)/customer-metrics serve

migrate: install ## Create or upgrade the database schema
	$(BIN)/customer-metrics migrate

test: install lint typecheck ## Lint, type-check, then the whole suite on SQLite and PostgreSQL
	CM_TEST_POSTGRES_URL=$${CM_TEST_POSTGRES_URL:-$(PG_URL)} $(BIN)/pytest -n 2 --dist loadgroup

test-sqlite: install ## The suite on SQLite only
	CM_TEST_BACKENDS=sqlite $(BIN)/pytest -n 2 --dist loadgroup

fuzz: install ## Longer schemathesis run, new inputs each time (CM_FUZZ_EXAMPLES, default 500)
	CM_FUZZ_RANDOM=1 CM_FUZZ_EXAMPLES=$${CM_FUZZ_EXAMPLES:-500} \
	CM_TEST_POSTGRES_URL=$${CM_TEST_POSTGRES_URL:-$(PG_URL)} $(BIN)/pytest tests/api/test_fuzz.py -n 2

lint: install ## ruff (lint + format check) and import-linter contracts
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: install ## mypy --strict
	$(BIN)/mypy

format: install ## Apply ruff formatting and fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install ## Benchmarks on PostgreSQL against their floors (see bench/README.md)
	$(BIN)/python bench/run.py

clean: ## Remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
