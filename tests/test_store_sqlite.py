"""The SQLite store: durability settings, migrations, group commit, locking across connections."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from mcp_orchestrator.errors import SchemaTooNew, StoreBusy, StoreError
from mcp_orchestrator.store.sqlite import SQLiteStore, SQLiteTransaction
from mcp_orchestrator.store.sqlite_schema import SCHEMA_VERSION

pytestmark = pytest.mark.anyio


def insert_journal(run_id: str, kind: str):
    def fn(tx: SQLiteTransaction) -> None:
        tx._conn.execute(
            "INSERT OR IGNORE INTO runs (run_id, name, status, retry, created_at) "
            "VALUES (?, 'n', 'running', '{}', 'x')",
            (run_id,),
        )
        tx._conn.execute("INSERT INTO journal (run_id, at, kind) VALUES (?, 'x', ?)", (run_id, kind))

    return fn


def count(path: Path, sql: str) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchone()[0]


async def test_durability_pragmas(db_path: Path) -> None:
    async with SQLiteStore(db_path) as store:
        pragmas = await store.write(
            lambda tx: [
                tx._conn.execute(f"PRAGMA {name}").fetchone()[0]
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            ]
        )
    assert pragmas == ["wal", 2, 1, 5000]  # synchronous 2 = FULL


async def test_a_new_store_is_readable_by_its_owner_only(db_path: Path) -> None:
    async with SQLiteStore(db_path) as store:
        await store.write(insert_journal("a", "x"))
        modes = {path.name: path.stat().st_mode & 0o777 for path in db_path.parent.iterdir()}
    assert modes == {"store.db": 0o600, "store.db-wal": 0o600, "store.db-shm": 0o600}


async def test_synchronous_normal_is_a_setting(db_path: Path) -> None:
    async with SQLiteStore(db_path, synchronous="normal") as store:
        assert await store.write(lambda tx: tx._conn.execute("PRAGMA synchronous").fetchone()[0]) == 1


async def test_migrations_apply_once_even_when_processes_start_together(db_path: Path) -> None:
    stores = [SQLiteStore(db_path) for _ in range(5)]
    await asyncio.gather(*(store.open() for store in stores))
    await asyncio.gather(*(store.close() for store in stores))
    assert count(db_path, "SELECT count(*) FROM schema_version") == SCHEMA_VERSION
    async with SQLiteStore(db_path):
        pass
    assert count(db_path, "SELECT count(*) FROM schema_version") == SCHEMA_VERSION


async def test_a_newer_schema_is_refused_and_left_alone(db_path: Path) -> None:
    async with SQLiteStore(db_path):
        pass
    with sqlite3.connect(db_path) as conn:
        conn.execute("INSERT INTO schema_version VALUES (?, 'future')", (SCHEMA_VERSION + 1,))
    with pytest.raises(SchemaTooNew, match="upgrade mcp-orchestrator"):
        await SQLiteStore(db_path).open()
    assert count(db_path, "SELECT max(version) FROM schema_version") == SCHEMA_VERSION + 1


async def test_concurrent_writes_share_commits_and_are_visible_when_answered(db_path: Path) -> None:
    async with SQLiteStore(db_path) as store:
        batches: list[int] = []
        run_batch = store._run_batch

        def counting(conn, fns):
            batches.append(len(fns))
            return run_batch(conn, fns)

        store._run_batch = counting  # type: ignore[method-assign]
        outside = sqlite3.connect(db_path)

        async def write_and_check(i: int) -> None:
            await store.write(insert_journal(f"r{i % 4}", f"k{i}"))
            # Answered only after the commit: another connection sees the row at once.
            assert outside.execute("SELECT count(*) FROM journal WHERE kind = ?", (f"k{i}",)).fetchone()[0] == 1

        await asyncio.gather(*(write_and_check(i) for i in range(200)))
        outside.close()
    assert sum(batches) == 200
    assert len(batches) < 200, "concurrent writers should have been committed together"
    assert count(db_path, "SELECT count(*) FROM journal") == 200


async def test_a_failing_write_does_not_disturb_its_batch(db_path: Path) -> None:
    async with SQLiteStore(db_path) as store:

        def fails(tx: SQLiteTransaction) -> None:
            insert_journal("bad", "written-then-undone")(tx)
            raise ValueError("decided against it")

        results = await asyncio.gather(
            store.write(insert_journal("a", "one")),
            store.write(fails),
            store.write(insert_journal("b", "two")),
            return_exceptions=True,
        )
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], ValueError)
    assert count(db_path, "SELECT group_concat(kind) FROM journal ORDER BY seq") == "one,two"
    assert count(db_path, "SELECT count(*) FROM runs WHERE run_id = 'bad'") == 0


async def test_sqlite_errors_become_store_errors(db_path: Path) -> None:
    async with SQLiteStore(db_path) as store:
        with pytest.raises(StoreError, match="no such table"):
            await store.write(lambda tx: tx._conn.execute("SELECT * FROM nowhere"))
        with pytest.raises(StoreError):
            await store.read(lambda tx: tx._conn.execute("INSERT INTO journal (run_id, at, kind) VALUES (1, 2, 3)"))
        assert await store.read(lambda tx: tx.get_run("none")) is None  # still serving


def hold_write_lock(path: Path, seconds: float, locked: threading.Event) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    locked.set()
    time.sleep(seconds)
    conn.execute("COMMIT")
    conn.close()


async def test_a_lock_held_elsewhere_is_waited_out(db_path: Path) -> None:
    async with SQLiteStore(db_path) as store:
        locked = threading.Event()
        holder = threading.Thread(target=hold_write_lock, args=(db_path, 1.0, locked))
        holder.start()
        locked.wait()
        started = time.monotonic()
        await store.write(insert_journal("a", "after-the-lock"))
        waited = time.monotonic() - started
        holder.join()
    assert waited >= 0.5
    assert count(db_path, "SELECT count(*) FROM journal") == 1


async def test_a_lock_held_too_long_is_a_clear_error(db_path: Path) -> None:
    async with SQLiteStore(db_path, lock_wait_s=0.2) as store:
        await store.write(lambda tx: tx._conn.execute("PRAGMA busy_timeout = 50"))
        locked = threading.Event()
        holder = threading.Thread(target=hold_write_lock, args=(db_path, 1.0, locked))
        holder.start()
        locked.wait()
        try:
            with pytest.raises(StoreBusy, match="locked by another process for too long; the write was not made"):
                await store.write(insert_journal("a", "never"))
        finally:
            holder.join()
        await store.write(insert_journal("a", "later"))  # serving again once the lock is gone
    assert count(db_path, "SELECT group_concat(kind) FROM journal") == "later"


async def test_two_stores_on_one_file_write_at_once_without_errors(db_path: Path) -> None:
    async with SQLiteStore(db_path) as one, SQLiteStore(db_path) as two:
        writes = [
            store.write(insert_journal(f"{name}{i % 3}", f"{name}-{i}"))
            for i in range(150)
            for name, store in (("a", one), ("b", two))
        ]
        await asyncio.gather(*writes)
    assert count(db_path, "SELECT count(*) FROM journal") == 300


async def test_close_finishes_queued_writes(db_path: Path) -> None:
    store = SQLiteStore(db_path)
    await store.open()
    pending = [asyncio.ensure_future(store.write(insert_journal("a", f"k{i}"))) for i in range(50)]
    await asyncio.sleep(0)
    await store.close()
    await asyncio.gather(*pending)
    assert count(db_path, "SELECT count(*) FROM journal") == 50


async def test_closed_store_says_so(db_path: Path) -> None:
    store = SQLiteStore(db_path)
    with pytest.raises(StoreError, match="is not open"):
        await store.write(insert_journal("a", "x"))


async def test_a_store_of_an_older_schema_is_migrated_with_its_data(db_path: Path) -> None:
    from mcp_orchestrator.models import SendEventInput, StatusInput, WaitForEventInput
    from mcp_orchestrator.runtime import Engine
    from mcp_orchestrator.store.sqlite_schema import MIGRATIONS

    with sqlite3.connect(db_path) as conn:  # a store as the first release left it
        conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
        for statement in MIGRATIONS[0]:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version VALUES (1, 'then')")
        conn.execute(
            "INSERT INTO runs (run_id, name, status, retry, created_at) "
            "VALUES ('old', 'old', 'running', '{\"max_attempts\": 3}', '2026-01-01T00:00:00.000000+00:00')"
        )
        conn.execute(
            "INSERT INTO steps (run_id, step, status, attempt, output, started_at) "
            "VALUES ('old', 'done', 'completed', 1, '\"kept\"', '2026-01-01T00:00:01.000000+00:00')"
        )
    async with SQLiteStore(db_path) as store:
        engine = Engine(store)
        await engine.events.wait_for_event(WaitForEventInput(run_id="old", step="w", event="go", block_s=0))
        assert (await engine.events.send_event(SendEventInput(name="go"))).woken_run_ids == ["old"]
        status = await engine.runs.status(StatusInput(run_id="old"))
    assert (status.steps[0].step, status.steps[0].kind, status.steps[0].output) == ("done", "checkpoint", "kept")
    assert count(db_path, "SELECT max(version) FROM schema_version") == SCHEMA_VERSION
