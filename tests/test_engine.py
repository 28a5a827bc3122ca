"""The primitives' semantics, through the engine on each real store (a SQLite file, a PostgreSQL schema)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from mcp_orchestrator.errors import InvalidInput, KeyConflict, RunNotFound, RunTerminal, StepFailed
from mcp_orchestrator.models import (
    CancelRunInput,
    CheckpointInput,
    FinishRunInput,
    ListRunsInput,
    RetryPolicy,
    RunStatus,
    StartRunInput,
    StatusInput,
    StepStatus,
)
from mcp_orchestrator.runtime import Engine

pytestmark = pytest.mark.anyio


async def start(engine: Engine, name: str = "task", **fields) -> str:
    result = await engine.runs.start_run(StartRunInput(name=name, **fields))
    return result.run.run_id


async def cp(engine: Engine, run_id: str, step: str, **fields):
    return await engine.runs.checkpoint(CheckpointInput(run_id=run_id, step=step, **fields))


async def journal_kinds(engine: Engine, run_id: str) -> list[str]:
    status = await engine.runs.status(StatusInput(run_id=run_id, journal_limit=1000))
    return [entry.kind for entry in status.journal]


# Runs.


async def test_start_run_records_workspace_labels_and_journal(engine: Engine) -> None:
    result = await engine.runs.start_run(StartRunInput(name="fix", input={"issue": 42}, labels={"repo": "api"}))
    assert result.created and result.steps == []
    run = result.run
    assert (run.status, run.input, run.labels, run.workspace) == (
        RunStatus.RUNNING,
        {"issue": 42},
        {"repo": "api"},
        "/projects/demo",
    )
    assert await journal_kinds(engine, run.run_id) == ["run_created"]


async def test_same_key_returns_the_same_run_with_its_steps(engine: Engine) -> None:
    first = await engine.runs.start_run(StartRunInput(name="fix", key="fix-42"))
    await cp(engine, first.run.run_id, "plan", output="the plan")
    again = await engine.runs.start_run(StartRunInput(name="fix", key="fix-42", input={"ignored": True}))
    assert not again.created
    assert again.run.run_id == first.run.run_id and again.run.input is None
    assert [(s.step, s.status, s.output) for s in again.steps] == [("plan", StepStatus.COMPLETED, "the plan")]


async def test_key_of_another_name_is_a_conflict(engine: Engine) -> None:
    await start(engine, "fix", key="k")
    with pytest.raises(KeyConflict, match="already belongs to run"):
        await start(engine, "deploy", key="k")


async def test_unknown_parent_is_rejected(engine: Engine) -> None:
    with pytest.raises(InvalidInput, match="parent_run_id 'nope' names no run"):
        await start(engine, parent_run_id="nope")


async def test_run_ids_sort_by_creation(engine: Engine) -> None:
    ids = [await start(engine) for _ in range(20)]
    assert ids == sorted(ids)


async def test_finish_run_completes_once_and_replays(engine: Engine) -> None:
    run_id = await start(engine)
    done = await engine.runs.finish_run(FinishRunInput(run_id=run_id, output={"pr": 7}))
    assert (done.run.status, done.run.output, done.replayed) == (RunStatus.COMPLETED, {"pr": 7}, False)
    assert done.run.ended_at is not None
    again = await engine.runs.finish_run(FinishRunInput(run_id=run_id, output={"pr": 8}))
    assert (again.replayed, again.run.output) == (True, {"pr": 7})
    with pytest.raises(RunTerminal, match="is completed"):
        await engine.runs.finish_run(FinishRunInput(run_id=run_id, error="changed my mind"))


async def test_finish_with_error_fails_the_run(engine: Engine) -> None:
    run_id = await start(engine)
    result = await engine.runs.finish_run(FinishRunInput(run_id=run_id, error={"message": "tests fail"}))
    assert (result.run.status, result.run.error) == (RunStatus.FAILED, {"message": "tests fail"})
    assert (await journal_kinds(engine, run_id))[-1] == "run_failed"


async def test_cancel_cascades_to_live_descendants_only(engine: Engine) -> None:
    root = await start(engine, "root")
    child = await start(engine, "child", parent_run_id=root)
    done_child = await start(engine, "done-child", parent_run_id=root)
    await engine.runs.finish_run(FinishRunInput(run_id=done_child, output=1))
    grandchild = await start(engine, "grandchild", parent_run_id=child)
    other = await start(engine, "unrelated")

    result = await engine.runs.cancel_run(CancelRunInput(run_id=root, reason="superseded"))

    assert result.run.status == RunStatus.CANCELLED
    assert sorted(result.cancelled_run_ids) == sorted([root, child, grandchild])
    statuses = {
        r: (await engine.runs.status(StatusInput(run_id=r))).run.status for r in (child, grandchild, done_child, other)
    }
    assert statuses == {
        child: RunStatus.CANCELLED,
        grandchild: RunStatus.CANCELLED,
        done_child: RunStatus.COMPLETED,
        other: RunStatus.RUNNING,
    }
    grand = await engine.runs.status(StatusInput(run_id=grandchild))
    assert grand.run.error == {"reason": "superseded", "cancelled_with": root}
    again = await engine.runs.cancel_run(CancelRunInput(run_id=root))
    assert again.cancelled_run_ids == []


async def test_status_shows_steps_children_and_journal_in_order(engine: Engine) -> None:
    root = await start(engine, "root")
    child = await start(engine, "child", parent_run_id=root)
    await cp(engine, root, "a", output=1)
    await cp(engine, root, "b", begin=True)
    status = await engine.runs.status(StatusInput(run_id=root))
    assert [s.step for s in status.steps] == ["a", "b"]
    assert [c.run_id for c in status.children] == [child]
    assert [j.kind for j in status.journal] == ["run_created", "step_completed", "step_started"]
    assert [j.seq for j in status.journal] == sorted(j.seq for j in status.journal)
    assert status.run.updated_at == status.journal[-1].at


async def test_unknown_run_is_named_in_the_error(engine: Engine) -> None:
    with pytest.raises(RunNotFound, match="no run has id 'missing'"):
        await engine.runs.status(StatusInput(run_id="missing"))
    with pytest.raises(RunNotFound):
        await cp(engine, "missing", "a")


# Steps.


async def test_completed_step_is_memoized(engine: Engine) -> None:
    run_id = await start(engine)
    first = await cp(engine, run_id, "fetch", output={"n": 1})
    assert (first.replayed, first.step.status, first.step.attempt) == (False, StepStatus.COMPLETED, 1)
    again = await cp(engine, run_id, "fetch", output={"n": 2})
    assert (again.replayed, again.step.output) == (True, {"n": 1})
    begun = await cp(engine, run_id, "fetch", begin=True)
    assert (begun.replayed, begun.step.output) == (True, {"n": 1})
    failed = await cp(engine, run_id, "fetch", error="late failure")
    assert (failed.replayed, failed.step.status) == (True, StepStatus.COMPLETED)
    assert (await journal_kinds(engine, run_id)).count("step_completed") == 1


async def test_racing_completions_of_one_step_store_exactly_one(engine: Engine) -> None:
    run_id = await start(engine)
    results = await asyncio.gather(*(cp(engine, run_id, "deploy", output={"by": i}) for i in range(20)))
    winners = [r for r in results if not r.replayed]
    assert len(winners) == 1
    assert {json.dumps(r.step.output) for r in results} == {json.dumps(winners[0].step.output)}
    assert (await journal_kinds(engine, run_id)).count("step_completed") == 1


async def test_begin_after_a_crash_reports_unknown_outcome(engine: Engine) -> None:
    run_id = await start(engine)
    first = await cp(engine, run_id, "deploy", begin=True)
    assert (first.step.status, first.step.attempt, first.previous_outcome) == (StepStatus.STARTED, 1, None)
    # The agent crashed mid-step; a new session asks again.
    second = await cp(engine, run_id, "deploy", begin=True)
    assert (second.step.attempt, second.previous_outcome, second.replayed) == (2, "unknown", False)
    done = await cp(engine, run_id, "deploy", output="ok")
    assert (done.step.status, done.step.attempt) == (StepStatus.COMPLETED, 2)
    assert await journal_kinds(engine, run_id) == [
        "run_created",
        "step_started",
        "attempt_unknown",
        "step_started",
        "step_completed",
    ]


async def test_failed_attempts_back_off_then_exhaust(engine: Engine) -> None:
    policy = RetryPolicy(max_attempts=3, initial_backoff_s=2, backoff_coefficient=3, max_backoff_s=5)
    run_id = await start(engine, retry=policy)
    first = await cp(engine, run_id, "flaky", error="timeout")
    assert (first.retry, first.step.status, first.step.attempt) == (True, StepStatus.RETRYING, 1)
    assert first.retry_at == first.step.ended_at + timedelta(seconds=2)
    begun = await cp(engine, run_id, "flaky", begin=True)
    assert (begun.previous_outcome, begun.step.attempt) == ("failed", 2)
    second = await cp(engine, run_id, "flaky", error="timeout again")
    assert second.step.attempt == 2
    assert second.retry_at == second.step.ended_at + timedelta(seconds=5)  # 2*3=6, capped at 5
    third = await cp(engine, run_id, "flaky", error="still")
    assert (third.retry, third.retry_at, third.step.status, third.step.attempt) == (False, None, StepStatus.FAILED, 3)
    assert third.step.error == "still"
    with pytest.raises(StepFailed, match="failed for good after 3 attempt"):
        await cp(engine, run_id, "flaky", begin=True)
    with pytest.raises(StepFailed):
        await cp(engine, run_id, "flaky", output="too late")
    repeated = await cp(engine, run_id, "flaky", error="still")
    assert (repeated.replayed, repeated.retry) == (True, False)


async def test_non_retryable_error_fails_the_step_at_once(engine: Engine) -> None:
    run_id = await start(engine)
    result = await cp(engine, run_id, "auth", error="401", retryable=False)
    assert (result.retry, result.step.status, result.step.attempt) == (False, StepStatus.FAILED, 1)
    kinds = await journal_kinds(engine, run_id)
    assert kinds[-1] == "step_failed"
    status = await engine.runs.status(StatusInput(run_id=run_id))
    assert status.run.status == RunStatus.RUNNING  # the agent decides what a failed step means for the run


async def test_terminal_run_takes_no_new_checkpoints_but_replays(engine: Engine) -> None:
    run_id = await start(engine)
    await cp(engine, run_id, "a", output="A")
    await engine.runs.cancel_run(CancelRunInput(run_id=run_id))
    with pytest.raises(RunTerminal, match=f"run '{run_id}' is cancelled"):
        await cp(engine, run_id, "b", output="B")
    replay = await cp(engine, run_id, "a", begin=True)
    assert (replay.replayed, replay.step.output) == (True, "A")


async def test_overdue_run_fails_with_timeout_when_next_touched(engine: Engine) -> None:
    clock = [datetime(2026, 1, 1, tzinfo=UTC)]
    engine._clock = lambda: clock[0]
    run_id = await start(engine, timeout_s=60)
    await cp(engine, run_id, "a", output=1)
    clock[0] += timedelta(seconds=61)
    with pytest.raises(RunTerminal, match="timed out"):
        await cp(engine, run_id, "b", output=2)
    status = await engine.runs.status(StatusInput(run_id=run_id))
    assert status.run.status == RunStatus.FAILED and status.run.error["type"] == "timeout"
    assert [s.step for s in status.steps] == ["a"]


async def test_resuming_an_overdue_run_by_key_shows_it_timed_out(engine: Engine) -> None:
    clock = [datetime(2026, 1, 1, tzinfo=UTC)]
    engine._clock = lambda: clock[0]
    await start(engine, key="k", timeout_s=5)
    clock[0] += timedelta(seconds=6)
    again = await engine.runs.start_run(StartRunInput(name="task", key="k"))
    assert not again.created and again.run.status == RunStatus.FAILED and again.run.error["type"] == "timeout"


async def test_overdue_runs_are_failed_before_listing(engine: Engine) -> None:
    clock = [datetime(2026, 1, 1, tzinfo=UTC)]
    engine._clock = lambda: clock[0]
    slow = await start(engine, "slow", timeout_s=10)
    fine = await start(engine, "fine")
    clock[0] += timedelta(seconds=11)
    running = await engine.runs.list_runs(ListRunsInput(status=RunStatus.RUNNING))
    assert [r.run_id for r in running.runs] == [fine]
    failed = await engine.runs.list_runs(ListRunsInput(status=RunStatus.FAILED))
    assert [r.run_id for r in failed.runs] == [slow]


# Limits.


async def test_payload_over_the_limit_is_rejected_and_nothing_changes(engine: Engine) -> None:
    engine.max_payload_bytes = 1024
    run_id = await start(engine)
    with pytest.raises(InvalidInput, match=r"output is 2\d\d\d bytes, over the limit of 1024"):
        await cp(engine, run_id, "big", output="x" * 2000)
    with pytest.raises(InvalidInput, match="input is"):
        await start(engine, input=["y" * 2000])
    status = await engine.runs.status(StatusInput(run_id=run_id))
    assert status.steps == [] and await journal_kinds(engine, run_id) == ["run_created"]


async def test_nan_is_not_json(engine: Engine) -> None:
    run_id = await start(engine)
    with pytest.raises(ValidationError, match="holds nan, which JSON cannot carry"):
        await cp(engine, run_id, "x", output={"v": float("nan")})
    with pytest.raises(InvalidInput, match="not plain JSON"):  # a value built past the model is still refused
        await engine.runs.checkpoint(CheckpointInput.model_construct(run_id=run_id, step="x", output=float("inf")))


# Listing.


async def test_list_runs_filters_and_pages(engine: Engine) -> None:
    root = await start(engine, "root", labels={"team": "core"})
    children = [
        await start(engine, "child", parent_run_id=root, labels={"team": "core", "n": str(i)}) for i in range(5)
    ]
    other = await start(engine, "other", workspace="/elsewhere")
    await engine.runs.finish_run(FinishRunInput(run_id=children[0], output=None))

    async def ids(**query) -> list[str]:
        return [r.run_id for r in (await engine.runs.list_runs(ListRunsInput(**query))).runs]

    assert await ids(parent_run_id=root) == children[::-1]
    assert await ids(name="root") == [root]
    assert await ids(label="team=core") == [*children[::-1], root]
    assert await ids(label=["team=core", "n"]) == children[::-1]
    assert await ids(label="n=3") == [children[3]]
    assert await ids(workspace="/elsewhere") == [other]
    assert await ids(status=RunStatus.COMPLETED) == [children[0]]
    assert await ids(status=[RunStatus.COMPLETED, RunStatus.RUNNING], name="child") == children[::-1]

    seen, cursor = [], None
    while True:
        page = await engine.runs.list_runs(ListRunsInput(limit=3, cursor=cursor))
        seen += [r.run_id for r in page.runs]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [other, *children[::-1], root]

    later = (await engine.runs.status(StatusInput(run_id=other))).run.created_at
    assert await ids(since=later) == [other]
