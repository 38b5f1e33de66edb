# Two commands: `make run` and `make test`. Everything else is set up by them.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PORT   ?= 8000

.PHONY: run test lint typecheck unit integration bench clean prometheus chromium

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# make run PORT=8080: the API on another port
run: $(STAMP)
	$(BIN)/ecrm up --port $(PORT)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

# Prometheus and promtool (Debian's package), for the alert-rule tests and the real-Prometheus check: installed only
# when promtool is missing.
prometheus:
	@command -v promtool >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

# Chromium (Debian's package) for the browser tests, driven by Playwright through its executable path (Playwright's own
# browser download is not used): installed only when missing.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

test: $(STAMP) prometheus chromium lint typecheck
	$(BIN)/pytest -q

unit: $(STAMP) prometheus
	$(BIN)/pytest -q tests/unit

integration: $(STAMP) prometheus chromium
	$(BIN)/pytest -q tests/integration

bench: $(STAMP)
	$(BIN)/ecrm bench ingest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
