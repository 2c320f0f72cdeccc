# In-memory database service: developer commands. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
IMAGE ?= memdb:latest
STAMP := $(VENV)/.installed

.PHONY: help install run serve test lint format dev bench cli clean distclean docker-build docker-run docker-lint smoke fuzz soak abuse

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): backend/requirements.txt backend/requirements-dev.txt backend/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r backend/requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e backend
	touch $(STAMP)

install: $(STAMP) ## create .venv/ and install runtime + dev dependencies

run: $(STAMP) ## serve on HOST:PORT (default 127.0.0.1:8000); settings from .env when present
	set -a; [ ! -f .env ] || . ./.env; set +a; \
		cd backend && ../$(BIN)/python -m app --host $(HOST) --port $(PORT)

FILE ?= db.json

serve: $(STAMP) ## json-server's routes on a db.json, saved back safely: make serve FILE=db.json ARGS="--compat 0.17 --watch" (port 3000)
	cd backend && ../$(BIN)/python -m app.cli serve "$(abspath $(FILE))" $(ARGS)

test: $(STAMP) ## run the whole test suite with the coverage gate (95% of backend/app)
	cd backend && ../$(BIN)/python -m pytest --cov=app --cov-report=term-missing:skip-covered --cov-fail-under=95

lint: $(STAMP) ## flake8, black --check and mypy (strict) on backend/app
	$(BIN)/flake8 backend
	$(BIN)/black --check --quiet backend
	$(BIN)/mypy --config-file backend/pyproject.toml backend/app

format: $(STAMP) ## format the code with black
	$(BIN)/black --quiet backend

dev: install format lint test run ## install, format, lint, test, then run

bench: $(STAMP) ## the benchmark suite (installs wrk, json-server, matplotlib where absent; BENCH_* settings)
	cd backend && ../$(BIN)/python -m benchmarks --install

FUZZ_EXAMPLES ?= 500
FUZZ_STATEFUL_EXAMPLES ?= 200
FUZZ_STATEFUL_STEPS ?= 20

fuzz: $(STAMP) ## deeper schemathesis run (FUZZ_EXAMPLES per operation, default 500; longer stateful chains)
	cd backend && FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) FUZZ_STATEFUL_EXAMPLES=$(FUZZ_STATEFUL_EXAMPLES) \
		FUZZ_STATEFUL_STEPS=$(FUZZ_STATEFUL_STEPS) ../$(BIN)/python -m pytest tests/integration/test_fuzz.py -q

soak: $(STAMP) ## mixed load on a real server for SOAK_SECONDS (default 180), RSS watched; writes backend/scripts/soak-result.json
	cd backend && ../$(BIN)/python scripts/soak.py

abuse: $(STAMP) ## the abuse suite against a real server, /health timed meanwhile; writes backend/scripts/abuse-result.json
	cd backend && MEMDB_ABUSE_REPORT=scripts/abuse-result.json ../$(BIN)/python -m pytest tests/e2e/test_abuse.py -q -p no:cacheprovider

cli: $(STAMP) ## the command line: make cli ARGS="export dump.json" (import, export, load)
	cd backend && ../$(BIN)/python -m app.cli $(ARGS)

clean: ## remove caches, coverage files and build output (keeps .venv)
	find . -path ./$(VENV) -prune -o -type d \( -name __pycache__ -o -name .pytest_cache -o -name .mypy_cache -o -name .hypothesis \) -print0 | xargs -0 rm -rf
	rm -rf backend/.coverage backend/.coverage.* backend/htmlcov backend/coverage.xml build dist

distclean: clean ## clean, and remove .venv too
	rm -rf $(VENV)

docker-build: ## build the container image (IMAGE, default memdb:latest)
	docker build -t $(IMAGE) backend

docker-run: ## run the image on 127.0.0.1:PORT (settings from .env when present)
	docker run --rm -it -p 127.0.0.1:$(PORT):8000 $(if $(wildcard .env),--env-file .env) $(IMAGE)

docker-lint: $(STAMP) ## hadolint on the Dockerfile, docker compose config on the compose files
	$(BIN)/hadolint backend/Dockerfile
	$(BIN)/docker-compose -f docker-compose.yml config --quiet
	$(BIN)/docker-compose -f deploy/compose.scale.yml config --quiet

smoke: ## build, start with compose, run the README examples, tear down (needs Docker)
	deploy/smoke.sh
