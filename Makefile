# A thin layer over the real tools. Every target installs what it needs first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
TS := clients/typescript
TS_STAMP := $(TS)/node_modules/.installed
NEED_NODE := command -v node >/dev/null && command -v npm >/dev/null || { echo "the TypeScript client needs Node.js 20+ and npm on PATH" >&2; exit 1; }
PACKAGES := server/src plugins/sdk/src plugins/opencv/src plugins/patchmatch/src plugins/rest/src \
	plugins/replicate/src plugins/workers-ai/src plugins/stability/src plugins/openai/src \
	clients/python/src/retouch/client

.PHONY: install run run-replicas gen gen-check lint typecheck test ts-test bench clean

$(STAMP): requirements-dev.txt server/pyproject.toml clients/python/pyproject.toml \
		plugins/sdk/pyproject.toml plugins/opencv/pyproject.toml plugins/patchmatch/pyproject.toml \
		plugins/rest/pyproject.toml plugins/replicate/pyproject.toml plugins/workers-ai/pyproject.toml \
		plugins/stability/pyproject.toml plugins/openai/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt \
		-e clients/python -e plugins/sdk -e plugins/opencv -e plugins/patchmatch \
		-e plugins/rest -e plugins/replicate -e plugins/workers-ai -e plugins/stability \
		-e plugins/openai -e server
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)  ## start the service on embedded defaults (127.0.0.1:50051)
	$(BIN)/retouch-server

run-replicas: $(STAMP)  ## PostgreSQL, Redis, SeaweedFS and two replicas (127.0.0.1:50051, :50052) on loopback
	$(PY) scripts/run_replicas.py

gen: $(STAMP)  ## regenerate the Python stubs from protos/ (and the TypeScript ones once $(TS) has node_modules)
	PATH=$(CURDIR)/$(BIN):$$PATH scripts/gen.sh
	if [ -d $(TS)/node_modules ]; then sh $(TS)/scripts/gen.sh; fi

gen-check: $(STAMP)  ## fail when the committed stubs are stale
	PATH=$(CURDIR)/$(BIN):$$PATH scripts/gen-check.sh

lint: $(STAMP)
	$(BIN)/buf lint protos
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy $(PACKAGES) tests bench scripts

test: $(STAMP)  ## everything CI checks: generated code, lint, types, tests
	$(MAKE) --no-print-directory gen-check lint typecheck ts-test
	$(PY) -m pytest

$(TS_STAMP): $(TS)/package.json $(TS)/package-lock.json
	@$(NEED_NODE)
	cd $(TS) && npm ci --no-audit --no-fund
	touch $@

ts-test: $(STAMP) $(TS_STAMP)  ## the TypeScript client: generated-code check, build, tests against a real server
	@$(NEED_NODE)
	cd $(TS) && npm run --silent gen:check && npm run --silent build && npm test

bench: $(STAMP)  ## speed and quality benchmarks; figures go to bench/RESULTS.md
	$(PY) -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache $(TS)/node_modules $(TS)/dist
