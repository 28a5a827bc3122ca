"""Fan-in with wait_for_runs: durable waits for other runs to end, and plain watching."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import anyio
import pytest
from pydantic import ValidationError

from mcp_orchestrator.errors import InvalidInput, RunNotFound
from mcp_orchestrator.models import (
    CancelRunInput,
    FinishRunInput,
    RunStatus,
    StartRunInput,
    StatusInput,
    WaitForRunsInput,
)
from mcp_orchestrator.runtime import Engine

from .support import blocking_noticed, eventually, has_wait, open_store

pytestmark = pytest.mark.anyio


async def start(engine: Engine, name: str, parent: str | None = None) -> str:
    return (await engine.runs.start_run(StartRunInput(name=name, parent_run_id=parent))).run.run_id


async def finish(engine: Engine, run_id: str, output) -> None:
    await engine.runs.finish_run(FinishRunInput(run_id=run_id, output=output))


async def fan_in(engine: Engine, run_ids: list[str], **fields):
    return await engine.events.wait_for_runs(WaitForRunsInput(run_ids=run_ids, **{"block_s": 0, **fields}))


async def test_a_durable_fan_in_ends_when_every_child_has_ended(engine: Engine) -> None:
    parent = await start(engine, "planner")
    children = [await start(engine, f"worker-{i}", parent) for i in range(3)]
    first = await fan_in(engine, children, run_id=parent, step="collect")
    assert first.status == "waiting" and first.step.kind == "runs"
    assert (await engine.runs.status(StatusInput(run_id=parent))).run.status == RunStatus.WAITING

    await finish(engine, children[0], {"n": 0})
    await finish(engine, children[1], {"n": 1})
    assert (await fan_in(engine, children, run_id=parent, step="collect")).status == "waiting"
    await engine.runs.cancel_run(CancelRunInput(run_id=children[2], reason="not needed"))  # cancelled counts as ended

    done = await fan_in(engine, children, run_id=parent, step="collect")
    assert done.status == "done" and done.step.output["ended"] == children
    assert [r.output for r in done.runs[:2]] == [{"n": 0}, {"n": 1}] and done.runs[2].status == RunStatus.CANCELLED
    status = await engine.runs.status(StatusInput(run_id=parent))
    assert status.run.status == RunStatus.RUNNING and status.waits == []
    assert [j.kind for j in status.journal][-2:] == ["waiting", "runs_ended"]
    again = await fan_in(engine, children, run_id=parent, step="collect")
    assert again.step == done.step, "a finished fan-in is memoized"


async def test_any_ends_with_the_first_run_to_end(engine: Engine) -> None:
    parent = await start(engine, "racer")
    children = [await start(engine, f"try-{i}", parent) for i in range(3)]
    await fan_in(engine, children, run_id=parent, step="first", mode="any")
    await finish(engine, children[1], "winner")
    result = await fan_in(engine, children, run_id=parent, step="first", mode="any")
    assert result.status == "done" and result.step.output["ended"] == [children[1]]


async def test_runs_that_already_ended_satisfy_the_wait_at_once(engine: Engine) -> None:
    parent = await start(engine, "late")
    child = await start(engine, "quick", parent)
    await finish(engine, child, 1)
    assert (await fan_in(engine, [child], run_id=parent, step="s")).status == "done"


async def test_a_durable_fan_in_times_out(engine: Engine) -> None:
    clock = [datetime(2026, 1, 1, tzinfo=UTC)]
    engine._clock = lambda: clock[0]
    parent = await start(engine, "impatient")
    child = await start(engine, "slow", parent)
    await fan_in(engine, [child], run_id=parent, step="s", timeout_s=30)
    clock[0] += timedelta(seconds=31)
    assert await engine.events.fire_due_waits() == 1
    result = await fan_in(engine, [child], run_id=parent, step="s")
    assert result.status == "timed_out" and result.runs[0].status == RunStatus.RUNNING
    await finish(engine, child, "too late")
    assert (await fan_in(engine, [child], run_id=parent, step="s")).status == "timed_out"


async def test_watching_without_a_step_blocks_until_a_run_ends(engine: Engine) -> None:
    child = await start(engine, "watched")
    assert (await fan_in(engine, [child])).status == "waiting"
    assert (await fan_in(engine, [child], block_s=5, timeout_s=0.2)).status == "timed_out"
    results = {}

    async def watch() -> None:
        results["r"] = await fan_in(engine, [child], block_s=20)

    with blocking_noticed(engine.store) as blocked:
        async with anyio.create_task_group() as group:
            group.start_soon(watch)
            await blocked.wait()
            await finish(engine, child, "ok")
    assert results["r"].status == "done" and results["r"].runs[0].output == "ok"


async def test_a_fan_in_is_woken_by_a_run_ending_in_another_process(db: str) -> None:
    async with open_store(db) as one, open_store(db) as two:
        waiter, worker = Engine(one), Engine(two)
        parent = await start(waiter, "parent")
        child = await start(waiter, "child", parent)
        results = {}

        async def collect() -> None:
            results["r"] = await fan_in(waiter, [child], run_id=parent, step="collect", block_s=20)

        async with anyio.create_task_group() as group:
            group.start_soon(collect)
            await eventually(lambda: has_wait(waiter, parent, "collect"))
            await finish(worker, child, {"done": True})
        assert results["r"].status == "done" and results["r"].runs[0].output == {"done": True}


async def test_bad_fan_ins_are_explained(engine: Engine) -> None:
    parent = await start(engine, "p")
    with pytest.raises(RunNotFound, match="'ghost'"):
        await fan_in(engine, ["ghost"], run_id=parent, step="s")
    with pytest.raises(InvalidInput, match="cannot wait for itself"):
        await fan_in(engine, [parent], run_id=parent, step="self")
    with pytest.raises(ValidationError, match="run_id and step together"):
        WaitForRunsInput(run_ids=[parent], run_id=parent)
    with pytest.raises(ValidationError):
        WaitForRunsInput(run_ids=[])
