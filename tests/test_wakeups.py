"""Who a commit wakes. Every commit is seen by pages that watch everything (``generation``); only one
that may end a wait or start or stop work (not quiet: ``write(..., wake=False)`` unless the write called
``tx.wake()``) wakes the supervisor and blocked waits (``wake_generation``, ``waking=True``), here and, on
PostgreSQL, by notification elsewhere. A checkpoint that ends no run is quiet, so an agent checkpointing
costs the supervisor nothing; on SQLite another process's commits wake (they cannot be told apart), our
own seen again in the WAL index do not."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from mcp_orchestrator.config import Settings
from mcp_orchestrator.models import CancelRunInput, CheckpointInput, RunStatus, StartRunInput, StatusInput
from mcp_orchestrator.runtime import Engine, open_engine
from mcp_orchestrator.store.base import Transaction
from mcp_orchestrator.supervisor import Supervisor

from .support import eventually, open_store

pytestmark = pytest.mark.anyio


async def test_a_quiet_commit_is_seen_by_watchers_and_wakes_no_waiter(engine: Engine) -> None:
    store = engine.store
    await store.wait_for_change(0.5, store.generation)  # PostgreSQL's listener up (it wakes once as it connects)
    since, woken_since = store.generation, store.wake_generation
    waiter = asyncio.create_task(store.wait_for_change(10, woken_since, waking=True))
    watcher = asyncio.create_task(store.wait_for_change(10, since))
    await store.write(lambda tx: tx.set_cursor("quiet", 1), wake=False)
    await eventually(watcher.done)
    assert store.generation == since + 1 and store.wake_generation == woken_since
    await asyncio.sleep(0.1)  # the SQLite poller sees our own commit in the WAL index meanwhile
    assert not waiter.done()

    def found_otherwise(tx: Transaction) -> None:
        tx.set_cursor("quiet", 2)
        tx.wake()

    await store.write(found_otherwise, wake=False)
    await asyncio.wait_for(waiter, 5)
    assert store.wake_generation == woken_since + 1


async def test_a_checkpoint_that_ends_no_run_is_quiet_and_one_that_starts_a_queued_run_is_not(engine: Engine) -> None:
    run_id = (await engine.runs.start_run(StartRunInput(name="job"))).run.run_id
    woken = engine.store.wake_generation
    for step in ("fetch", "build"):
        await engine.runs.checkpoint(CheckpointInput(run_id=run_id, step=step, begin=True))
        await engine.runs.checkpoint(CheckpointInput(run_id=run_id, step=step, output={"ok": step}))
    await engine.runs.checkpoint(CheckpointInput(run_id=run_id, step="flaky", error="timeout"))
    assert engine.store.wake_generation == woken

    def queue(tx: Transaction) -> None:  # a run started by a schedule or a spawn waits queued
        tx.set_runs_status([run_id], RunStatus.QUEUED)

    await engine.store.write(queue)
    woken = engine.store.wake_generation
    await engine.runs.checkpoint(CheckpointInput(run_id=run_id, step="deploy", output=1))
    assert engine.store.wake_generation == woken + 1
    assert (await engine.runs.status(StatusInput(run_id=run_id))).run.status == RunStatus.RUNNING


async def test_the_supervisor_sleeps_through_an_agents_checkpoints(db: str, tmp_path: Path) -> None:
    """With the supervisor running as in every server, 300 checkpoints make it tick no more often than
    none do: it wakes for spawns, exits and schedules, and by time."""
    settings = Settings.load(db=db, config=None)
    async with open_engine(settings) as engine:
        ticks: list[int] = []

        class Counted(Supervisor):
            async def tick(self, *, store_wide: bool = True, node: bool = True):  # type: ignore[no-untyped-def]
                ticks.append(1)
                return await super().tick(store_wide=store_wide, node=node)

        duty = asyncio.create_task(Counted(engine, settings).run())
        try:
            await eventually(lambda: ticks)  # the leases taken, the first tick done
            run_id = (await engine.runs.start_run(StartRunInput(name="agent's work"))).run.run_id
            await asyncio.sleep(0.2)  # the start wakes it once
            before, started = len(ticks), time.monotonic()
            for i in range(300):
                await engine.runs.checkpoint(CheckpointInput(run_id=run_id, step=f"s{i}", output="x" * 100))
            await asyncio.sleep(0.2)
            # Time may tick it (its timers look once a second, its leases are renewed): a slow machine takes
            # seconds over these. Before, it ticked about 0.7 times a checkpoint: some 200 times.
            assert len(ticks) - before <= 2 + int(time.monotonic() - started)
            quiet = len(ticks)
            await engine.runs.cancel_run(CancelRunInput(run_id=run_id))  # this may concern it: it wakes
            await eventually(lambda: len(ticks) > quiet)
        finally:
            duty.cancel()
            await asyncio.gather(duty, return_exceptions=True)


async def test_on_sqlite_another_process_commits_wake_and_our_own_seen_again_do_not(db_path: Path) -> None:
    async with open_store(db_path) as ours, open_store(db_path) as theirs:
        woken = ours.wake_generation
        waiter = asyncio.create_task(ours.wait_for_change(10, woken, waking=True))
        for i in range(50):  # our own quiet commits, seen again by the poller in the WAL index
            await ours.write(lambda tx, i=i: tx.set_cursor("ours", i), wake=False)
        await asyncio.sleep(0.2)
        assert not waiter.done() and ours.wake_generation == woken
        await theirs.write(lambda tx: tx.set_cursor("theirs", 1), wake=False)  # quiet there: unknowable here
        await asyncio.wait_for(waiter, 5)
        assert ours.wake_generation == woken + 1
