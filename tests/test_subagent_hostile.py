"""Sub-agent launches under hostile input: what exec cannot take is refused at spawn, a launch that
fails says why at once, a cwd is refused with its reason, a caller's argv is run as given, git never
stalls a shared server, and cancel_previous never cancels for a spawn that cannot be made."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from pydantic import ValidationError

from mcp_orchestrator import transitions
from mcp_orchestrator.errors import InvalidInput
from mcp_orchestrator.ids import new_id
from mcp_orchestrator.models import (
    ListRunsInput,
    ListSchedulesInput,
    RunStatus,
    ScheduleInput,
    SpawnSubagentInput,
    StatusInput,
)
from mcp_orchestrator.profiles import BUILTIN_PROFILES, launch_argv, render
from mcp_orchestrator.runtime import Engine

from .subagent_helpers import engine_on, until, write_config
from .support import Clock, call, eventually, http_client, http_token, open_store, stdio_server

pytestmark = pytest.mark.anyio


@pytest.fixture
async def clocked(db: str, tmp_path: Path) -> AsyncIterator[tuple[Engine, Clock]]:
    """An engine on a clock the test moves (schedules fire without waiting for real time)."""
    clock = Clock()
    async with open_store(db) as store:
        yield Engine(store, workspace=str(tmp_path), clock=clock), clock


def unchecked(**fields: Any) -> SpawnSubagentInput:
    """Spawn arguments that skip the model's own text rules: the launch checks must hold without them."""
    return SpawnSubagentInput.model_construct(**{"agent": "command", **fields})


async def test_what_exec_cannot_take_is_refused_at_spawn_naming_the_field(
    clocked: tuple[Engine, Clock], tmp_path: Path
) -> None:
    engine, _ = clocked
    spawn = engine.subagents.spawn
    with pytest.raises(InvalidInput, match=r"^command\[1\] '1\\x00' holds a NUL character \(\\x00\) at position 1"):
        await spawn(unchecked(prompt="p", command=["sleep", "1\x00"]))
    for agent in ("codex", "opencode"):  # both put the prompt in argv (Claude Code takes it on stdin)
        with pytest.raises(
            InvalidInput, match=rf"^prompt holds a NUL character .* at position 3; agent profile '{agent}'"
        ):
            await spawn(unchecked(prompt="fix\x00it", agent=agent))
    with pytest.raises(InvalidInput, match=r"^prompt holds '\\ud800' at position 0, which cannot be encoded"):
        await spawn(unchecked(prompt="\ud800", agent="codex"))
    with pytest.raises(InvalidInput, match=r"^command\[0\] .* cannot be encoded"):
        await spawn(unchecked(prompt="p", command=["\udfff"]))
    assert (await engine.runs.list_runs(ListRunsInput())).runs == []  # nothing was written

    action = {"type": "spawn_subagent", "prompt": "p", "agent": "claude", "cwd": str(tmp_path)}
    spawn_action = ScheduleInput.model_validate({"name": "n", "every_s": 60, "action": action}).action
    bad = ScheduleInput.model_construct(
        name="n", every_s=60, timezone="UTC", action=spawn_action.model_copy(update={"prompt": "a\x00"})
    )
    with pytest.raises((InvalidInput, ValidationError), match=r"prompt\n?.*holds a NUL character"):
        await engine.schedules.schedule(bad)  # the schedule's action is checked like a spawn when it is created


@pytest.mark.processes
async def test_nul_in_a_spawn_or_a_schedule_is_refused_over_stdio(db: str, tmp_path: Path) -> None:
    async with Client(stdio_server(db)) as client:

        async def refused(tool: str, **arguments: Any) -> str:
            result = await client.call_tool(tool, arguments)
            assert result.is_error, result
            return result.content[0].text

        for text in [
            await refused("spawn_subagent", prompt="x", agent="command", command=["sleep", "1\x00"]),
            await refused("spawn_subagent", prompt="fix\x00it", agent="claude", cwd=str(tmp_path)),
            await refused(
                "schedule",
                name="nightly",
                every_s=60,
                action={"type": "spawn_subagent", "prompt": "a\x00b", "agent": "opencode", "cwd": str(tmp_path)},
            ),
        ]:
            assert "holds a NUL character" in text and ("prompt" in text or "command.1" in text), text
        assert (await call(client, "list_runs"))["runs"] == []
        assert (await call(client, "list_schedules"))["schedules"] == []


async def test_a_bad_cwd_is_refused_naming_it_and_what_to_do(clocked: tuple[Engine, Clock], tmp_path: Path) -> None:
    engine, _ = clocked
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    long_component = str(tmp_path / ("a" * 300))
    hint = "give the path of an existing directory for the sub-agent to work in"
    for cwd, problem in [
        (str(loop), f"cwd '{loop}' is a symbolic link loop; {hint}"),
        (str(loop / "inside"), "is a symbolic link loop"),
        (f"{tmp_path}/x\x00y", r"holds a NUL character (\x00), which no path can"),
        (long_component, "too long for the file system (its longest component is 300 bytes, the limit is usually 255"),
        (str(tmp_path / "absent"), f"cwd '{tmp_path / 'absent'}' is not an existing directory; {hint}"),
        ("~no-such-user-here/x", "starts with ~ but names no home directory"),
    ]:
        with pytest.raises(InvalidInput) as refused:
            await engine.subagents.spawn(unchecked(prompt="p", command=["true"], cwd=cwd))
        assert refused.value.message.startswith("cwd ") and problem in refused.value.message, refused.value.message
        assert refused.value.message.endswith(hint) and refused.value.fields == {"field": "cwd"}


async def test_cancel_previous_keeps_the_previous_run_when_the_new_spawn_cannot_be_made(
    clocked: tuple[Engine, Clock], tmp_path: Path
) -> None:
    engine, clock = clocked
    work = tmp_path / "work"
    work.mkdir()
    action = {"type": "spawn_subagent", "prompt": "p", "agent": "command", "command": ["sleep", "60"], "cwd": str(work)}
    args = {"name": "nightly", "every_s": 60, "overlap": "cancel_previous", "action": action}
    await engine.schedules.schedule(ScheduleInput.model_validate(args))
    clock.advance(60)
    await engine.schedules.fire_due(grace_s=30)
    (first,) = await engine.schedules.history("nightly")
    assert first.outcome == "spawned" and first.run_id is not None

    work.rmdir()  # the next firing's spawn cannot be prepared
    clock.advance(60)
    await engine.schedules.fire_due(grace_s=30)
    failed = (await engine.schedules.history("nightly"))[0]
    assert failed.outcome == "failed" and "is not an existing directory" in (failed.detail or ""), failed
    previous = await engine.runs.status(StatusInput(run_id=first.run_id))
    assert previous.run.status == RunStatus.QUEUED  # not cancelled for a spawn that never happened
    (listed,) = (await engine.schedules.list(ListSchedulesInput())).schedules
    assert listed.last is not None and listed.last.outcome == "failed"

    work.mkdir()  # and once the spawn can be made, the previous run is cancelled as before
    clock.advance(60)
    await engine.schedules.fire_due(grace_s=30)
    spawned = (await engine.schedules.history("nightly"))[0]
    assert spawned.outcome == "spawned" and spawned.run_id != first.run_id
    assert (await engine.runs.status(StatusInput(run_id=first.run_id))).run.status == RunStatus.CANCELLED


def test_a_callers_argv_is_run_as_given_and_a_prompt_is_expanded_once() -> None:
    values = {"prompt": "say {db}", "task": "say {db}", "db": "/secret/store.db", "run_id": "R1"}
    command = BUILTIN_PROFILES["command"]
    assert launch_argv(command, ["echo", "{db}", "{prompt}", "{run_id}"], values, False) == [
        "echo",
        "{db}",
        "{prompt}",
        "{run_id}",
    ]
    opencode = launch_argv(BUILTIN_PROFILES["opencode"], [], values, False)
    assert opencode[-1] == "say {db}"  # the value is not expanded again
    claude = BUILTIN_PROFILES["claude"]  # Claude Code takes the prompt on stdin, filled in the same way
    assert claude.stdin is not None and render(claude.stdin, values) == "say {db}"


@pytest.mark.processes
async def test_launch_failures_fail_the_run_at_once_and_a_callers_argv_runs_as_given(
    tmp_path: Path, db: str, http_server: Callable[..., str]
) -> None:
    config = write_config(tmp_path)
    http_server(MCP_ORCHESTRATOR_CONFIG=str(config))
    not_executable = tmp_path / "not-executable"
    not_executable.write_text("#!/bin/sh\nexit 0\n")
    no_format = tmp_path / "no-format"
    no_format.write_text("this is not a program\n")
    no_format.chmod(0o755)
    absent = str(tmp_path / "absent")
    async with engine_on(db, config) as engine:
        # What can be seen at spawn is refused there, in the words the run's error would have used.
        for program in (absent, str(not_executable)):
            with pytest.raises(InvalidInput, match="which is not an executable file"):
                await engine.subagents.spawn(SpawnSubagentInput(prompt="p", agent="command", command=[program]))
        args = SpawnSubagentInput(prompt="p", agent="command", command=[str(no_format)], max_attempts=3)
        runs = {(await engine.subagents.spawn(args)).run.run_id: (f"cannot start {str(no_format)!r}", "Exec format")}

        # What changed between spawn and launch (a program removed, made unexecutable; a NUL stored by
        # another version) fails at launch, at once, saying why.
        launch_cases = {
            absent: (f"agent profile 'command' runs {absent!r}", "which is not an executable file"),
            str(not_executable): (f"cannot start {str(not_executable)!r}", "Permission denied"),
            "\x00": ("cannot start 'sleep'", "ValueError: embedded null byte"),
        }
        for program, expected in launch_cases.items():
            args = SpawnSubagentInput(prompt="p", agent="command", command=["sleep", "1"], max_attempts=3)
            run_args, agent, _ = engine.subagents.spawns.prepare(args, None, new_id())
            argv = ["sleep", "1\x00"] if program == "\x00" else [program]
            agent = agent.model_copy(update={"command": argv})
            await engine.store.write(lambda tx, a=agent, r=run_args: transitions.queue_agent(tx, engine.now(), r, a))
            runs[agent.run_id] = expected

        # A caller's own argv runs exactly as given: its braces are not the profile's placeholders.
        echo = ["sh", "-c", 'printf "%s|%s" "$1" "$2"', "sh", "{db}", "{prompt}"]
        verbatim = await engine.subagents.spawn(SpawnSubagentInput(prompt="p", agent="command", command=echo))

        for run_id, (start, reason) in runs.items():
            result = await until(engine, run_id, lambda r: r.run.status.terminal, timeout=20)
            error = result.run.error or {}
            assert result.run.status == RunStatus.FAILED and error.get("type") == "launch_failed", error
            assert start in error["message"] and reason in error["message"], error
            assert "not retried" in error["message"] and error["attempt"] == 1, error
        echoed = await until(engine, verbatim.run.run_id, lambda r: r.run.status.terminal, timeout=20)
        assert echoed.run.status == RunStatus.COMPLETED and echoed.run.output == "{db}|{prompt}", echoed.run


@pytest.mark.processes
async def test_a_slow_git_worktree_does_not_stall_other_clients(
    tmp_path: Path, db: str, http_server: Callable[..., str], private_state_dir: Path
) -> None:
    real_git = shutil.which("git")
    assert real_git is not None
    repo = tmp_path / "repo"
    subprocess.run([real_git, "init", "-q", str(repo)], check=True)
    (repo / "README").write_text("hello\n")
    author = ["-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([real_git, "-C", str(repo), "add", "README"], check=True)
    subprocess.run([real_git, "-C", str(repo), *author, "commit", "-q", "-m", "first"], check=True)
    started, release = tmp_path / "git-started", tmp_path / "git-release"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    git = bin_dir / "git"  # a git that waits until the test lets it go
    git.write_text(
        f'#!/bin/sh\ntouch "{started}"\nwhile [ ! -e "{release}" ]; do sleep 0.02; done\nexec "{real_git}" "$@"\n'
    )
    git.chmod(0o755)
    base = http_server(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    token = http_token(private_state_dir)
    async with http_client(base, token) as spawner, http_client(base, token) as other, anyio.create_task_group() as tg:
        spawned: dict[str, Any] = {}

        async def spawn() -> None:
            arguments = {"prompt": "p", "agent": "command", "command": ["true"], "cwd": str(repo), "worktree": True}
            spawned.update(await call(spawner, "spawn_subagent", **arguments))

        tg.start_soon(spawn)
        try:
            await eventually(started.exists, timeout=20)
            with anyio.fail_after(5):  # the server answers while git is still running
                assert (await call(other, "list_runs"))["runs"] == []
        finally:
            release.touch()
    assert spawned["created"] and Path(spawned["process"]["worktree"], "README").read_text() == "hello\n"
    assert spawned["process"]["branch"] == f"mcp-orchestrator/{spawned['run']['run_id']}"


def test_a_nul_in_a_profile_template_is_a_config_error(tmp_path: Path) -> None:
    from mcp_orchestrator.errors import ConfigError
    from mcp_orchestrator.profiles import load_agents_config

    config = tmp_path / "config.toml"
    config.write_text('[profiles.x]\ncommand = ["agent", "a\\u0000b"]\n')
    with pytest.raises(ConfigError, match=r"holds a NUL character"):
        load_agents_config(config)
    config.write_text('[profiles.x]\ncommand = ["agent"]\nenv = { "A=B" = "1" }\n')
    with pytest.raises(ConfigError, match=r"environment variable name 'A=B'"):
        load_agents_config(config)
