"""The README's first demonstration, exactly as a reader runs it: the demo script dies in the middle of its
second step, and run again it continues there without redoing the first."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from .support import query, server_env

pytestmark = pytest.mark.processes

DEMO = Path(__file__).parent.parent / "clients" / "python" / "resume_demo.py"


def demo(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = server_env(MCP_ORCHESTRATOR_DB=str(db))
    return subprocess.run([sys.executable, str(DEMO), *args], env=env, capture_output=True, text=True, timeout=60)


def test_the_demo_dies_in_step_two_and_run_again_continues_there(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    crashed = demo(db, "--crash", "2")
    assert crashed.returncode == 1, crashed.stderr
    assert crashed.stdout.splitlines()[1:] == ["  fetch: fetch done", "  transform: crashing mid-step"]
    run_id = re.match(r"run (\w+): new, status running", crashed.stdout).group(1)  # type: ignore[union-attr]

    resumed = demo(db)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.splitlines() == [
        f"run {run_id}: resumed, status running",
        "  fetch: done before, output 'fetch done'",
        "  transform: an earlier attempt never reported; checking its effect, then redoing it",
        "  transform: transform done",
        "  publish: publish done",
        f"run {run_id}: completed",
    ]
    # One run, each step recorded once: the first step was replayed, not redone.
    assert query(db, "SELECT count(*) FROM runs") == [(1,)]
    steps = query(db, f"SELECT step, status FROM steps WHERE run_id = '{run_id}'")
    assert sorted(steps) == [("fetch", "completed"), ("publish", "completed"), ("transform", "completed")]
