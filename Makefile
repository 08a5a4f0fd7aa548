# Modelyard: `make run` serves the quickstart, `make test` runs every check CI runs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.run-installed
DEV_STAMP := $(VENV)/.dev-installed

.PHONY: run test lint typecheck proto bench docs install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(RUN_STAMP)

install: $(DEV_STAMP)

## Serve examples/quickstart.yaml (demo provider, no keys, no network): REST :8080, gRPC :50051.
run: $(RUN_STAMP)
	$(BIN)/modelyard serve --config examples/quickstart.yaml

## Regenerate modelyard.v1 (Python, .pyi stubs, Envoy descriptor set) from proto/.
proto: $(DEV_STAMP)
	$(BIN)/python tools/genproto.py

## Regenerate the capability table in README.md from the provider adapters.
docs: $(DEV_STAMP)
	$(BIN)/python tools/render_docs.py

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(DEV_STAMP)
	$(BIN)/mypy server facade envoy

## Everything CI runs: lint, types, then the tests (real Envoy, real gRPC, real SDKs) on 2 processes.
test: lint typecheck
	$(BIN)/pytest -n 2 --dist loadfile -p no:cacheprovider

## Gateway vs direct-to-mock throughput, latency, CPU and memory (needs wrk; installs it with apt).
bench: $(DEV_STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .modelyard .pytest_cache .mypy_cache .ruff_cache
