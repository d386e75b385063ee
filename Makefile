# siyu — two commands do all set-up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo
CUSTOMERS ?= 20000
PORT ?= 3000
export MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/mlruns.db

.PHONY: install demo test test-fast bench lint serve mlflow-ui clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m ipykernel install --user --name siyu --display-name "siyu" >/dev/null
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m siyu.demo --out $(DEMO_DIR) --customers $(CUSTOMERS)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q -m "not slow and not spark and not e2e"

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run_all

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Clients send SIYU_API_TOKEN as a bearer token; without one the local demo runs with --no-auth (warned).
serve: $(STAMP)
	$(BIN)/siyu serve --data $(DEMO_DIR)/data --port $(PORT) $(if $(SIYU_API_TOKEN),,--no-auth)

mlflow-ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri $(MLFLOW_TRACKING_URI) --port 5000

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache $(DEMO_DIR) mlruns.db mlartifacts
