"""The terminal face: the installed console script against a real store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mcp_orchestrator.engine import Engine
from mcp_orchestrator.models import CheckpointInput, StartRunInput

from .conftest import cli, query

pytestmark = pytest.mark.anyio


async def make_runs(engine: Engine) -> tuple[str, str]:
    root = (await engine.start_run(StartRunInput(name="root", labels={"team": "core"}))).run.run_id
    child = (await engine.start_run(StartRunInput(name="child", parent_run_id=root))).run.run_id
    await engine.checkpoint(CheckpointInput(run_id=root, step="plan", output={"files": 3}))
    await engine.checkpoint(CheckpointInput(run_id=root, step="edit", error="conflict"))
    return root, child


async def test_runs_status_and_cancel_match_the_store(engine: Engine, db: str) -> None:
    root, child = await make_runs(engine)

    listed = json.loads(cli(db, "runs", "--json").stdout)
    assert [r["run_id"] for r in listed["runs"]] == [child, root]
    stored = dict(query(db, "SELECT run_id, status FROM runs"))
    assert {r["run_id"]: r["status"] for r in listed["runs"]} == stored

    filtered = json.loads(cli(db, "runs", "--json", "--label", "team=core").stdout)
    assert [r["run_id"] for r in filtered["runs"]] == [root]
    paged = json.loads(cli(db, "runs", "--json", "--limit", "1").stdout)
    assert paged["next_cursor"] == child

    table = cli(db, "runs").stdout
    assert table.splitlines()[0].split() == ["RUN", "NAME", "STATUS", "CREATED", "UPDATED", "WORKSPACE"]
    assert root in table and "running" in table

    status = json.loads(cli(db, "status", root, "--json").stdout)
    assert [(s["step"], s["status"]) for s in status["steps"]] == [("plan", "completed"), ("edit", "retrying")]
    assert [c["run_id"] for c in status["children"]] == [child]
    readable = cli(db, "status", root).stdout
    assert "plan" in readable and "retrying" in readable and '"conflict"' in readable and child in readable

    cancelled = json.loads(cli(db, "cancel", root, "--reason", "done by hand", "--json").stdout)
    assert sorted(cancelled["cancelled_run_ids"]) == sorted([root, child])
    again = cli(db, "cancel", root)
    assert "nothing to cancel" in again.stdout
    assert {s for (s,) in query(db, "SELECT status FROM runs")} == {"cancelled"}


async def test_errors_say_what_to_fix(engine: Engine, db: str) -> None:
    missing = cli(db, "status", "ghost", check=False)
    assert missing.returncode == 1 and "run_not_found: no run has id 'ghost'" in missing.stderr
    bad_status = cli(db, "runs", "--status", "sleeping", check=False)
    assert bad_status.returncode == 1 and "invalid options: status" in bad_status.stderr
    bad_address = cli(db, "serve", "--http", "localhost:http", check=False)
    assert bad_address.returncode == 1 and "expected HOST:PORT" in bad_address.stderr


@pytest.mark.parametrize("command", [["runs"], ["serve"], ["serve", "--http", "127.0.0.1:0"]])
def test_a_store_that_cannot_be_used_is_named(tmp_path: Path, command: list[str]) -> None:
    not_a_store = tmp_path / "notes.txt"
    not_a_store.write_text("these are my notes, not a database\n" * 100)
    result = cli(not_a_store, *command, check=False)
    assert result.returncode == 1
    assert f"store_error: cannot open the store {not_a_store}: file is not a database" in result.stderr
    assert not_a_store.read_text().startswith("these are my notes")  # left as it was
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("")
    result = cli(blocked / "store.db", *command, check=False)
    assert result.returncode == 1 and "cannot create the directory of the store" in result.stderr
    memory = cli(Path(":memory:"), *command, check=False)
    assert memory.returncode == 1 and "in-memory SQLite database cannot be the store" in memory.stderr


def test_help_explains_every_command(tmp_path: Path) -> None:
    top = cli(tmp_path / "x.db", "--help").stdout
    for command in ("serve", "runs", "status", "cancel", "send-event", "events", "token", "MCP_ORCHESTRATOR_DB"):
        assert command in top
    for command, words in {
        "serve": "--http",
        "runs": "--workspace",
        "status": "--journal",
        "cancel": "--reason",
        "send-event": "--data",
        "events": "--name",
        "token": "Authorization: Bearer",
    }.items():
        assert words in cli(tmp_path / "x.db", command, "--help").stdout


async def test_status_shows_the_tree_of_descendants(engine: Engine, db: str) -> None:
    root, child = await make_runs(engine)
    grandchild = (await engine.start_run(StartRunInput(name="grandchild", parent_run_id=child))).run.run_id
    lines = cli(db, "status", root).stdout.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("CHILDREN")))
    assert lines[header + 1].startswith(f"{child}  ") and "child" in lines[header + 1]
    assert lines[header + 2].startswith(f"  └ {grandchild}") and "grandchild" in lines[header + 2]
