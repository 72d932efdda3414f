# Two commands for a new machine: `make demo` runs Vigil, `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench services test-services timescaledb clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# Install the broker and database binaries when they are missing and apt-get can (the tests
# also need Chromium for the console's browser test; the demo does not).
services:
	@bash scripts/ensure-services.sh

test-services:
	@bash scripts/ensure-services.sh --browser

# The tests also run the storage path on TimescaleDB, built once per machine from
# ../shared/vendor into ~/.cache/vigil (outside the clone).
timescaledb:
	@bash scripts/ensure-timescaledb.sh

demo: $(STAMP) services
	$(BIN)/vigil demo

test: $(STAMP) test-services timescaledb
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -p no:cacheprovider
	@bash scripts/timescaledb-tests.sh $(BIN)/python

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP) services
	$(BIN)/vigil bench

clean:
	rm -rf $(VENV) .vigil
