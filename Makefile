# Two-command quick start: `make demo` (set up + main job on embedded defaults), `make test` (set up + tests).
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export PREFECT_HOME ?= $(CURDIR)/runs/prefect-home

.PHONY: setup demo test test-fast lint bench clean

$(STAMP): requirements.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 (e.g. apt-get install python3.11 python3.11-venv) or run make PYTHON=/path/to/python3.11"; exit 2; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

# A fresh clone has no runs/: Prefect warns when it cannot create its home there.
$(PREFECT_HOME):
	mkdir -p "$@"

demo: $(STAMP) | $(PREFECT_HOME)
	$(BIN)/takeover demo

test: $(STAMP) | $(PREFECT_HOME)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP) | $(PREFECT_HOME)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python benchmarks/sim_speed.py

clean:
	rm -rf $(VENV) runs .pytest_cache
