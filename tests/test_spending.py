"""What sub-agents spend, do and are told, without processes: usage rolled up a run's tree, activity capped,
budgets that pause and resume, messages queued and delivered, and the silence policy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mcp_orchestrator.errors import InvalidInput, NotAllowed
from mcp_orchestrator.models import (
    Activity,
    AgentState,
    FinishRunInput,
    ReadMessagesInput,
    RunStatus,
    SendMessageInput,
    SetBudgetInput,
    SpawnSubagentInput,
    StartRunInput,
    StatusInput,
    StatusResult,
    Usage,
)
from mcp_orchestrator.profiles import BUILTIN_PROFILES, AgentsConfig
from mcp_orchestrator.runtime import Engine

from .support import Clock, open_store

pytestmark = pytest.mark.anyio

# The 'claude' profile's launch, with the test's stand-in for a harness: a program that is always there.
LIVE_PROFILE = BUILTIN_PROFILES["claude"].model_copy(update={"command": ["true"], "resume": ["true", "{session_id}"]})


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def engine(db: str, clock: Clock, tmp_path: Path) -> AsyncIterator[Engine]:
    config = AgentsConfig(max_concurrent=10, activity_max=10, silent_after_s=60)
    config.profiles["live"] = LIVE_PROFILE
    async with open_store(db) as store:
        yield Engine(store, workspace=str(tmp_path), clock=clock, agents=config)


async def spawn(engine: Engine, **fields: object) -> str:
    args = SpawnSubagentInput.model_validate({"prompt": "task", "agent": "live", **fields})
    return (await engine.subagents.spawn(args)).run.run_id


async def claim_and_start(engine: Engine, clock: Clock, run_id: str) -> int:
    """Claim what is startable (``run_id`` among it), start every claimed one; the attempt of ``run_id``."""
    attempts = {}
    for launch in await engine.subagents.claim():
        agent = launch.agent
        verdict = await engine.subagents.started(
            agent.run_id, agent.attempt, pid=4242, pgid=4243, host="this-host", at=clock(), log_dir="/nowhere"
        )
        assert verdict == "continue"
        attempts[agent.run_id] = agent.attempt
    return attempts[run_id]


async def status(engine: Engine, run_id: str, **fields: object) -> StatusResult:
    return await engine.runs.status(StatusInput.model_validate({"run_id": run_id, **fields}))


def usage(cost: float, tokens: int = 100, turns: int = 1) -> Usage:
    return Usage(cost_usd=cost, input_tokens=tokens, output_tokens=tokens // 10, turns=turns, model="claude-x")


def entry(summary: str, *, ref: str | None = None, failed: bool | None = None) -> Activity:
    kind = "tool" if ref else "text"
    return Activity(at=datetime(2026, 1, 1, tzinfo=UTC), kind=kind, summary=summary, ref=ref, failed=failed)


async def test_spending_is_summed_up_the_tree_and_never_lowered(engine: Engine, clock: Clock) -> None:
    parent = (await engine.runs.start_run(StartRunInput(name="parent"))).run.run_id
    first, second = [await spawn(engine, parent_run_id=parent) for _ in range(2)]
    grandchild = await spawn(engine, parent_run_id=first)
    await claim_and_start(engine, clock, first)
    attempts = dict.fromkeys((first, second, grandchild), 1)  # all three were claimed and started at once
    await engine.subagents.report(first, attempts[first], usage=usage(0.01, 100))
    await engine.subagents.report(first, attempts[first], usage=usage(0.03, 300, 3))  # grows: 0.02 more
    await engine.subagents.report(first, attempts[first], usage=usage(0.02, 200, 2))  # lower: changes nothing
    await engine.subagents.report(second, attempts[second], usage=usage(0.005, 50))
    await engine.subagents.report(grandchild, attempts[grandchild], usage=usage(0.002, 20))
    top = (await status(engine, parent)).run
    assert top.usage is None  # it has no agent of its own
    assert top.tree_usage.cost_usd == pytest.approx(0.037)
    assert top.tree_usage.input_tokens == 300 + 50 + 20 and top.tree_usage.turns == 5
    middle = (await status(engine, first)).run
    assert middle.usage.cost_usd == pytest.approx(0.03) and middle.usage.turns == 3
    assert middle.tree_usage.cost_usd == pytest.approx(0.032)
    # The exit's final figures are the attempt's; the journal keeps them per attempt.
    await engine.subagents.exited(first, attempts[first], 0, output="ok", usage=usage(0.04, 400, 4))
    done = await status(engine, first, journal_limit=50)
    assert done.run.usage.cost_usd == pytest.approx(0.04)
    (exit_entry,) = [e for e in done.journal if e.kind == "process_exited"]
    assert exit_entry.detail["usage"]["cost_usd"] == pytest.approx(0.04)
    assert (await status(engine, parent)).run.tree_usage.cost_usd == pytest.approx(0.047)


async def test_activity_is_capped_per_run_and_the_dropped_are_counted(engine: Engine, clock: Clock) -> None:
    run_id = await spawn(engine)
    attempt = await claim_and_start(engine, clock, run_id)
    await engine.subagents.report(run_id, attempt, activity=[entry("Bash: npm test", ref="t1")])
    await engine.subagents.report(run_id, attempt, activity=[entry("Bash: npm test", ref="t1", failed=True)])
    for batch in range(3):
        await engine.subagents.report(run_id, attempt, activity=[entry(f"said {batch}-{n}") for n in range(5)])
    await engine.subagents.report(run_id, attempt, activity=[entry("last")], dropped=7)
    result = await status(engine, run_id, activity_limit=4)
    assert [item.summary for item in result.activity] == ["said 2-2", "said 2-3", "said 2-4", "last"]
    assert all(item.attempt == attempt for item in result.activity)
    earlier = await status(engine, run_id, activity_limit=100, activity_cursor=result.activity_cursor)
    assert len(earlier.activity) == 6 and earlier.activity_cursor is None
    # 17 entries written (the tool call once, updated in place), 10 kept, plus 7 the runner dropped.
    assert result.process.activity_dropped == 7 + 7
    with pytest.raises(InvalidInput, match="activity_cursor"):
        await status(engine, run_id, activity_cursor="not-a-cursor")


async def test_a_budget_reached_pauses_the_run_and_raising_it_resumes(engine: Engine, clock: Clock) -> None:
    run_id = await spawn(engine, max_budget_usd=0.05)
    attempt = await claim_and_start(engine, clock, run_id)
    beat = await engine.subagents.report(run_id, attempt, usage=usage(0.06))
    assert beat.verdict == "budget"
    await engine.subagents.exited(run_id, attempt, -15, how="budget", usage=usage(0.06))
    paused = await status(engine, run_id)
    assert paused.run.status == RunStatus.WAITING and paused.process.state == AgentState.IDLE
    (wait,) = paused.waits
    assert wait.kind == "budget"
    assert await engine.subagents.claim() == []  # nothing starts while paused
    raised = await engine.budgets.set_budget(SetBudgetInput(run_id=run_id, max_budget_usd=0.10))
    assert raised.resumed_run_ids == [run_id] and raised.run.budget.max_budget_usd == 0.10
    (launch,) = await engine.subagents.claim()
    assert launch.use_session is False  # no session id was recorded by this stand-in
    assert launch.budget_usd == pytest.approx(0.04)  # what is left
    assert "budget, which has been raised" in launch.prompt


async def test_the_harness_stopping_at_its_turn_cap_pauses_too(engine: Engine, clock: Clock) -> None:
    run_id = await spawn(engine, max_turns=3)
    (launch,) = await engine.subagents.claim()
    assert launch.max_turns == 3
    await engine.subagents.started(run_id, 1, pid=1, pgid=2, host="h", at=clock(), log_dir="/nowhere")
    await engine.subagents.exited(run_id, 1, 1, message="max turns", stopped_by="turns", usage=usage(0.01, turns=3))
    paused = await status(engine, run_id, journal_limit=50)
    assert paused.run.status == RunStatus.WAITING
    assert [e.detail["reason"] for e in paused.journal if e.kind == "budget_reached"] == [
        "budget reached: its max_turns are used up"
    ]
    assert paused.process.failures == 0
    await engine.budgets.set_budget(SetBudgetInput(run_id=run_id, max_turns=5))
    (again,) = await engine.subagents.claim()
    assert again.max_turns == 2


async def test_a_tree_over_its_budget_starts_no_new_sub_agent(engine: Engine, clock: Clock) -> None:
    parent = (await engine.runs.start_run(StartRunInput(name="parent", max_budget_usd=0.05))).run.run_id
    first = await spawn(engine, parent_run_id=parent)
    attempt = await claim_and_start(engine, clock, first)
    await engine.subagents.exited(first, attempt, 0, output="done", usage=usage(0.05))
    second = await spawn(engine, parent_run_id=parent)
    assert await engine.subagents.claim() == []
    held = await status(engine, second)
    assert held.run.status == RunStatus.WAITING and held.waits[0].kind == "budget"
    assert await engine.subagents.claim() == []  # and it stays held, written once
    raised = await engine.budgets.set_budget(SetBudgetInput(run_id=parent, max_budget_usd=0.08))
    assert raised.resumed_run_ids == [second]
    (launch,) = await engine.subagents.claim()
    assert launch.agent.run_id == second and launch.budget_usd == pytest.approx(0.03)


async def test_messages_reach_a_live_agent_a_starting_one_and_an_inbox(engine: Engine, clock: Clock) -> None:
    run_id = await spawn(engine)
    early = await engine.messages.send(SendMessageInput(run_id=run_id, text="also update the changelog"), "cli")
    assert early.message.status == "queued" and "starts" in early.delivery
    (launch,) = await engine.subagents.claim()
    assert launch.prompt.endswith("also update the changelog")  # in the first prompt, delivered to attempt 1
    await engine.subagents.started(run_id, 1, pid=1, pgid=2, host="h", at=clock(), log_dir="/nowhere")
    live = await engine.messages.send(SendMessageInput(run_id=run_id, text="stop touching migrations"), "tool")
    assert "within seconds" in live.delivery
    beat = await engine.subagents.report(run_id, 1, live_input=True)
    assert [m.text for m in beat.messages] == ["stop touching migrations"]
    assert (await engine.subagents.report(run_id, 1)).messages == []  # only a runner with live input gets them
    await engine.subagents.report(run_id, 1, delivered=[live.message.message_id], live_input=True)
    assert (await engine.subagents.report(run_id, 1, live_input=True)).messages == []
    inbox = await engine.messages.send(SendMessageInput(run_id=run_id, text="read me"), "api")
    read = await engine.messages.read(ReadMessagesInput(run_id=run_id))
    assert [(m.message_id, m.how) for m in read.messages] == [(inbox.message.message_id, "inbox")]
    journal = (await status(engine, run_id, journal_limit=100)).journal
    delivered = [e.detail["how"] for e in journal if e.kind == "message_delivered"]
    assert delivered == ["resume", "live", "inbox"]
    activity = (await status(engine, run_id, activity_limit=100)).activity
    assert [a.summary for a in activity if a.kind == "message"][-1] == "message delivered (inbox): read me"


async def test_a_message_left_when_the_run_ends_is_dropped_and_one_to_an_ended_run_refused(
    engine: Engine, clock: Clock
) -> None:
    run_id = await spawn(engine)
    attempt = await claim_and_start(engine, clock, run_id)
    await engine.messages.send(SendMessageInput(run_id=run_id, text="too late"), "cli")
    await engine.runs.finish_run(FinishRunInput(run_id=run_id, output="done"))
    journal = (await status(engine, run_id, journal_limit=100)).journal
    assert [e.kind for e in journal if e.kind.startswith("message_")] == ["message_queued", "message_dropped"]
    assert attempt == 1
    with pytest.raises(InvalidInput, match="has ended"):
        await engine.messages.send(SendMessageInput(run_id=run_id, text="hello?"), "cli")
    plain = (await engine.runs.start_run(StartRunInput(name="no agent"))).run.run_id
    with pytest.raises(InvalidInput, match="not a sub-agent"):
        await engine.messages.send(SendMessageInput(run_id=plain, text="hello?"), "cli")


@pytest.mark.parametrize("policy", ["flag", "restart", "cancel"])
async def test_silence_is_flagged_and_acted_on_by_policy(engine: Engine, clock: Clock, policy: str) -> None:
    engine.subagents.config.on_silent = policy
    run_id = await spawn(engine)
    attempt = await claim_and_start(engine, clock, run_id)
    clock.advance(30)
    await engine.subagents.report(run_id, attempt, activity=[entry("working")], active_at=clock())
    clock.advance(59)
    assert (await engine.subagents.report(run_id, attempt)).verdict == "continue"
    agent = (await status(engine, run_id)).process
    assert engine.subagents.silent_for(agent, clock()) is None
    clock.advance(2)
    agent = (await status(engine, run_id)).process
    assert engine.subagents.silent_for(agent, clock()) == pytest.approx(61)
    verdict = (await engine.subagents.report(run_id, attempt)).verdict
    assert verdict == {"flag": "continue", "restart": "silent", "cancel": "stop"}[policy]
    if policy == "cancel":
        assert (await status(engine, run_id)).run.status == RunStatus.CANCELLED


async def test_a_sub_agent_steers_only_the_runs_below_its_own(engine: Engine, clock: Clock) -> None:
    own = await spawn(engine)
    child = await spawn(engine, parent_run_id=own)
    other = await spawn(engine)
    agents = engine.subagents.config
    as_agent = Engine(engine.store, workspace=engine.workspace, clock=clock, agents=agents, subagent_run_id=own)
    for run_id in (own, other):  # its own budget and a stranger's are not its to raise
        with pytest.raises(NotAllowed, match="not below run"):
            await as_agent.budgets.set_budget(SetBudgetInput(run_id=run_id, max_budget_usd=100))
        with pytest.raises(NotAllowed, match="not below run"):
            await as_agent.messages.send(SendMessageInput(run_id=run_id, text="psst"), "tool")
    raised = await as_agent.budgets.set_budget(SetBudgetInput(run_id=child, max_budget_usd=1))
    assert raised.run.budget is not None and raised.run.budget.max_budget_usd == 1
    sent = await as_agent.messages.send(SendMessageInput(run_id=child, text="focus on the tests"), "tool")
    with pytest.raises(NotAllowed, match="reads only its own messages"):
        await as_agent.messages.read(ReadMessagesInput(run_id=child))  # the child's inbox is the child's
    assert (await engine.messages.queued(child)) == [sent.message]
    assert (await as_agent.messages.read(ReadMessagesInput(run_id=own))).messages == []
