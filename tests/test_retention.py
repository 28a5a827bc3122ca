"""Retention: old ended runs, events and firings go; live work and what it may still need stays."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from mcp_orchestrator.errors import RunNotFound
from mcp_orchestrator.models import (
    CheckpointInput,
    FinishRunInput,
    ListEventsInput,
    SendEventInput,
    StartRunInput,
    StatusInput,
)
from mcp_orchestrator.runtime import Engine
from mcp_orchestrator.services import retention
from mcp_orchestrator.services.retention import collect, cutoff_for, preview
from mcp_orchestrator.store import SQLiteStore, is_postgres

from .support import Clock, cli, open_store

pytestmark = pytest.mark.anyio


@pytest.fixture
async def sqlite_engine(db_path: Path) -> AsyncIterator[Engine]:
    """An engine on a SQLite file, for the tests that measure the file itself (they run once)."""
    async with open_store(db_path) as store:
        yield Engine(store, workspace="/projects/demo")


async def finished(engine: Engine, name: str, parent: str | None = None) -> str:
    run_id = (await engine.runs.start_run(StartRunInput(name=name, parent_run_id=parent))).run.run_id
    await engine.runs.checkpoint(CheckpointInput(run_id=run_id, step="work", output={"name": name}))
    await engine.runs.finish_run(FinishRunInput(run_id=run_id, output="done"))
    return run_id


async def exists(engine: Engine, run_id: str) -> bool:
    try:
        await engine.runs.status(StatusInput(run_id=run_id))
    except RunNotFound:
        return False
    return True


async def test_old_ended_runs_and_events_go_and_live_work_stays(engine: Engine) -> None:
    clock = Clock()
    engine._clock = clock
    old = await finished(engine, "old")
    parent_of_live = await finished(engine, "parent-of-live")
    live_child = (await engine.runs.start_run(StartRunInput(name="live", parent_run_id=parent_of_live))).run.run_id
    await engine.events.send_event(SendEventInput(name="old.event", id="e-old"))
    clock.advance(40 * 86400)
    recent = await finished(engine, "recent")
    await engine.events.send_event(SendEventInput(name="new.event", id="e-new"))

    removed = await collect(engine, cutoff_for(engine, timedelta(days=30)))
    assert removed.runs == 1 and removed.before == clock() - timedelta(days=30)
    assert not await exists(engine, old)
    assert await exists(engine, parent_of_live) and await exists(engine, live_child)  # a live descendant keeps it
    assert await exists(engine, recent)
    # The live run started before e-old arrived: e-old stays, it may still be waited for.
    events = {e.event_id for e in (await engine.events.list_events(ListEventsInput())).events}
    assert events == {"e-old", "e-new"} and removed.events == 0

    await engine.runs.finish_run(FinishRunInput(run_id=live_child, output="done"))
    clock.advance(40 * 86400)
    removed = await collect(engine, cutoff_for(engine, timedelta(days=30)))
    # SQLite would give a deleted newest row's number to the next row, so it keeps the newest event and
    # the run holding the newest journal entry (numbers never go back); PostgreSQL's sequences never do.
    reuses_numbers = isinstance(engine.store, SQLiteStore)
    assert removed.events == (1 if reuses_numbers else 2)
    remaining = {e.event_id for e in (await engine.events.list_events(ListEventsInput())).events}
    assert remaining == ({"e-new"} if reuses_numbers else set())
    assert not await exists(engine, parent_of_live) and not await exists(engine, recent)
    assert await exists(engine, live_child) == reuses_numbers


async def test_collect_goes_past_runs_a_live_descendant_holds(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """The oldest ended runs, each holding a live child, fill more than a batch: the later ones still go."""
    monkeypatch.setattr(retention, "BATCH", 2)
    clock = Clock()
    engine._clock = clock
    held = [await finished(engine, f"held-{i}") for i in range(3)]
    for parent in held:
        grandparent_of_live = await finished(engine, "mid", parent=parent)
        await engine.runs.start_run(StartRunInput(name="live", parent_run_id=grandparent_of_live))
    clock.advance(1)
    free = [await finished(engine, f"free-{i}") for i in range(3)]
    clock.advance(86400)
    await engine.runs.start_run(StartRunInput(name="newest"))  # holds the newest journal entry (SQLite keeps it)

    before = cutoff_for(engine, timedelta(hours=1))
    shown = await preview(engine, before)
    assert shown.runs == 3 and not shown.runs_more
    assert [run.run_id for run in shown.oldest + shown.newest] == free
    removed = await collect(engine, before)
    assert removed.runs == 3 and removed.before == before
    assert [await exists(engine, run_id) for run_id in held + free] == [True] * 3 + [False] * 3


async def test_the_preview_counts_up_to_its_bound(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retention, "PREVIEW_MAX", 7)
    clock = Clock()
    engine._clock = clock
    ended = [await finished(engine, f"r{i}") for i in range(9)]
    clock.advance(86400)
    await engine.runs.start_run(StartRunInput(name="newest"))
    shown = await preview(engine, cutoff_for(engine, timedelta(hours=1)))
    assert shown.runs == 7 and shown.runs_more
    assert [run.run_id for run in shown.oldest] == ended[:3] and [run.run_id for run in shown.newest] == ended[4:7]


async def test_the_file_stops_growing_under_a_soak(sqlite_engine: Engine, db_path: Path) -> None:
    engine = sqlite_engine
    sizes = []
    output = {"blob": "x" * 4000}
    for _ in range(12):
        for i in range(150):
            run_id = (await engine.runs.start_run(StartRunInput(name=f"soak-{i}"))).run.run_id
            await engine.runs.checkpoint(CheckpointInput(run_id=run_id, step="a", output=output))
            await engine.runs.checkpoint(CheckpointInput(run_id=run_id, step="b", output=output))
            await engine.runs.finish_run(FinishRunInput(run_id=run_id, output="ok"))
            await engine.events.send_event(SendEventInput(name="soak", data=output))
        removed = await collect(engine, cutoff_for(engine, timedelta(0)))
        assert removed.runs >= 149
        with sqlite3.connect(db_path) as conn:  # fold the WAL into the file to measure the file itself
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        sizes.append(db_path.stat().st_size)
    assert sizes[-1] <= sizes[3] * 1.1, sizes  # freed pages are reused: no growth after the first rounds
    assert sizes[-1] < 12 * 150 * 8000, sizes  # far less than what was written


@pytest.mark.processes
async def test_gc_from_the_cli(engine: Engine, db: str) -> None:
    await finished(engine, "a")
    keep = await finished(engine, "b")
    printed = cli(db, "gc", "--older-than", "0", "--yes")
    newest_kept = not is_postgres(db)  # SQLite keeps the run holding the newest journal entry (see above)
    expected = "removed 1 run(s)" if newest_kept else "removed 2 run(s)"
    assert printed.stdout.startswith(f"{expected}, 0 event(s) and 0 schedule firing(s)")
    assert await exists(engine, keep) == newest_kept
    refused = cli(db, "gc", "--older-than", "-1", check=False)
    assert refused.returncode == 1 and "give an age from 0 to 36500 days" in refused.stderr


async def test_a_large_step_output_is_stored_once(sqlite_engine: Engine, db_path: Path) -> None:
    engine = sqlite_engine
    run_id = (await engine.runs.start_run(StartRunInput(name="big"))).run.run_id
    with sqlite3.connect(db_path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = db_path.stat().st_size
    blob = "0123456789abcdef" * 32768  # 512 KiB
    await engine.runs.checkpoint(CheckpointInput(run_id=run_id, step="big", output={"blob": blob}))
    await engine.runs.finish_run(FinishRunInput(run_id=run_id, output="done"))
    with sqlite3.connect(db_path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        journal = conn.execute("SELECT coalesce(sum(length(detail)), 0) FROM journal").fetchone()[0]
    grown = db_path.stat().st_size - before
    assert len(blob) <= grown < 1.2 * len(blob), grown  # once in the step's row, not in the journal too
    assert journal < 1000


async def test_log_directories_of_removed_runs_go_too(engine: Engine, db: str) -> None:
    from mcp_orchestrator.config import Settings
    from mcp_orchestrator.supervisor import Supervisor

    settings = Settings.load(db=db)  # runs_dir is in the test's private state directory
    kept = await finished(engine, "kept")
    for run_id in (kept, "01GONEGONEGONEGONEGONEGONE", "01FRESHFRESHFRESHFRESHFRES"):
        (settings.runs_dir / run_id).mkdir(parents=True)
        (settings.runs_dir / run_id / "stdout.log").write_text("output\n")
    old = time.time() - 3 * 86400
    for run_id in (kept, "01GONEGONEGONEGONEGONEGONE"):
        os.utime(settings.runs_dir / run_id, (old, old))
    removed = await Supervisor(engine, settings).remove_orphan_logs(timedelta(days=1))
    assert removed == ["01GONEGONEGONEGONEGONEGONE"]  # its run is gone and it is old; a fresh one may be launching
    assert sorted(p.name for p in settings.runs_dir.iterdir()) == sorted([kept, "01FRESHFRESHFRESHFRESHFRES"])
