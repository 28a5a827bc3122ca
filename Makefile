# Everything installs into .venv beside this file; nothing outside it is touched.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HTTP ?= 127.0.0.1:8765

.PHONY: setup serve test lint bench clean

$(BIN)/mcp-orchestrator: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "mcp-orchestrator needs Python 3.11 or newer: run make PYTHON=python3.12 ..."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

setup: $(BIN)/mcp-orchestrator  ## create .venv and install mcp-orchestrator with its dev tools

serve: setup  ## run the server over HTTP on $(HTTP) with the default SQLite store
	$(BIN)/mcp-orchestrator serve --http $(HTTP)

test: setup  ## run the whole test suite
	$(BIN)/python -m pytest

lint: setup  ## ruff check and ruff format --check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: setup  ## the benchmarks (checkpoints, events, sub-agents, schedules)
	$(BIN)/python benchmarks/checkpoint.py
	$(BIN)/python benchmarks/events.py
	$(BIN)/python benchmarks/subagents.py
	$(BIN)/python benchmarks/schedules.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
