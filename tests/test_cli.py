"""The terminal face: the installed console script against a real store."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from mcp_orchestrator.cli import main
from mcp_orchestrator.cli import runs as cli_module
from mcp_orchestrator.models import (
    CancelRunInput,
    CheckpointInput,
    FinishRunInput,
    SendEventInput,
    SpawnSubagentInput,
    StartRunInput,
)
from mcp_orchestrator.runtime import Engine

from .support import cli, query

pytestmark = pytest.mark.anyio


async def make_runs(engine: Engine) -> tuple[str, str]:
    root = (await engine.runs.start_run(StartRunInput(name="root", labels={"team": "core"}))).run.run_id
    child = (await engine.runs.start_run(StartRunInput(name="child", parent_run_id=root))).run.run_id
    await engine.runs.checkpoint(CheckpointInput(run_id=root, step="plan", output={"files": 3}))
    await engine.runs.checkpoint(CheckpointInput(run_id=root, step="edit", error="conflict"))
    return root, child


@pytest.mark.processes
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
    header = ["RUN", "NAME", "STATUS", "COST", "CREATED", "UPDATED", "PARENT", "WORKSPACE"]  # piped: PARENT
    assert table.splitlines()[0].split() == header
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


@pytest.mark.processes
async def test_errors_say_what_to_fix(engine: Engine, db: str) -> None:
    missing = cli(db, "status", "ghost", check=False)
    assert missing.returncode == 1 and "run_not_found: no run has id or key 'ghost'" in missing.stderr
    bad_status = cli(db, "runs", "--status", "sleeping", check=False)
    assert bad_status.returncode == 1 and "invalid options: --status: 'sleeping'" in bad_status.stderr
    bad_address = cli(db, "serve", "--http", "localhost:http", check=False)
    assert bad_address.returncode == 1 and "expected HOST:PORT" in bad_address.stderr


@pytest.mark.processes
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


@pytest.mark.processes
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


@pytest.mark.processes
async def test_status_shows_the_error_whole(engine: Engine, db: str) -> None:
    run_id = (await engine.runs.start_run(StartRunInput(name="doomed"))).run.run_id
    error = {"type": "exited", "message": "x" * 200 + " Not logged in: run /login"}
    await engine.runs.finish_run(FinishRunInput(run_id=run_id, error=error))
    shown = cli(db, "status", run_id).stdout
    assert json.dumps(error) in shown  # not cut before the words that say why


@pytest.mark.processes
async def test_status_shows_the_tree_of_descendants(engine: Engine, db: str) -> None:
    root, child = await make_runs(engine)
    grandchild = (await engine.runs.start_run(StartRunInput(name="grandchild", parent_run_id=child))).run.run_id
    lines = cli(db, "status", root).stdout.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("CHILDREN")))
    assert lines[header + 1].startswith(f"{child}  ") and "child" in lines[header + 1]
    # Piped: the rows in the tree's order, each id first and its parent in a column (a terminal draws the tree).
    assert lines[header + 2].startswith(f"{grandchild}  ") and lines[header + 2].split()[4] == child


ACTION = '{"type": "send_event", "name": "tick"}'


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["runs", "--since", "0001-01-01T00:00:00+05:00"], "invalid_input: invalid options: --since: "),
        (["status", "r" * 65], "invalid_input: invalid options: RUN: "),
        (["send-event", "x", "--data", "[" * 5000 + "]" * 5000], "invalid_input: --data nests"),
        (["send-event", "x", "--data", "9" * 5000], "invalid_input: --data cannot be read"),
        (["schedules", "add", "n", "--every", "5", "--action", "[" * 5000 + "]" * 5000], "invalid_input: --action"),
        (["schedules", "add", "n", "--cron", "0 0 31 2 *", "--action", ACTION], "invalid_input: "),
        (["schedules", "add", "n", "--every", "nan", "--action", ACTION], "invalid_input: invalid options: --every: "),
        (["gc", "--older-than", "1e300"], "invalid_input: --older-than 1e+300: give an age from 0 to 36500 days"),
        (["gc", "--older-than", "nan"], "invalid_input: --older-than nan"),
    ],
    ids=lambda value: " ".join(value)[:40] if isinstance(value, list) else None,
)
def test_bad_values_print_code_and_message_never_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    assert main([*argv, "--db", str(tmp_path / "store.db")]) == 1
    printed = capsys.readouterr()
    assert printed.err.startswith(expected), printed.err
    assert "Traceback" not in printed.err and printed.out == ""


def test_a_nul_read_from_stdin_is_refused_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("fix the bug\x00rm -rf ~"))
    assert main(["spawn", "-", "--cwd", str(tmp_path), "--db", str(tmp_path / "store.db")]) == 1
    assert capsys.readouterr().err.startswith("invalid_input: invalid options: PROMPT: holds a NUL character")


def test_an_unforeseen_failure_is_named_as_a_bug(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(args: object, settings: object) -> int:
        raise KeyError("oops")

    monkeypatch.setattr(cli_module, "_runs", broken)
    assert main(["runs", "--db", str(tmp_path / "store.db")]) == 1
    assert capsys.readouterr().err == (
        "internal_error: runs failed with KeyError: 'oops'; this is a bug, please report it with the command line\n"
    )


# Screen clear, window title, OSC 52 clipboard write, a C1 CSI, a carriage return and a bidi override.
HOSTILE = "ok\x1b[2J\x1b]0;owned\x07\x1b]52;c;ZXZpbA==\x07\x9b31m\rfake\u202eevil"
TERMINAL_CONTROLS = ("\x1b", "\x07", "\x9b", "\r", "\u202e")


@pytest.mark.processes
async def test_stored_escape_sequences_never_reach_the_terminal(engine: Engine, db: str) -> None:
    run_id = (await engine.runs.start_run(StartRunInput(name=HOSTILE, input={"note": HOSTILE}))).run.run_id
    await engine.runs.checkpoint(CheckpointInput(run_id=run_id, step="s", output={"text": HOSTILE}))
    await engine.runs.checkpoint(CheckpointInput(run_id=run_id, step="t", error=HOSTILE))
    await engine.events.send_event(SendEventInput(name="note", data={"text": HOSTILE}), source="cli")

    for argv in (["runs"], ["status", run_id], ["events"], ["runs", "--json"], ["events", "--json"]):
        shown = cli(db, *argv).stdout
        assert not [c for c in TERMINAL_CONTROLS if c in shown], (argv, shown)
    assert "ok\\u001b[2J\\u001b]0;owned\\u0007" in cli(db, "runs").stdout  # made visible, not dropped
    listed = json.loads(cli(db, "runs", "--json").stdout)  # the escapes are JSON's own: the data round-trips
    assert listed["runs"][0]["name"] == HOSTILE
    assert json.loads(cli(db, "events", "--json").stdout)["events"][0]["data"] == {"text": HOSTILE}


@pytest.mark.processes
async def test_logs_are_made_printable_unless_raw(
    engine: Engine, db: str, private_state_dir: Path, tmp_path: Path
) -> None:
    spawn = SpawnSubagentInput(prompt="p", agent="command", command=["true"], cwd=str(tmp_path))
    run_id = (await engine.subagents.spawn(spawn)).run.run_id
    await engine.runs.cancel_run(CancelRunInput(run_id=run_id))  # ended: --follow prints the log and stops
    log_dir = private_state_dir / "runs" / run_id
    log_dir.mkdir(parents=True)
    (log_dir / "stdout.log").write_text(f"line one\n{HOSTILE}\n")

    shown = cli(db, "logs", run_id, "--follow").stdout
    assert shown.startswith("line one\nok\\u001b[2J") and not [c for c in TERMINAL_CONTROLS if c in shown], shown
    raw = cli(db, "logs", run_id, "--follow", "--raw").stdout
    assert raw.startswith("line one\nok\x1b[2J\x1b]0;owned\x07\x1b]52;c;ZXZpbA==\x07\x9b31m"), raw
    assert "--raw" in cli(db, "logs", "--help").stdout
