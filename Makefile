# Two commands: `make run` and `make test`. Everything else is set up by them.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PORT   ?= 8000
# pytest-xdist workers: on 2 cores 3 pays, as much of a test is waiting (group joins, subprocesses, servers)
PYTEST_WORKERS ?= 3
PYTEST_ARGS    ?= -n $(PYTEST_WORKERS) --dist load --durations=15

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

# Lint first (seconds), then the type check beside the tests: its report is printed after theirs, and either failing
# fails `make test` (the last line names which).
test: $(STAMP) prometheus chromium lint
	@$(BIN)/mypy > $(VENV)/mypy.log 2>&1 & mypy=$$!; trap 'kill $$mypy 2>/dev/null' EXIT; \
	$(BIN)/pytest -q $(PYTEST_ARGS); tests=$$?; \
	wait $$mypy; types=$$?; trap - EXIT; \
	echo "typecheck (mypy, run beside the tests):"; cat $(VENV)/mypy.log; \
	if [ $$tests -ne 0 ] || [ $$types -ne 0 ]; then \
	  echo "make test FAILED: tests exit $$tests, typecheck exit $$types"; exit 1; fi

unit: $(STAMP) prometheus
	$(BIN)/pytest -q $(PYTEST_ARGS) tests/unit

integration: $(STAMP) prometheus chromium
	$(BIN)/pytest -q $(PYTEST_ARGS) tests/integration

bench: $(STAMP)
	$(BIN)/ecrm bench ingest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
