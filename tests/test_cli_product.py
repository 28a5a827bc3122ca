"""The terminal face as a product: runs named like git names commits, errors in a person's words, gc
that shows and asks, output fitted and coloured on a terminal and plain when piped, --json everywhere."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from mcp_orchestrator import console
from mcp_orchestrator.cli import main
from mcp_orchestrator.errors import InvalidInput, RunAmbiguous, RunNotFound
from mcp_orchestrator.ids import prefix_range
from mcp_orchestrator.models import (
    Activity,
    CancelRunInput,
    PermissionPromptInput,
    ScheduleInput,
    SpawnSubagentInput,
    StartRunInput,
    Usage,
    Wait,
)
from mcp_orchestrator.runtime import Engine
from mcp_orchestrator.services.subagents import PAUSE_STEP
from mcp_orchestrator.transitions import open_wait

from .support import cli, query, server_env

pytestmark = pytest.mark.anyio
SCRIPT = Path(sys.executable).with_name("mcp-orchestrator")


def common_prefix(a: str, b: str) -> str:
    """The characters two ids share from the start."""
    return a[: next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))]


async def two_runs(engine: Engine) -> tuple[str, str]:
    first = (await engine.runs.start_run(StartRunInput(name="fix", key="fix-issue-42"))).run.run_id
    second = (await engine.runs.start_run(StartRunInput(name="other"))).run.run_id
    return first, second


# Runs by id, key or unique prefix.


async def test_resolve_takes_an_id_a_key_or_a_unique_prefix(engine: Engine) -> None:
    first, second = await two_runs(engine)
    shared = common_prefix(first, second)
    assert len(shared) >= 4  # made in the same millisecond or two: they share the time part
    unique = first[: len(shared) + 1]
    assert await engine.runs.resolve(first) == first
    assert await engine.runs.resolve("fix-issue-42") == first
    assert await engine.runs.resolve(unique) == first
    assert await engine.runs.resolve(unique.lower()) == first
    with pytest.raises(RunAmbiguous) as ambiguous:
        await engine.runs.resolve(shared)
    assert [c["run_id"] for c in ambiguous.value.fields["candidates"]] == [first, second]
    assert {first, second, "fix", "other", "running"} <= set(ambiguous.value.message.split())
    for unknown in ("ZZZZZZ", first[:3], "fix-issue-4", "01-*"):  # none, too short, not a key, not the alphabet
        with pytest.raises(RunNotFound):
            await engine.runs.resolve(unknown)


async def test_a_start_too_short_asks_for_more_characters(engine: Engine) -> None:
    first, _ = await two_runs(engine)
    with pytest.raises(RunNotFound) as short:
        await engine.runs.resolve(first[:3])
    assert "give at least 4 characters of it" in short.value.message
    assert "no run's id starts with it" not in short.value.message
    with pytest.raises(RunNotFound) as none:
        await engine.runs.resolve("ZZZZZZ")
    assert "no run's id starts with it" in none.value.message and "at least 4" not in none.value.message


async def test_the_prefix_statement_reads_a_bounded_range(engine: Engine) -> None:
    """The store's statement on both databases: the runs of a prefix in id order, at most the limit."""
    ids = [(await engine.runs.start_run(StartRunInput(name=f"r{i}"))).run.run_id for i in range(4)]
    low, high = prefix_range(ids[0][:6]) or ("", "")
    found = await engine.store.read(lambda tx: tx.runs_in_id_range(low, high, 3))
    assert [run.run_id for run in found] == sorted(ids)[:3]
    assert found[0].input is None and found[0].name == "r0"  # lean: no payloads
    assert await engine.store.read(lambda tx: tx.runs_in_id_range("ZZ", "ZZZ", 3)) == []


def test_prefix_ranges_stay_in_the_alphabet() -> None:
    assert prefix_range("01J9") == ("01J9", "01JA")
    assert prefix_range("01HZ") == ("01HZ", "01J")  # carried past the last letter, skipping I
    assert prefix_range("ZZZ") is None and prefix_range("01-x") is None and prefix_range("") is None


@pytest.mark.processes
async def test_commands_take_a_key_or_a_prefix(engine: Engine, db: str) -> None:
    first, second = await two_runs(engine)
    shared = common_prefix(first, second)
    shown = json.loads(cli(db, "status", "fix-issue-42", "--json").stdout)
    assert shown["run"]["run_id"] == first
    assert json.loads(cli(db, "status", first[: len(shared) + 1].lower(), "--json").stdout)["run"]["run_id"] == first

    ambiguous = cli(db, "cancel", shared, check=False)
    assert ambiguous.returncode == 1 and ambiguous.stderr.startswith(f"run_ambiguous: '{shared}' starts 2 run ids")
    assert first in ambiguous.stderr and second in ambiguous.stderr and "other" in ambiguous.stderr
    unknown = cli(db, "status", "no-such-run", check=False)
    assert unknown.returncode == 1 and "no run has id or key 'no-such-run'" in unknown.stderr

    cli(db, "cancel", "fix-issue-42")
    assert dict(query(db, "SELECT run_id, status FROM runs"))[first] == "cancelled"
    cli(db, "retry", first[: len(shared) + 1])
    assert dict(query(db, "SELECT run_id, status FROM runs"))[first] == "running"
    child = (await engine.runs.start_run(StartRunInput(name="kid", parent_run_id=first))).run.run_id
    children = json.loads(cli(db, "runs", "--parent", "fix-issue-42", "--json").stdout)["runs"]
    assert [run["run_id"] for run in children] == [child]


# Errors in a person's words.


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["runs", "--status", "bogus"], "--status: 'bogus' is not one of queued, running, waiting, completed, failed"),
        (
            [
                "schedules",
                "add",
                "n",
                "--every",
                "5",
                "--action",
                '{"type": "send_event", "name": "t"}',
                "--overlap",
                "x",
            ],
            "--overlap: 'x' is not one of skip, allow or cancel_previous",
        ),
        (
            ["schedules", "add", "n", "--cron", "61 * * * *", "--action", '{"type": "send_event", "name": "t"}'],
            "has minute 61, out of range: minute goes from 0 to 59",
        ),
        (
            ["schedules", "add", "n", "--cron", "0 9 * 13 *", "--action", '{"type": "send_event", "name": "t"}'],
            "has month 13, out of range: month goes from 1 to 12",
        ),
        (
            ["schedules", "add", "n", "--cron", "*/61 * * * *", "--action", '{"type": "send_event", "name": "t"}'],
            "has the minute step 61, out of range: minute steps go from 1 to 59",
        ),
        (
            [
                "schedules",
                "add",
                "n",
                "--every",
                "5",
                "--action",
                '{"type": "send_event", "name": "t"}',
                "--catch-up",
                "zz",
            ],
            "invalid options: --catch-up: 'zz' is not one of skip, latest or all",
        ),
        (
            ["checkpoint", "RUN", "s", "--begin", "--output", "1"],
            "invalid options: --begin takes neither --output nor --error",
        ),
    ],
    ids=["status", "overlap", "minute", "month", "step", "catch-up", "begin"],
)
def test_errors_name_the_choices_and_ranges(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    db = ["--db", str(tmp_path / "store.db")]
    if "RUN" in argv:
        assert main(["start", "job", *db]) == 0
        run = capsys.readouterr().out.strip()
        argv = [run if arg == "RUN" else arg for arg in argv]
    assert main([*argv, *db]) == 1
    printed = capsys.readouterr().err
    assert expected in printed, printed
    assert "str-enum" not in printed and "Input should be" not in printed and "Traceback" not in printed


async def test_the_tool_gets_the_cron_field_and_range_too(engine: Engine) -> None:
    action = {"type": "send_event", "name": "t"}
    with pytest.raises(InvalidInput, match=r"has hour 24, out of range: hour goes from 0 to 23"):
        await engine.schedules.schedule(ScheduleInput(name="n", cron="0 24 * * *", action=action))


def test_a_remedy_names_the_command_and_nothing_else_is_reworded(db_path: Path) -> None:
    """The tool a message says to call next becomes the command; values typed, and valid choices, stay."""
    unknown = cli(db_path, "status", "nope", check=False).stderr
    assert unknown.startswith("run_not_found: no run has id or key 'nope'") and "list_runs" not in unknown
    assert "; 'mcp-orchestrator runs' shows the runs that exist" in unknown
    named_like_a_tool = cli(db_path, "status", "list_runs", check=False).stderr
    assert named_like_a_tool.startswith("run_not_found: no run has id or key 'list_runs'"), named_like_a_tool
    bogus = '{"type": "bogus", "name": "t"}'
    action = cli(db_path, "schedules", "add", "n", "--every", "5", "--action", bogus, check=False).stderr
    assert "expected tags: 'spawn_subagent', 'send_event'" in action, action
    assert "mcp-orchestrator" not in action
    run = cli(db_path, "start", "job").stdout.strip()
    cli(db_path, "checkpoint", run, "s", "--error", '"x"', "--no-retry")
    failed = cli(db_path, "checkpoint", run, "s", "--begin", check=False).stderr
    assert failed.endswith("or 'mcp-orchestrator finish' with an error\n") and "finish_run" not in failed, failed


async def test_a_model_reads_the_tool_in_the_remedy(engine: Engine) -> None:
    with pytest.raises(RunNotFound) as unknown:
        await engine.runs.resolve("nope")
    assert unknown.value.message.endswith("; list_runs shows the runs that exist (filter by workspace or name)")
    assert str(unknown.value) == unknown.value.message


def test_a_problem_of_the_whole_value_and_of_other_fields_are_each_reported() -> None:
    from typing import Literal

    from pydantic import TypeAdapter, ValidationError

    from mcp_orchestrator.errors import invalid_input_from

    with pytest.raises(ValidationError) as root:
        TypeAdapter(Literal["a", "b"]).validate_python("c")
    assert invalid_input_from(root.value).message == "invalid arguments: 'c' is not one of a or b"
    with pytest.raises(ValidationError) as two:
        ScheduleInput.model_validate({"name": "n", "every_s": 5, "action": {"type": "send_event"}, "catch_up": "zz"})
    problems = invalid_input_from(two.value).fields["problems"]
    assert problems == ["action.send_event.name: Field required", "catch_up: 'zz' is not one of skip, latest or all"]


def test_approve_and_deny_say_where_the_id_comes_from(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("approve", "deny"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        shown = " ".join(capsys.readouterr().out.split())
        assert "ID The permission request's id, as 'mcp-orchestrator approvals' shows it." in shown, shown
        assert "list_approvals" not in shown


# No traceback when the reader goes away.


@pytest.mark.processes
@pytest.mark.parametrize("argv", [["runs"], ["runs", "--json"], ["--help"], ["--version"], ["token"]])
async def test_a_reader_that_goes_away_gets_no_traceback(engine: Engine, db: str, argv: list[str]) -> None:
    await engine.runs.start_run(StartRunInput(name="run"))
    process = subprocess.Popen(
        [str(SCRIPT), *argv, *(["--db", db] if argv[0] == "runs" else [])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=server_env(),
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # the reader is gone before anything is written: every write meets a closed pipe
    stderr = process.stderr.read().decode()
    process.stderr.close()
    assert process.wait(timeout=60) == 141, stderr
    assert stderr == ""


@pytest.mark.processes
@pytest.mark.parametrize("argv", [["runs", "--limit", "200"], ["runs", "--limit", "200", "--json"]])
async def test_a_reader_that_stops_part_way_ends_the_command_with_141(engine: Engine, db: str, argv: list[str]) -> None:
    """More than a pipe holds (64 KiB): the command is still writing when `head` has gone."""
    for i in range(200):  # two bytes a character: 200 rows of 500 bytes
        await engine.runs.start_run(StartRunInput(name=f"run-{i}-" + "é" * 190))
    shell = subprocess.run(
        ["bash", "-c", f"'{SCRIPT}' {' '.join(argv)} --db '{db}' | head -1; echo \"status ${{PIPESTATUS[0]}}\""],
        capture_output=True,
        text=True,
        timeout=60,
        env=server_env(),
    )
    assert len(cli(db, *argv).stdout.encode()) > 65536
    assert shell.stdout.splitlines()[-1] == "status 141" and shell.stdout.count("\n") == 2, shell.stdout
    assert shell.stderr == ""


@pytest.mark.processes
@pytest.mark.parametrize("argv", [["--version"], ["token"], ["runs"], ["--help"], ["runs", "--help"]])
def test_a_full_disk_is_an_error_not_a_traceback(tmp_path: Path, argv: list[str]) -> None:
    env = server_env(XDG_STATE_HOME=str(tmp_path), MCP_ORCHESTRATOR_DB=str(tmp_path / "s.db"))
    with open("/dev/full", "w") as full:
        done = subprocess.run([str(SCRIPT), *argv], stdout=full, stderr=subprocess.PIPE, text=True, env=env, timeout=60)
    assert done.returncode == 1 and done.stderr.startswith("config_error: ") and "Traceback" not in done.stderr
    assert "No space left on device" in done.stderr and done.stderr.count("\n") == 1, done.stderr


def test_ctrl_c_while_loading_exits_130(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import mcp_orchestrator.cli as cli_package

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_package, "_parser", interrupted)  # Ctrl-C while the parser is built
    assert main(["runs"]) == 130
    monkeypatch.setattr(cli_package, "main", interrupted)  # ... or while the full command line is imported
    assert console.main(["runs"]) == 130
    assert capsys.readouterr().err == ""


# gc shows, asks, and refuses where nobody can answer.


@pytest.mark.processes
async def test_gc_shows_then_removes_only_when_told(engine: Engine, db: str) -> None:
    ended = [(await engine.runs.start_run(StartRunInput(name=f"old-{i}"))).run.run_id for i in range(3)]
    for run_id in ended:
        await engine.runs.cancel_run(CancelRunInput(run_id=run_id))
    await engine.runs.start_run(StartRunInput(name="live"))  # holds the newest journal entry: SQLite keeps none back

    dry = cli(db, "gc", "--older-than", "0", "--dry-run")
    assert dry.stdout.startswith("would remove 3 run(s)") and all(run_id in dry.stdout for run_id in ended)
    preview = json.loads(cli(db, "gc", "--older-than", "0", "--dry-run", "--json").stdout)
    assert preview["runs"] == 3 and [run["run_id"] for run in preview["oldest"]] == ended
    assert len(query(db, "SELECT run_id FROM runs")) == 4

    refused = cli(db, "gc", "--older-than", "0", check=False)
    assert refused.returncode == 1 and "pass --yes" in refused.stderr and "3 run(s)" in refused.stderr
    assert len(query(db, "SELECT run_id FROM runs")) == 4

    answered_no = on_terminal(db, "gc", "--older-than", "0", answer="n\n")
    assert "remove them? [y/N]" in answered_no and "nothing removed" in answered_no
    assert len(query(db, "SELECT run_id FROM runs")) == 4
    ctrl_d = on_terminal(db, "gc", "--older-than", "0", answer="\x04")
    assert "remove them? [y/N] \nnothing removed" in ctrl_d and "Error" not in ctrl_d, ctrl_d
    assert len(query(db, "SELECT run_id FROM runs")) == 4
    json_asked = cli(db, "gc", "--older-than", "0", "--json", check=False)
    assert json_asked.returncode == 1 and json_asked.stdout == ""
    assert "--json goes with --dry-run (what would go, as JSON) or --yes (what went)" in json_asked.stderr

    answered_yes = on_terminal(db, "gc", "--older-than", "0", answer="y\n")
    assert "remove them? [y/N]" in answered_yes and "removed 3 run(s)" in answered_yes, answered_yes
    assert [name for (name,) in query(db, "SELECT name FROM runs")] == ["live"]
    assert cli(db, "gc", "--older-than", "0").stdout.startswith("nothing ended before")
    nothing = json.loads(cli(db, "gc", "--older-than", "0", "--yes", "--json").stdout)
    assert nothing["runs"] == 0 and nothing["before"]
    nothing_shown = json.loads(cli(db, "gc", "--older-than", "0", "--dry-run", "--json").stdout)
    assert nothing_shown["runs"] == 0 and nothing_shown["oldest"] == []


@pytest.mark.processes
async def test_gc_removes_only_what_ended_before_the_time_it_showed(engine: Engine, db: str) -> None:
    """The person answers after a while: what ended meanwhile is newer than the preview's cutoff, and stays."""
    old = (await engine.runs.start_run(StartRunInput(name="old"))).run.run_id
    await engine.runs.cancel_run(CancelRunInput(run_id=old))
    meanwhile = (await engine.runs.start_run(StartRunInput(name="meanwhile"))).run.run_id
    await engine.runs.start_run(StartRunInput(name="live"))
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [str(SCRIPT), "gc", "--older-than", "0", "--db", db],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=server_env(TERM="xterm"),
    )
    os.close(follower)
    shown = b""
    while b"[y/N]" not in shown:
        ready, _, _ = select.select([leader], [], [], 60)
        assert ready, shown
        shown += os.read(leader, 65536)
    assert old.encode() in shown and meanwhile.encode() not in shown
    await engine.runs.cancel_run(CancelRunInput(run_id=meanwhile))  # ends after the preview
    os.write(leader, b"y\n")
    assert process.wait(timeout=60) == 0
    os.close(leader)
    assert {name for (name,) in query(db, "SELECT name FROM runs")} == {"meanwhile", "live"}


# Output: a terminal's, a pipe's, and JSON.


def on_terminal(db: str, *argv: str, answer: str = "", columns: int = 200, **env: str) -> str:
    """What the command prints on a pseudo-terminal ``columns`` wide (input ``answer``d)."""
    leader, follower = pty.openpty()
    import fcntl
    import struct
    import termios

    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    process = subprocess.Popen(
        [str(SCRIPT), *argv, "--db", db],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=server_env(TERM="xterm", COLUMNS=str(columns), **env),
    )
    os.close(follower)
    if answer:
        os.write(leader, answer.encode())
    output = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        output += chunk
    process.wait(timeout=60)
    os.close(leader)
    return output.decode(errors="replace").replace("\r\n", "\n")


@pytest.mark.processes
async def test_colour_on_a_terminal_only_and_never_with_no_color(engine: Engine, db: str) -> None:
    done = (await engine.runs.start_run(StartRunInput(name="done"))).run.run_id
    await engine.runs.cancel_run(CancelRunInput(run_id=done))
    await engine.runs.start_run(StartRunInput(name="busy"))

    coloured = on_terminal(db, "runs")
    assert "\x1b[36mrunning\x1b[0m" in coloured and "\x1b[2mcancelled\x1b[0m" in coloured
    assert "\x1b[1mRUN\x1b[0m" in coloured
    for plain in (on_terminal(db, "runs", NO_COLOR="1"), on_terminal(db, "runs", "--no-color")):
        assert "\x1b" not in plain and "cancelled" in plain
    piped = [cli(db, "runs").stdout for _ in range(2)]
    assert "\x1b" not in piped[0] and piped[0] == piped[1]
    header = ["RUN", "NAME", "STATUS", "COST", "CREATED", "UPDATED", "PARENT", "WORKSPACE"]
    assert piped[0].splitlines()[0].split() == header


@pytest.mark.processes
async def test_a_terminal_gets_long_cells_cut_a_pipe_gets_them_whole(engine: Engine, db: str) -> None:
    long_name = "n" * 200
    await engine.runs.start_run(StartRunInput(name=long_name))
    fitted = on_terminal(db, "runs", "--no-color")
    assert long_name not in fitted and "…" in fitted
    assert max(len(line) for line in fitted.splitlines()) <= 200
    assert long_name in cli(db, "runs").stdout


@pytest.mark.processes
async def test_a_narrow_terminal_keeps_ids_and_times_whole(engine: Engine, db: str) -> None:
    parent = (await engine.runs.start_run(StartRunInput(name="a-rather-long-run-name-" * 3))).run
    child = (await engine.runs.start_run(StartRunInput(name="child", parent_run_id=parent.run_id))).run
    narrow = on_terminal(db, "runs", "--no-color", columns=80)
    lines = narrow.splitlines()
    assert max(len(line) for line in lines) <= 80, narrow
    assert f"{parent.created_at:%Y-%m-%d %H:%M:%S}Z" in narrow and "…" in narrow
    assert lines[1].startswith(parent.run_id + "  ") and lines[2].startswith(f"  └ {child.run_id}  "), narrow
    assert lines[0].split() == ["RUN", "NAME", "STATUS", "COST", "CREATED"]  # what did not fit is left out
    wide = on_terminal(db, "runs", "--no-color", columns=250).splitlines()[0].split()
    assert wide == ["RUN", "NAME", "STATUS", "COST", "CREATED", "UPDATED", "WORKSPACE"]


@pytest.mark.processes
async def test_every_data_command_prints_json(engine: Engine, db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    first, _ = await two_runs(engine)
    await engine.schedules.schedule(ScheduleInput(name="tick", every_s=60, action={"type": "send_event", "name": "t"}))
    for argv in (
        ["runs"],
        ["status", "fix-issue-42"],
        ["events"],
        ["send-event", "ping"],
        ["schedules"],
        ["agents"],
        ["approvals"],
        ["gc", "--dry-run"],
        ["cancel", first],
        ["retry", first],
        ["start", "job", "--key", "job-1"],
        ["checkpoint", "job-1", "fetch"],
        ["finish", "job-1"],
        ["schedules", "add", "tock", "--every", "60", "--action", '{"type": "send_event", "name": "t"}'],
        ["schedules", "pause", "tock"],
        ["schedules", "remove", "tock"],
    ):
        printed = cli(db, *argv, "--json").stdout
        assert isinstance(json.loads(printed), dict), argv

    argv = [str(SCRIPT), "spawn", "work", "--db", db, "--json", "--command", "true"]  # the argv goes last
    spawn = subprocess.run(argv, capture_output=True, text=True, env=server_env(), timeout=60, check=True)
    spawned = json.loads(spawn.stdout)
    agent = spawned["run"]["run_id"]
    entry = Activity(at=engine.now(), kind="turn", summary="hm")
    await engine.store.write(lambda tx: tx.append_activity(agent, [entry]))
    until = engine.now() + timedelta(hours=1)
    pause = Wait(step=f"{PAUSE_STEP}1", kind="sleep", until=until, created_at=engine.now())
    await engine.store.write(lambda tx: open_wait(tx, agent, pause))
    monkeypatch.setattr(engine.approvals.config.approvals, "wait_s", 0)  # left pending at once, not waited on
    for tool in ("Bash", "Write"):
        await engine.approvals.request(PermissionPromptInput(tool_name=tool, input={"command": tool}, run_id=agent))
    allow, deny = [a["approval_id"] for a in json.loads(cli(db, "approvals", "--json").stdout)["approvals"]]
    for argv in (
        ["resume", agent],
        ["message", agent, "look at the flaky test"],
        ["budget", agent, "--usd", "5"],
        ["approve", allow],
        ["deny", deny],
        ["gc", "--yes", "--older-than", "0"],
    ):
        printed = cli(db, *argv, "--json").stdout
        assert isinstance(json.loads(printed), dict), argv
    lines = cli(db, "logs", agent, "--activity", "--json").stdout.splitlines()
    summaries = [json.loads(line)["summary"] for line in lines]
    assert summaries[0] == "hm" and summaries[1].startswith("Bash asks a person: approval "), summaries


@pytest.mark.processes
async def test_runs_groups_children_under_their_parents(engine: Engine, db: str) -> None:
    parent = (await engine.runs.start_run(StartRunInput(name="parent"))).run.run_id
    other = (await engine.runs.start_run(StartRunInput(name="other"))).run.run_id
    kids = [
        (await engine.runs.start_run(StartRunInput(name=f"kid{i}", parent_run_id=parent))).run.run_id for i in (1, 2)
    ]
    grandkid = (await engine.runs.start_run(StartRunInput(name="grandkid", parent_run_id=kids[0]))).run.run_id
    piped = cli(db, "runs").stdout  # no tree glyphs for a script: the id first, the parent in a column
    assert piped.splitlines()[0].split()[-2:] == ["PARENT", "WORKSPACE"] and "└" not in piped
    lines = [[line.split()[0], line.split()[1], line.split()[-2]] for line in piped.splitlines()[1:]]
    assert lines == [
        [other, "other", "-"],
        [parent, "parent", "-"],
        [kids[0], "kid1", parent],
        [grandkid, "grandkid", kids[0]],
        [kids[1], "kid2", parent],
    ]
    table = on_terminal(db, "runs", "--no-color")
    assert f"\n    └ {grandkid}" in table and f"\n  └ {kids[1]}" in table and "PARENT" not in table
    listed = json.loads(cli(db, "runs", "--json").stdout)["runs"]
    assert [run["run_id"] for run in listed] == [grandkid, kids[1], kids[0], other, parent]  # JSON: newest first


@pytest.mark.processes
async def test_status_shows_input_latest_activity_and_cost(engine: Engine, db: str, tmp_path: Path) -> None:
    plain = (await engine.runs.start_run(StartRunInput(name="plain", input={"issue": 42}))).run.run_id
    fields = cli(db, "status", plain).stdout
    assert 'input:     {"issue": 42}' in fields and "cost:      -" in fields
    prompted = (await engine.runs.start_run(StartRunInput(name="p", input={"prompt": "hi", "n": 1}))).run.run_id
    own_usage = Usage(cost_usd=0.5, input_tokens=10, output_tokens=10, turns=1)
    await engine.store.write(lambda tx: tx.set_run_usage(prompted, own_usage, None))
    fields = cli(db, "status", prompted).stdout  # not a sub-agent: its whole input, and what it spent
    assert 'input:     {"prompt": "hi", "n": 1}' in fields and "prompt:" not in fields, fields
    assert "cost:      $0.5000\n" in fields and "latest:" not in fields, fields

    spawn = SpawnSubagentInput(prompt="Fix the flaky\ntest", agent="command", command=["true"], cwd=str(tmp_path))
    agent = (await engine.subagents.spawn(spawn)).run.run_id
    now = engine.now()
    entries = [
        Activity(at=now, kind="turn", summary="thinking"),
        Activity(at=now + timedelta(seconds=1), kind="tool", tool="Bash", summary="pytest -x", failed=False),
    ]
    usage = Usage(cost_usd=0.0421, input_tokens=1200, output_tokens=300, turns=2)

    def record(tx: object) -> None:
        tx.append_activity(agent, entries)  # type: ignore[attr-defined]
        tx.set_run_usage(agent, usage, usage)  # type: ignore[attr-defined]

    await engine.store.write(record)
    shown = cli(db, "status", agent).stdout
    assert "prompt:    Fix the flaky test" in shown and "input:" not in shown
    assert "latest:" not in shown and re.search(r"activity \(latest 2;.*\n.*\n.*tool\s+Bash: pytest -x", shown), shown
    assert "cost:      $0.0421\n" in shown

    tree = Usage(cost_usd=0.0521, input_tokens=1300, output_tokens=400, turns=3)
    await engine.store.write(lambda tx: tx.set_run_usage(agent, usage, tree))
    assert "cost:      $0.0521 (with its descendants)\n" in cli(db, "status", agent).stdout
