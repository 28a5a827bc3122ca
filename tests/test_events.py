"""Events, waits and sleeps through the engine, on each real store (one store per process)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import anyio
import pytest

from mcp_orchestrator.errors import InvalidInput, RunTerminal
from mcp_orchestrator.models import (
    CancelRunInput,
    CheckpointInput,
    FinishRunInput,
    RunStatus,
    SendEventInput,
    SleepInput,
    StartRunInput,
    StatusInput,
    StepStatus,
    WaitForEventInput,
)
from mcp_orchestrator.runtime import Engine

from .support import eventually, has_wait, open_store

pytestmark = pytest.mark.anyio


async def start(engine: Engine, name: str = "task") -> str:
    return (await engine.runs.start_run(StartRunInput(name=name))).run.run_id


async def send(engine: Engine, name: str, data=None, id: str | None = None):
    return await engine.events.send_event(SendEventInput(name=name, data=data, id=id))


async def wait(engine: Engine, run_id: str, step: str, event, block_s: float = 0, **fields):
    return await engine.events.wait_for_event(
        WaitForEventInput(run_id=run_id, step=step, event=event, block_s=block_s, **fields)
    )


async def test_an_event_sent_before_the_wait_is_not_missed(engine: Engine) -> None:
    early = await send(engine, "approval", {"ok": True})  # before the run: not for it
    run_id = await start(engine)
    sent = await send(engine, "approval", {"ok": "yes"})  # after the run started, before the wait
    result = await wait(engine, run_id, "approve", "approval")
    assert result.status == "received"
    assert result.event.event_id == sent.event_id != early.event_id
    assert result.event.data == {"ok": "yes"} and result.event.source == "tool"


async def test_waiting_run_is_woken_by_a_matching_event_only(engine: Engine) -> None:
    run_id = await start(engine)
    pending = await wait(engine, run_id, "ci", "ci.finished", match={"data.pr": 42})
    assert pending.status == "waiting" and pending.step.status == StepStatus.WAITING
    status = await engine.runs.status(StatusInput(run_id=run_id))
    assert status.run.status == RunStatus.WAITING
    assert [(w.step, w.events, w.match) for w in status.waits] == [("ci", ["ci.finished"], {"data.pr": 42})]

    other = await send(engine, "ci.finished", {"pr": 7})
    assert other.woken_run_ids == []
    hit = await send(engine, "ci.finished", {"pr": 42, "green": True})
    assert hit.woken_run_ids == [run_id]

    result = await wait(engine, run_id, "ci", "ci.finished", match={"data.pr": 42})
    assert (result.status, result.event.event_id) == ("received", hit.event_id)
    status = await engine.runs.status(StatusInput(run_id=run_id))
    assert status.run.status == RunStatus.RUNNING and status.waits == []
    kinds = [j.kind for j in status.journal]
    assert kinds[-2:] == ["waiting", "event_received"]


async def test_any_of_several_names(engine: Engine) -> None:
    run_id = await start(engine)
    await wait(engine, run_id, "verdict", ["approved", "rejected"])
    sent = await send(engine, "rejected", {"why": "tests"})
    assert sent.woken_run_ids == [run_id]
    result = await wait(engine, run_id, "verdict", ["approved", "rejected"])
    assert result.event.name == "rejected"


async def test_the_same_id_twice_is_stored_once(engine: Engine) -> None:
    run_id = await start(engine)
    await wait(engine, run_id, "a", "ping")
    await wait(engine, run_id, "b", "ping")
    first = await send(engine, "ping", {"n": 1}, id="delivery-1")
    again = await send(engine, "ping", {"n": 1}, id="delivery-1")
    assert (first.deduplicated, again.deduplicated, again.event_id) == (False, True, "delivery-1")
    assert again.woken_run_ids == []
    second_wait = await wait(engine, run_id, "b", "ping")
    assert second_wait.status == "waiting", "a duplicate must not satisfy another wait"


async def test_a_second_wait_of_the_same_run_does_not_get_the_first_ones_event(engine: Engine) -> None:
    run_id = await start(engine)
    one = await send(engine, "reply", {"n": 1})
    first = await wait(engine, run_id, "first", "reply")
    second = await wait(engine, run_id, "second", "reply")
    assert first.event.event_id == one.event_id
    assert second.status == "waiting"
    two = await send(engine, "reply", {"n": 2})
    assert (await wait(engine, run_id, "second", "reply")).event.event_id == two.event_id


async def test_one_event_wakes_every_run_waiting_for_it(engine: Engine) -> None:
    runs = [await start(engine, f"r{i}") for i in range(3)]
    for run_id in runs:
        await wait(engine, run_id, "go", "release")
    sent = await send(engine, "release")
    assert sorted(sent.woken_run_ids) == sorted(runs)


async def test_a_wait_times_out_durably_and_the_result_is_memoized(engine: Engine) -> None:
    clock = [datetime(2026, 1, 1, tzinfo=UTC)]
    engine._clock = lambda: clock[0]
    run_id = await start(engine)
    pending = await wait(engine, run_id, "approve", "approval", timeout_s=60)
    assert pending.timeout_at == clock[0] + timedelta(seconds=60)
    clock[0] += timedelta(seconds=61)
    assert await engine.events.fire_due_waits() == 1  # what a server's timer does with no client connected
    late = await send(engine, "approval")
    assert late.woken_run_ids == []
    result = await wait(engine, run_id, "approve", "approval", timeout_s=60)
    assert result.status == "timed_out"
    again = await wait(engine, run_id, "approve", "approval")
    assert again.status == "timed_out" and again.step == result.step


async def test_a_blocked_wait_wakes_when_the_event_arrives(engine: Engine) -> None:
    run_id = await start(engine)
    results = {}

    async def waiter() -> None:
        started = time.monotonic()
        results["wait"] = await wait(engine, run_id, "approve", "approval", block_s=20)
        results["took"] = time.monotonic() - started

    async with anyio.create_task_group() as group:
        group.start_soon(waiter)
        await eventually(lambda: has_wait(engine, run_id, "approve"))
        await send(engine, "approval", {"by": "alice"})
    assert results["wait"].status == "received" and results["wait"].event.data == {"by": "alice"}
    assert results["took"] < 5, "woken by the send, not by block_s running out"


async def test_a_wait_in_one_process_is_woken_by_a_send_from_another(db: str) -> None:
    async with open_store(db) as one, open_store(db) as two:
        waiter, sender = Engine(one), Engine(two)
        run_id = await start(waiter)
        results = {}

        async def wait_in_one() -> None:
            results["wait"] = await wait(waiter, run_id, "approve", "approval", block_s=20)

        async with anyio.create_task_group() as group:
            group.start_soon(wait_in_one)
            await eventually(lambda: has_wait(waiter, run_id, "approve"))
            sent = await send(sender, "approval")
            assert sent.woken_run_ids == [run_id]
            started = time.monotonic()
        assert results["wait"].status == "received"
        assert time.monotonic() - started < 1


async def test_sleep_is_a_durable_timer(engine: Engine) -> None:
    run_id = await start(engine)
    asleep = await engine.events.sleep(SleepInput(run_id=run_id, step="nap", seconds=0.3, block_s=0))
    assert asleep.status == "sleeping" and asleep.step.kind == "sleep"
    done = await engine.events.sleep(SleepInput(run_id=run_id, step="nap", seconds=999, block_s=10))
    assert done.status == "done" and done.wake_at == asleep.wake_at
    past = await engine.events.sleep(SleepInput(run_id=run_id, step="past", until=datetime(2020, 1, 1, tzinfo=UTC)))
    assert past.status == "done"
    status = await engine.runs.status(StatusInput(run_id=run_id))
    assert status.run.status == RunStatus.RUNNING and status.waits == []


async def test_waits_and_checkpoints_do_not_share_step_names(engine: Engine) -> None:
    run_id = await start(engine)
    await engine.runs.checkpoint(CheckpointInput(run_id=run_id, step="build", output=1))
    with pytest.raises(InvalidInput, match="is a checkpoint step, not a event wait"):
        await wait(engine, run_id, "build", "done")
    await wait(engine, run_id, "approve", "approval")
    with pytest.raises(InvalidInput, match="is a pending event wait"):
        await engine.runs.checkpoint(CheckpointInput(run_id=run_id, step="approve", output="skip it"))


async def test_cancelling_a_waiting_run_ends_its_waits(engine: Engine) -> None:
    run_id = await start(engine)
    await wait(engine, run_id, "approve", "approval")
    await engine.runs.cancel_run(CancelRunInput(run_id=run_id))
    with pytest.raises(RunTerminal, match="is cancelled: its wait ended unanswered"):
        await wait(engine, run_id, "approve", "approval")
    assert (await send(engine, "approval")).woken_run_ids == []
    assert (await engine.runs.status(StatusInput(run_id=run_id))).waits == []
    with pytest.raises(RunTerminal, match="takes no new waits"):
        await wait(engine, run_id, "another", "approval")


async def test_cancel_on_cancels_the_run_and_its_descendants(engine: Engine) -> None:
    from mcp_orchestrator.models import CancelOn

    root = (
        await engine.runs.start_run(
            StartRunInput(name="pr-bot", cancel_on=[CancelOn(event="pr.closed", match={"data.pr": 42})])
        )
    ).run.run_id
    child = (await engine.runs.start_run(StartRunInput(name="reviewer", parent_run_id=root))).run.run_id
    other = (
        await engine.runs.start_run(StartRunInput(name="other-pr", cancel_on=[CancelOn(event="pr.closed")]))
    ).run.run_id
    await engine.runs.finish_run(FinishRunInput(run_id=other, output="merged"))
    await wait(engine, child, "approve", "approval")

    assert (await send(engine, "pr.closed", {"pr": 7})).cancelled_run_ids == []
    closed = await send(engine, "pr.closed", {"pr": 42})
    assert sorted(closed.cancelled_run_ids) == sorted([root, child])
    status = await engine.runs.status(StatusInput(run_id=child))
    assert status.run.status == RunStatus.CANCELLED and status.waits == []
    assert status.run.error["cancelled_with"] == root
    assert (await engine.runs.status(StatusInput(run_id=other))).run.status == RunStatus.COMPLETED
