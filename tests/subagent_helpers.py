"""What the sub-agent tests share: a config with fake profiles, an engine on the test's store, journals."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

from mcp_orchestrator.agents.launch import process_alive
from mcp_orchestrator.models import AgentState, JournalEntry, StatusInput, StatusResult
from mcp_orchestrator.profiles import load_agents_config
from mcp_orchestrator.runtime import Engine

from .support import open_store

FAKE_AGENT = str(Path(__file__).with_name("fake_agent.py"))

FAST_SUPERVISOR = """
[supervisor]
lease_ttl_s = 3
heartbeat_s = 0.2
heartbeat_timeout_s = 6
kill_grace_s = 1
retry_backoff_s = 0.3
"""


def write_config(tmp_path: Path, extra: str = "", max_concurrent: int = 10) -> Path:
    """A config whose 'fake' profile runs tests/fake_agent.py, with quick heartbeats and leases."""
    path = tmp_path / "config.toml"
    fake = json.dumps([sys.executable, FAKE_AGENT, "agent", "{task}", "{mcp_config}"])
    path.write_text(
        f"[limits]\nmax_concurrent = {max_concurrent}\n{FAST_SUPERVISOR}\n"
        f"[profiles.fake]\ncommand = {fake}\nmax_attempts = 1\ntimeout_s = 60\n\n{extra}"
    )
    return path


def fake_claude_on_path(tmp_path: Path) -> dict[str, str]:
    """A ``claude`` executable (the fake agent in Claude mode) first on PATH; the environment to use."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    claude = bin_dir / "claude"
    claude.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_AGENT}" claude "$@"\n')
    claude.chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_CLAUDE_SESSIONS": str(tmp_path / "sessions")}


@asynccontextmanager
async def engine_on(db: str, config: Path) -> AsyncIterator[Engine]:
    """An engine on the test's store (it supervises nothing: servers do); its workspace is the config's
    directory (the test's tmp_path)."""
    async with open_store(db) as store:
        yield Engine(store, workspace=str(config.parent), agents=load_agents_config(config))


async def status(engine: Engine, run_id: str) -> StatusResult:
    return await engine.runs.status(StatusInput(run_id=run_id, journal_limit=1000))


async def until(engine: Engine, run_id: str, done: Callable[[StatusResult], bool], timeout: float = 60) -> StatusResult:
    """Poll the run's status until ``done`` says so."""
    with anyio.fail_after(timeout):
        while not done(result := await status(engine, run_id)):
            await anyio.sleep(0.05)
    return result


def ended(result: StatusResult) -> bool:
    """The run ended and its process (if any) exited and was recorded."""
    return result.run.status.terminal and (result.process is None or result.process.state == AgentState.DONE)


def entries(journal: list[JournalEntry], kind: str) -> list[JournalEntry]:
    return [entry for entry in journal if entry.kind == kind]


def most_at_once(journals: list[list[JournalEntry]], host: str | None = None) -> int:
    """The most processes alive at the same moment (on ``host``, if given), from process_started /
    process_exited entries."""
    changes: list[tuple[Any, int]] = []
    for journal in journals:
        started = [e for e in entries(journal, "process_started") if host in (None, e.detail.get("host"))]
        attempts = {entry.attempt for entry in started}
        changes += [(entry.at, +1) for entry in started]
        changes += [(entry.at, -1) for entry in entries(journal, "process_exited") if entry.attempt in attempts]
    alive = peak = 0
    for _, change in sorted(changes, key=lambda item: (item[0], item[1])):  # exits first on a tie
        alive += change
        peak = max(peak, alive)
    return peak


def pid_gone(pid: int) -> bool:
    return not process_alive(pid)
