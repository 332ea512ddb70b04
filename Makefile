# A thin layer over the real tools. Every target installs what it needs first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
PACKAGES := server/src plugins/sdk/src plugins/opencv/src

.PHONY: install run gen gen-check lint typecheck test bench clean

$(STAMP): requirements-dev.txt server/pyproject.toml plugins/sdk/pyproject.toml plugins/opencv/pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt \
		-e clients/python -e plugins/sdk -e plugins/opencv -e server
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)  ## start the service on embedded defaults (127.0.0.1:50051)
	$(BIN)/retouch-server

gen: $(STAMP)  ## regenerate the Python stubs from protos/
	PATH=$(CURDIR)/$(BIN):$$PATH scripts/gen.sh

gen-check: $(STAMP)  ## fail when the committed stubs are stale
	PATH=$(CURDIR)/$(BIN):$$PATH scripts/gen-check.sh

lint: $(STAMP)
	$(BIN)/buf lint protos
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy $(PACKAGES) tests bench

test: $(STAMP)  ## everything CI checks: generated code, lint, types, tests
	$(MAKE) --no-print-directory gen-check lint typecheck
	$(PY) -m pytest

bench: $(STAMP)  ## speed and quality benchmarks; figures go to bench/RESULTS.md
	$(PY) -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
