"""Sub-agents end to end: real servers supervise real agent processes on one store (each kind)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from mcp import Client

from mcp_orchestrator.models import AgentState, CancelRunInput, RunStatus, SpawnSubagentInput
from mcp_orchestrator.runtime import Engine

from .subagent_helpers import (
    ended,
    engine_on,
    entries,
    fake_claude_on_path,
    most_at_once,
    pid_gone,
    status,
    until,
    write_config,
)
from .support import call, cli, eventually, http_client, http_token, lease_holder, server_env, stdio_server

pytestmark = [pytest.mark.anyio, pytest.mark.processes]


@pytest.fixture
async def supervised(tmp_path: Path, db: str, http_server: Callable[..., str]) -> AsyncIterator[Engine]:
    """An engine on the test's store, which a running HTTP server supervises with the fake profiles."""
    config = write_config(tmp_path)
    http_server(MCP_ORCHESTRATOR_CONFIG=str(config))
    async with engine_on(db, config) as engine:
        yield engine


def fake_task(**task: Any) -> str:
    return json.dumps(task)


async def test_ten_subagents_fan_in_all_and_any(
    tmp_path: Path, db: str, http_server: Callable[..., str], private_state_dir: Path
) -> None:
    config = write_config(tmp_path)
    base = http_server(MCP_ORCHESTRATOR_CONFIG=str(config))
    async with http_client(base, http_token(private_state_dir)) as client:
        parent = (await call(client, "start_run", name="fan-out"))["run"]["run_id"]
        children = []
        for number in range(10):
            spawned = await call(
                client,
                "spawn_subagent",
                prompt=fake_task(steps=["read", "write"], sleep=0.1 * (number % 3), output=number),
                agent="fake",
                parent_run_id=parent,
                key=f"child-{number}",
                cwd=str(tmp_path),
            )
            assert spawned["created"] and spawned["run"]["status"] == "queued"
            children.append(spawned["run"]["run_id"])
        again = await call(client, "spawn_subagent", prompt="other", agent="fake", key="child-0", cwd=str(tmp_path))
        assert not again["created"] and again["run"]["run_id"] == children[0]

        first = await call(client, "wait_for_runs", run_ids=children, mode="any", block_s=50)
        assert first["status"] == "done"
        assert any(run["status"] == "completed" for run in first["runs"])

        while (everything := await call(client, "wait_for_runs", run_ids=children, run_id=parent, step="collect"))[
            "status"
        ] == "waiting":
            pass
        assert everything["status"] == "done"
        outputs = sorted(run["output"]["output"] for run in everything["runs"])
        assert outputs == list(range(10))
        assert all(run["status"] == "completed" for run in everything["runs"])

        while (child := await call(client, "status", run_id=children[3]))["process"]["state"] != "done":
            await anyio.sleep(0.05)  # the run ended when the agent finished it; its process exits just after
        assert [step["step"] for step in child["steps"]] == ["read", "write"]
        assert child["process"]["state"] == "done" and child["process"]["exit_code"] == 0
        assert child["process"]["attempt"] == 1 and child["process"]["pid"] > 0
        assert "done on attempt 1" in child["log_tail"]["stdout"]
        parent_status = await call(client, "status", run_id=parent)
        assert len(parent_status["children"]) == 10


async def test_limits_hold_per_profile_and_per_concurrency_key(
    tmp_path: Path, db: str, http_server: Callable[..., str]
) -> None:
    config = write_config(tmp_path, extra="[profiles.command]\nmax_concurrent = 3\n", max_concurrent=4)
    http_server(MCP_ORCHESTRATOR_CONFIG=str(config))
    async with engine_on(db, config) as engine:
        sleeper = ["sh", "-c", "sleep 0.4"]
        by_profile = [
            await engine.subagents.spawn(SpawnSubagentInput(prompt=f"p{i}", agent="command", command=sleeper))
            for i in range(8)
        ]
        by_key = [
            await engine.subagents.spawn(
                SpawnSubagentInput(
                    prompt=fake_task(sleep=0.3, output=i),
                    agent="fake",
                    concurrency_key="repo-api",
                    concurrency_limit=2,
                    cwd=str(tmp_path),
                )
            )
            for i in range(5)
        ]
        ids = [spawned.run.run_id for spawned in by_profile + by_key]

        results = [await until(engine, run_id, ended) for run_id in ids]
    failed = [(r.run.status, r.run.error, r.log_tail) for r in results if r.run.status != RunStatus.COMPLETED]
    assert not failed, failed
    profile_journals = [result.journal for result in results[:8]]
    key_journals = [result.journal for result in results[8:]]
    assert most_at_once(profile_journals) == 3  # the profile's limit, reached and never passed
    assert most_at_once(key_journals) == 2  # the key's limit
    assert most_at_once(profile_journals + key_journals) <= 4  # the global limit


async def test_a_command_agent_reads_the_prompt_exactly_as_given(supervised: Engine) -> None:
    """A program is not a model: no preamble on its stdin, and placeholders in the prompt stay as written."""
    prompt = "line one {db} {prompt}\nline two: ünïcode"
    spawned = await supervised.subagents.spawn(SpawnSubagentInput(prompt=prompt, agent="command", command=["cat"]))
    result = await until(supervised, spawned.run.run_id, ended)
    assert result.run.status == RunStatus.COMPLETED
    assert result.run.output == prompt


async def test_timeout_kills_the_process_group_and_crashes_retry_with_backoff(
    tmp_path: Path, supervised: Engine
) -> None:
    engine = supervised
    pid_file = tmp_path / "grandchild.pid"
    spawn = engine.subagents.spawn
    hanging = await spawn(
        SpawnSubagentInput(
            prompt="hang",
            agent="command",
            command=["sh", "-c", f"sleep 300 & echo $! > {pid_file}; wait"],
            timeout_s=1,
            max_attempts=1,
        )
    )
    crashing = await spawn(
        SpawnSubagentInput(prompt=fake_task(crash_attempts=9), agent="fake", max_attempts=3, cwd=str(tmp_path))
    )
    flaky = await spawn(
        SpawnSubagentInput(prompt=fake_task(crash_attempts=1, output="ok"), agent="fake", max_attempts=2)
    )

    hung = await until(engine, hanging.run.run_id, ended)
    assert hung.run.status == RunStatus.FAILED
    assert hung.run.error["type"] == "timed_out"
    assert hung.process is not None and hung.process.pgid is not None
    assert pid_gone(hung.process.pgid)
    assert pid_gone(int(pid_file.read_text()))  # the agent's own child died with its group

    crashed = await until(engine, crashing.run.run_id, ended)
    assert crashed.run.status == RunStatus.FAILED
    assert crashed.run.error["exit_code"] == 3 and "crashing on purpose" in crashed.run.error["message"]
    starts = entries(crashed.journal, "process_started")
    exits = entries(crashed.journal, "process_exited")
    assert [entry.attempt for entry in starts] == [1, 2, 3]
    gaps = [(start.at - exit.at).total_seconds() for exit, start in zip(exits, starts[1:], strict=False)]
    assert gaps[0] >= 0.3 and gaps[1] >= 0.6, gaps  # exponential backoff from retry_backoff_s
    assert len(entries(crashed.journal, "attempt_failed")) == 2

    recovered = await until(engine, flaky.run.run_id, ended)
    assert recovered.run.status == RunStatus.COMPLETED
    assert recovered.run.output == {"output": "ok", "attempt": 2}


async def test_cancel_from_another_process_kills_the_agents_and_cascades(db: str, supervised: Engine) -> None:
    engine = supervised
    parent = await engine.subagents.spawn(
        SpawnSubagentInput(prompt="parent", agent="command", command=["sleep", "300"])
    )
    child = await engine.subagents.spawn(
        SpawnSubagentInput(prompt="child", agent="command", command=["sleep", "300"], parent_run_id=parent.run.run_id)
    )

    async def pgids() -> list[int] | None:
        results = [await status(engine, spawned.run.run_id) for spawned in (parent, child)]
        found = [result.process.pgid for result in results if result.process and result.process.pgid]
        return found if len(found) == 2 else None

    live: list[int] | None = None
    while live is None:
        live = await pgids()
        await anyio.sleep(0.05)
    assert not any(pid_gone(pgid) for pgid in live)

    printed = cli(db, "cancel", parent.run.run_id, "--reason", "not needed")
    assert "cancelled 2 run(s)" in printed.stdout
    await eventually(lambda: all(pid_gone(pgid) for pgid in live), timeout=15)
    for spawned in (parent, child):
        result = await status(engine, spawned.run.run_id)
        assert result.run.status == RunStatus.CANCELLED
        exits = entries((await until(engine, spawned.run.run_id, ended)).journal, "process_exited")
        assert [exit.detail["how"] for exit in exits] == ["stopped"]


async def test_agents_outlive_a_sigkilled_server_and_another_server_takes_over(
    tmp_path: Path, db: str, private_state_dir: Path
) -> None:
    config = write_config(tmp_path)
    env = server_env(MCP_ORCHESTRATOR_CONFIG=str(config))
    command = [sys.executable, "-m", "mcp_orchestrator", "supervise", "--db", db]
    first = subprocess.Popen([*command], env=env, stderr=subprocess.DEVNULL)
    try:
        async with engine_on(db, config) as engine:
            spawned = await engine.subagents.spawn(
                SpawnSubagentInput(prompt=fake_task(sleep=2, steps=["a"], output="survived"), agent="fake")
            )
            run_id = spawned.run.run_id
            await until(engine, run_id, lambda result: result.process.state == AgentState.LIVE)
            holder = await lease_holder(engine)
            assert holder is not None and f":{first.pid}:" in holder
            first.send_signal(signal.SIGKILL)
            first.wait()

            result = await until(engine, run_id, ended)
            assert result.run.status == RunStatus.COMPLETED
            assert result.run.output == {"output": "survived", "attempt": 1}
            assert entries(result.journal, "process_exited")[-1].detail["exit_code"] == 0

            second = subprocess.Popen([*command], env=env, stderr=subprocess.DEVNULL)
            try:
                later = await engine.subagents.spawn(SpawnSubagentInput(prompt=fake_task(output="later"), agent="fake"))
                result = await until(engine, later.run.run_id, ended)
                assert result.run.output == {"output": "later", "attempt": 1}
                holder = await lease_holder(engine)
                assert holder is not None and f":{second.pid}:" in holder
            finally:
                second.terminate()
                second.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()


async def test_runners_forked_by_the_launcher_outlive_it_and_their_sigkilled_supervisor(
    tmp_path: Path, db: str, private_state_dir: Path
) -> None:
    """Once the launcher has imported the engine, it forks the runners; killed, it is started again;
    a supervisor killed takes its launcher along, and the runners live on to record their agents' exits."""
    config = write_config(tmp_path)
    env = server_env(MCP_ORCHESTRATOR_CONFIG=str(config))
    command = [sys.executable, "-m", "mcp_orchestrator", "supervise", "--db", db]
    supervisor = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    try:
        async with engine_on(db, config) as engine:

            async def forked() -> tuple[str, int] | None:
                """A new agent's run and its runner's parent, if that is the launcher (not the supervisor)."""
                spawn = SpawnSubagentInput(prompt="sleep", agent="command", command=["sleep", "2"])
                run_id = (await engine.subagents.spawn(spawn)).run.run_id
                live = await until(engine, run_id, lambda result: result.process.state == AgentState.LIVE)
                assert live.process is not None and live.process.pid is not None
                parent = psutil.Process(live.process.pid).ppid()
                return (run_id, parent) if parent != supervisor.pid else None

            first, launcher = await eventually(forked, timeout=60, interval=0.1)
            os.kill(launcher, signal.SIGKILL)
            second, launcher = await eventually(forked, timeout=60, interval=0.1)
            supervisor.send_signal(signal.SIGKILL)
            supervisor.wait()
            await eventually(lambda: pid_gone(launcher))  # its input ended with its supervisor

            for run_id in (first, second):
                result = await until(engine, run_id, ended)
                assert result.run.status == RunStatus.COMPLETED
                assert [exit.detail["exit_code"] for exit in entries(result.journal, "process_exited")] == [0]
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()


async def test_a_waiting_agent_exits_and_is_resumed_with_its_session_when_the_event_arrives(
    tmp_path: Path, db: str, http_server: Callable[..., str], private_state_dir: Path
) -> None:
    config = write_config(tmp_path)
    fake_claude = fake_claude_on_path(tmp_path)
    base = http_server(MCP_ORCHESTRATOR_CONFIG=str(config), **fake_claude)
    async with http_client(base, http_token(private_state_dir)) as client:
        spawned = await call(
            client, "spawn_subagent", prompt=fake_task(wait="review.done", output="merged"), cwd=str(tmp_path)
        )
        assert spawned["process"]["profile"] == "claude"  # the default agent
        run_id = spawned["run"]["run_id"]

        async def idle() -> dict[str, Any] | None:
            result = await call(client, "status", run_id=run_id)
            return result if result["process"]["state"] == "idle" else None

        waiting = None
        while waiting is None:
            waiting = await idle()
            await anyio.sleep(0.1)
        assert waiting["run"]["status"] == "waiting"
        assert waiting["process"]["session_id"] and waiting["process"]["exit_code"] == 0
        assert pid_gone(waiting["process"]["pgid"])  # waiting holds no process

        await call(client, "send_event", name="review.done", data={"approved": True})
        while (result := await call(client, "status", run_id=run_id))["run"]["status"] != "completed":
            assert result["run"]["status"] not in ("failed", "cancelled"), result["run"]["error"]
            await anyio.sleep(0.1)
    assert result["run"]["output"] == {"output": "merged", "attempt": 2}
    assert [step["step"] for step in result["steps"]] == ["wait", "after-wait"]
    assert result["steps"][1]["output"] == {"approved": True}
    session = json.loads((tmp_path / "sessions" / f"{waiting['process']['session_id']}.json").read_text())
    assert len(session["resumes"]) == 1  # started again with --resume and the same session
    assert "Your wait 'wait' ended" in session["resumes"][0]
    kinds = [entry["kind"] for entry in result["journal"]]
    assert kinds.count("process_started") == 2 and "event_received" in kinds


async def test_bad_spawns_are_refused_with_what_to_fix(tmp_path: Path, db: str) -> None:
    async with Client(stdio_server(db)) as client:

        async def refused(**arguments: Any) -> str:
            result = await client.call_tool("spawn_subagent", arguments)
            assert result.is_error
            return result.content[0].text

        assert "unknown agent profile 'gpt'; known: claude, codex, command, gemini, opencode" in await refused(
            prompt="x", agent="gpt"
        )
        assert "prompt is blank" in await refused(prompt="   ")
        assert "is not an existing directory" in await refused(prompt="x", cwd=str(tmp_path / "nowhere"))
        assert "max_attempts" in await refused(prompt="x", max_attempts=0)
        assert "concurrency_limit" in await refused(prompt="x", concurrency_key="k", concurrency_limit=0)
        assert "command=[" in await refused(prompt="x", agent="command")
        not_a_repository = {"cwd": str(tmp_path), "worktree": True, "agent": "command", "command": ["true"]}
        assert "worktree=true" in await refused(prompt="x", **not_a_repository)
        assert (await call(client, "list_runs"))["runs"] == []

    bad = tmp_path / "bad.toml"
    bad.write_text("[limits]\nmax_concurrent = 0\n")
    printed = cli(db, "agents", "--config", str(bad), check=False)
    assert printed.returncode == 1 and "max_concurrent" in printed.stderr and str(bad) in printed.stderr


async def test_worktree_logs_and_status_from_the_cli(tmp_path: Path, db: str, http_server: Callable[..., str]) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "README").write_text("hello\n")
    subprocess.run([*git, "add", "README"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "first"], check=True)
    config = write_config(tmp_path)
    http_server(MCP_ORCHESTRATOR_CONFIG=str(config))
    script = "pwd; git rev-parse --abbrev-ref HEAD; echo line-$MCP_ORCHESTRATOR_ATTEMPT; sleep 0.5; echo bye"
    printed = subprocess.run(
        [*cli_command("spawn", db), "task", "--agent", "command", "--worktree", "--cwd", str(repo), "--json",
         "--command", "sh", "-c", script],
        capture_output=True, text=True, timeout=60, env=server_env(), check=True,
    )  # fmt: skip
    spawned = json.loads(printed.stdout)
    run_id = spawned["run"]["run_id"]
    tree = spawned["process"]["worktree"]
    assert spawned["process"]["cwd"] == tree and Path(tree, "README").exists()
    assert spawned["process"]["branch"] == f"mcp-orchestrator/{run_id}"
    assert "mcp-orchestrator/" not in subprocess.run([*git, "status", "--short"], capture_output=True, text=True).stdout

    followed = subprocess.run(
        [*cli_command("logs", db), run_id, "--follow"],
        capture_output=True,
        text=True,
        timeout=60,
        env=server_env(),
    )
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout.splitlines() == [tree, f"mcp-orchestrator/{run_id}", "line-1", "bye"]
    shown = cli(db, "status", run_id).stdout
    assert "process:" in shown and "exit 0" in shown and "bye" in shown
    assert "--- attempt 1 started" in cli(db, "logs", run_id, "--stderr").stdout
    assert cli(db, "logs", run_id, "--tail", "1").stdout.strip() == "bye"


def cli_command(command: str, db: str) -> list[str]:
    return [str(Path(sys.executable).with_name("mcp-orchestrator")), command, "--db", db]


def test_the_runner_needs_no_server(tmp_path: Path) -> None:
    """Sanity: the runner is importable on its own and starts nothing heavy before the agent."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import mcp_orchestrator.runner"],
        capture_output=True,
        text=True,
        env={**os.environ},
        check=True,
    )
    assert "pydantic" not in done.stderr and "aiosqlite" not in done.stderr


async def test_a_runner_killed_without_recording_an_exit_is_reaped_and_retried(supervised: Engine) -> None:
    engine = supervised
    spawned = await engine.subagents.spawn(
        SpawnSubagentInput(prompt="long", agent="command", command=["sleep", "300"], max_attempts=2)
    )
    run_id = spawned.run.run_id
    first = (await until(engine, run_id, lambda r: r.process.state == AgentState.LIVE)).process
    assert first is not None and first.pid is not None and first.pgid is not None
    os.kill(first.pid, signal.SIGKILL)  # the runner dies; its agent's group lives on, unwatched

    second = await until(engine, run_id, lambda r: r.process.attempt == 2 and r.process.state == AgentState.LIVE)
    await eventually(lambda: pid_gone(first.pgid), timeout=15)  # the orphaned agent was killed
    exits = entries(second.journal, "process_exited")
    assert [(exit.attempt, exit.detail["how"]) for exit in exits] == [(1, "lost")]
    assert entries(second.journal, "attempt_failed")[0].detail["error"]["type"] == "lost"
    assert second.process is not None and second.process.pgid != first.pgid

    await engine.runs.cancel_run(CancelRunInput(run_id=run_id))
    assert second.process.pgid is not None
    await eventually(lambda: pid_gone(second.process.pgid), timeout=15)
