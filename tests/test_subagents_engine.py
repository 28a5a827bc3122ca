"""The sub-agent lifecycle's decisions, without processes: claims, limits, exits, resumes, leases, reaping."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mcp_orchestrator.errors import ConfigError, InvalidInput
from mcp_orchestrator.models import (
    AgentState,
    CancelRunInput,
    FinishRunInput,
    RunStatus,
    SendEventInput,
    SpawnSubagentInput,
    StatusInput,
    WaitForEventInput,
)
from mcp_orchestrator.profiles import BUILTIN_PROFILES, AgentsConfig, load_agents_config, render
from mcp_orchestrator.runtime import Engine

from .support import Clock, lease_holder, open_store

pytestmark = pytest.mark.anyio

SLEEP = ["sleep", "1"]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def engine(db: str, clock: Clock, tmp_path: Path) -> AsyncIterator[Engine]:
    config = AgentsConfig(max_concurrent=3, concurrency_keys={"db": 2}, retry_backoff_s=10)
    async with open_store(db) as store:
        yield Engine(store, workspace=str(tmp_path), clock=clock, agents=config)


async def spawn(engine: Engine, **fields: object) -> str:
    args = SpawnSubagentInput.model_validate({"prompt": "task", "agent": "command", "command": SLEEP, **fields})
    return (await engine.subagents.spawn(args)).run.run_id


async def start(engine: Engine, clock: Clock, run_id: str, attempt: int) -> None:
    verdict = await engine.subagents.started(
        run_id, attempt, pid=4242, pgid=4243, host="this-host", at=clock(), log_dir="/nowhere"
    )
    assert verdict == "continue"


async def run_status(engine: Engine, run_id: str) -> tuple[RunStatus, AgentState]:
    result = await engine.runs.status(StatusInput(run_id=run_id))
    assert result.process is not None
    return result.run.status, result.process.state


async def test_claims_respect_the_global_profile_and_key_limits(engine: Engine) -> None:
    keyed = [await spawn(engine, concurrency_key="db") for _ in range(3)]
    others = [await spawn(engine) for _ in range(3)]
    claimed = await engine.subagents.claim()
    ids = [launch.agent.run_id for launch in claimed]
    assert ids == [*keyed[:2], others[0]]  # oldest first; the key's limit of 2 skips the third keyed one
    assert all(launch.agent.state == AgentState.STARTING and launch.agent.attempt == 1 for launch in claimed)
    generation = engine.store.generation
    assert await engine.subagents.claim() == []  # three are starting: the global limit of 3 is reached
    assert engine.store.generation == generation  # and nothing was written (a write would wake the supervisor)
    assert claimed[0].prompt.startswith("You are a background sub-agent") and claimed[0].prompt.endswith("task")


async def test_a_profile_limit_and_a_cancelled_queued_agent(engine: Engine) -> None:
    engine.subagents.config.profiles["command"] = BUILTIN_PROFILES["command"].model_copy(update={"max_concurrent": 1})
    first, second, third = [await spawn(engine) for _ in range(3)]
    await engine.runs.cancel_run(CancelRunInput(run_id=second))
    assert [launch.agent.run_id for launch in await engine.subagents.claim()] == [first]
    assert await run_status(engine, second) == (RunStatus.CANCELLED, AgentState.DONE)  # retired, never started
    assert await engine.subagents.claim() == []  # the profile allows one at a time; third waits
    assert (await run_status(engine, third))[1] == AgentState.QUEUED


async def test_exit_zero_completes_with_the_output_and_a_crash_retries_with_backoff(
    engine: Engine, clock: Clock
) -> None:
    done, flaky = await spawn(engine), await spawn(engine, max_attempts=2)
    await engine.subagents.claim()
    await start(engine, clock, done, 1)
    await start(engine, clock, flaky, 1)
    assert (await engine.runs.status(StatusInput(run_id=done))).run.status == RunStatus.RUNNING

    await engine.subagents.exited(done, 1, 0, output="all good")
    result = await engine.runs.status(StatusInput(run_id=done))
    assert (result.run.status, result.run.output) == (RunStatus.COMPLETED, "all good")

    await engine.subagents.exited(flaky, 1, 2, message="exited with code 2: boom")
    assert await run_status(engine, flaky) == (RunStatus.QUEUED, AgentState.QUEUED)
    assert await engine.subagents.claim() == []  # backing off
    clock.advance(10)
    (retry,) = await engine.subagents.claim()
    assert retry.agent.attempt == 2 and "exited with code 2" in retry.prompt
    await start(engine, clock, flaky, 2)
    await engine.subagents.exited(flaky, 1, 0)  # a stale report of the first attempt changes nothing
    await engine.subagents.exited(flaky, 2, None, how="lost", message="runner gone")
    result = await engine.runs.status(StatusInput(run_id=flaky, journal_limit=100))
    assert result.run.status == RunStatus.FAILED
    assert result.run.error == {
        "type": "lost",
        "exit_code": None,
        "attempt": 2,
        "message": "runner gone (failure 2 of 2 allowed)",
    }
    kinds = [entry.kind for entry in result.journal]
    assert kinds.count("process_started") == 2 and kinds.count("attempt_failed") == 1


async def test_a_waiting_agent_goes_idle_and_is_resumed_when_its_event_arrives(engine: Engine, clock: Clock) -> None:
    run_id = await spawn(engine)
    await engine.subagents.claim()
    await start(engine, clock, run_id, 1)
    await engine.events.wait_for_event(WaitForEventInput(run_id=run_id, step="approval", event="approved", block_s=0))
    await engine.subagents.exited(run_id, 1, 0, session_id="session-1")
    assert await run_status(engine, run_id) == (RunStatus.WAITING, AgentState.IDLE)
    assert await engine.subagents.claim() == []  # nothing to do until the event

    clock.advance(1)
    await engine.events.send_event(SendEventInput(name="approved", data={"by": "ana"}))
    (resumed,) = await engine.subagents.claim()
    assert resumed.agent.attempt == 2 and resumed.agent.session_id == "session-1"
    assert "Your wait 'approval' ended" in resumed.prompt and '"by": "ana"' in resumed.prompt
    assert not resumed.use_session  # the command profile has no resume template: the task comes again
    assert "Task:\ntask" in resumed.prompt


async def test_an_agent_that_finished_its_run_is_stopped_if_it_lingers(engine: Engine, clock: Clock) -> None:
    run_id = await spawn(engine, timeout_s=100)
    await engine.subagents.claim()
    await start(engine, clock, run_id, 1)
    assert await engine.subagents.heartbeat(run_id, 1) == "continue"
    await engine.runs.finish_run(FinishRunInput(run_id=run_id, output="done"))
    assert await engine.subagents.heartbeat(run_id, 1) == "continue"  # time to exit by itself
    clock.advance(31)
    assert await engine.subagents.heartbeat(run_id, 1) == "stop"
    await engine.subagents.exited(run_id, 1, -15, how="stopped")
    result = await engine.runs.status(StatusInput(run_id=run_id))
    assert (result.run.status, result.run.output) == (RunStatus.COMPLETED, "done")  # the agent's own result stays


async def test_heartbeats_say_timeout_and_stop(engine: Engine, clock: Clock) -> None:
    slow, cancelled = await spawn(engine, timeout_s=5), await spawn(engine)
    await engine.subagents.claim()
    await start(engine, clock, slow, 1)
    await start(engine, clock, cancelled, 1)
    clock.advance(5)
    assert await engine.subagents.heartbeat(slow, 1) == "timeout"
    await engine.runs.cancel_run(CancelRunInput(run_id=cancelled))
    assert await engine.subagents.heartbeat(cancelled, 1) == "stop"
    assert await engine.subagents.heartbeat(cancelled, 7) == "stop"  # not the current attempt


async def test_reaping_finds_silent_and_dead_runners(engine: Engine, clock: Clock) -> None:
    silent, dead, fine = [await spawn(engine, max_attempts=2) for _ in range(3)]
    await engine.subagents.claim()
    for run_id in (silent, dead, fine):
        await start(engine, clock, run_id, 1)
    assert await engine.subagents.reap("this-host", lambda agent: True) == []
    clock.advance(engine.subagents.config.heartbeat_timeout_s + 1)
    await engine.subagents.heartbeat(dead, 1)
    await engine.subagents.heartbeat(fine, 1)
    reaped = await engine.subagents.reap("this-host", lambda agent: agent.run_id != dead)
    assert sorted(agent.run_id for agent in reaped) == sorted([silent, dead])
    assert (await run_status(engine, silent))[1] == AgentState.QUEUED  # to be retried after backoff
    assert (await run_status(engine, fine))[1] == AgentState.LIVE
    assert await engine.subagents.reap("another-host", lambda agent: False) == []  # pids of other hosts: unknown


async def test_one_lease_holder_until_it_expires_or_is_released(engine: Engine, clock: Clock) -> None:
    agents = engine.subagents
    assert await agents.hold_lease("a")
    assert not await agents.hold_lease("b")
    assert await agents.hold_lease("a")  # renewal
    clock.advance(agents.config.lease_ttl_s + 0.1)
    assert await agents.hold_lease("b")  # a stopped renewing: taken over
    assert not await agents.hold_lease("a")
    await agents.release_lease("b")
    assert await lease_holder(engine) is None
    assert await agents.hold_lease("a")


async def test_spawn_is_idempotent_by_key_and_checks_its_input(engine: Engine, tmp_path: Path) -> None:
    first = await engine.subagents.spawn(SpawnSubagentInput(prompt="p", agent="command", command=SLEEP, key="k"))
    again = await engine.subagents.spawn(SpawnSubagentInput(prompt="q", agent="command", command=SLEEP, key="k"))
    assert first.created and not again.created and again.run.run_id == first.run.run_id
    with pytest.raises(
        InvalidInput, match="unknown agent profile 'nope'; known: claude, codex, command, gemini, opencode"
    ):
        await engine.subagents.spawn(SpawnSubagentInput(prompt="p", agent="nope"))
    with pytest.raises(InvalidInput, match="command is for agent='command' only"):
        await engine.subagents.spawn(SpawnSubagentInput(prompt="p", agent="claude", command=["x"]))
    with pytest.raises(InvalidInput, match="parent_run_id 'missing' names no run"):
        await engine.subagents.spawn(
            SpawnSubagentInput(prompt="p", agent="command", command=SLEEP, parent_run_id="missing")
        )


def test_profiles_render_and_the_config_file_changes_them(tmp_path: Path) -> None:
    assert render("--x={run_id} {json: 1} {unknown}", {"run_id": "r1"}) == "--x=r1 {json: 1} {unknown}"
    config_file = tmp_path / "config.toml"
    config_file.write_text(
        'default_agent = "mine"\n[limits]\nmax_concurrent = 8\n[limits.concurrency_keys]\nrepo = 3\n'
        '[profiles.claude]\nextra_args = ["--model", "opus"]\n'
        '[profiles.mine]\ncommand = ["my-agent", "--task", "{task}"]\nmax_concurrent = 2\n'
    )
    config = load_agents_config(config_file)
    assert config.default_agent == "mine" and config.max_concurrent == 8 and config.key_limit("repo") == 3
    claude = config.profile("claude")
    assert claude.extra_args == ["--model", "opus"] and claude.command == BUILTIN_PROFILES["claude"].command
    assert config.profile("mine").max_concurrent == 2
    assert load_agents_config(tmp_path / "absent.toml") == AgentsConfig()

    config_file.write_text("[profiles.command]\nenabled = false\n")
    locked = load_agents_config(config_file)
    with pytest.raises(InvalidInput, match="agent profile 'command' is disabled in the config file; use one of claude"):
        locked.profile("command")

    for text, problem in [
        ("[profiles.x]\ncommand = ['a', '{promt}']\n", "unknown placeholder(s) {promt}"),
        ("[limits]\nmax_concurrent = 0\n", "max_concurrent"),
        ("[limits.concurrency_keys]\nrepo = 0\n", "a limit is a whole number of 1 or more"),
        ('default_agent = "ghost"\n', "default_agent 'ghost' is not a profile"),
        ("[profiles.x]\ncommand = ['a']\nshell = true\n", "shell"),
        ("not toml [", "cannot read the config file"),
    ]:
        config_file.write_text(text)
        with pytest.raises(ConfigError, match=problem.replace("{", r"\{").replace("(", r"\(").replace(")", r"\)")):
            load_agents_config(config_file)


async def test_an_agent_whose_wait_ended_as_it_exited_is_resumed_not_completed(engine: Engine, clock: Clock) -> None:
    run_id = await spawn(engine)
    await engine.subagents.claim()
    await start(engine, clock, run_id, 1)
    await engine.events.wait_for_event(WaitForEventInput(run_id=run_id, step="ci", event="ci.done", block_s=0))
    await engine.events.send_event(SendEventInput(name="ci.done", data={"green": True}))  # before the agent exits
    await engine.subagents.exited(run_id, 1, 0, output="bye")
    assert await run_status(engine, run_id) == (RunStatus.RUNNING, AgentState.QUEUED)  # not completed with "bye"
    (resumed,) = await engine.subagents.claim()
    assert resumed.agent.attempt == 2 and "Your wait 'ci' ended" in resumed.prompt
