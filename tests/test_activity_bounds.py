"""A sub-agent's activity is bounded however much it does: a Claude Code-like agent (tests/fake_agent.py's
stream mode) printing ten thousand tool calls through the real runner and server leaves at most the cap of
entries in the store, counts the rest as dropped, and grows the store file by a bounded amount."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from mcp_orchestrator.models import SpawnSubagentInput, StatusInput

from .subagent_helpers import FAKE_AGENT, FAST_SUPERVISOR, ended, engine_on, until
from .support import eventually, query

pytestmark = [pytest.mark.anyio, pytest.mark.processes]

CAP = 200
CALLS = 10_000
# What the reader makes of the session: a turn and a tool call per call, then a turn, its text and the result.
ENTRIES = 2 * CALLS + 3
STORE_GROWTH_MAX = 1024 * 1024  # bytes (it grows by about half that); the entries kept whole take about 6 MB


@pytest.fixture
def db(db_path: Path) -> str:
    """SQLite only: the store's growth is measured on its file."""
    return str(db_path)


async def store_size(db: str) -> int:
    """The store file's bytes once its write-ahead log is checkpointed into it and truncated (the log holds
    a copy of every page each write touched, whatever the store keeps: its size says nothing of what is kept)."""

    def checkpointed() -> int | None:
        ((busy, _, _),) = query(db, "PRAGMA wal_checkpoint(TRUNCATE)")
        return None if busy else Path(db).stat().st_size  # busy: the server was writing; try again

    return int(await eventually(checkpointed))


def write_config(tmp_path: Path, cap: int) -> Path:
    command = json.dumps([sys.executable, FAKE_AGENT, "stream", json.dumps({"tools": CALLS, "cost": 0.5})])
    path = tmp_path / "config.toml"
    path.write_text(
        f"[limits]\nactivity_max = {cap}\n{FAST_SUPERVISOR}\n"
        f'[profiles.busy]\ncommand = {command}\noutput = "claude-json"\nmax_attempts = 1\ntimeout_s = 120\n'
    )
    return path


async def test_ten_thousand_tool_calls_leave_the_cap_of_entries_and_a_count_of_the_rest(
    tmp_path: Path, db: str, http_server: Callable[..., str]
) -> None:
    config = write_config(tmp_path, CAP)
    http_server(MCP_ORCHESTRATOR_CONFIG=str(config))
    async with engine_on(db, config) as engine:
        before = await store_size(db)
        spawned = await engine.subagents.spawn(SpawnSubagentInput(prompt="be busy", agent="busy", cwd=str(tmp_path)))
        run_id = spawned.run.run_id
        await until(engine, run_id, ended, timeout=120)
        done = await engine.runs.status(StatusInput(run_id=run_id, activity_limit=1000))
        grown = await store_size(db) - before

    assert done.run.status == "completed" and done.run.output == "turn 1 done", done.run.error
    assert done.process is not None and done.process.exit_code == 0
    assert len(done.activity) == CAP, len(done.activity)
    assert done.activity_cursor is None  # nothing older is kept either
    dropped = done.process.activity_dropped
    assert ENTRIES - CAP <= dropped < 2 * ENTRIES, dropped  # every entry not kept is counted (an update twice)
    assert done.activity[-1].kind == "result" and done.activity[-1].summary.startswith("success: turn 1 done")
    tools = [entry for entry in done.activity if entry.kind == "tool"]
    assert tools and all(entry.failed is False for entry in tools)  # the newest calls, with their outcome
    assert done.run.usage is not None and done.run.usage.cost_usd == pytest.approx(0.5)
    assert 0 < grown < STORE_GROWTH_MAX, grown
