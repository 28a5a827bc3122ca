"""A checkpoint's rows on the store's schema, written by plain sqlite3: the baselines that bound what the
engine can reach.

- ``open_rows`` and ``write_rows``: the database and the rows a checkpoint writes (its step row and its
  journal entry), for a loop of raw commits: the I/O part of a checkpoint.
- ``Floor``: the same rows written the way any asyncio server with one writer thread must write them: the
  event loop hands each checkpoint to the thread, which reads the run's status, writes the rows, commits
  what was queued meanwhile in one transaction (group commit) and answers the batch's callers on their
  loop once it is durable. None of the engine's code (no models, no checks, no journal of decisions):
  the least a durable checkpoint can cost in that shape, in the same run as the engine's figures.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from queue import SimpleQueue

from mcp_orchestrator.store.sqlite_schema import MIGRATIONS

NOW = "2026-01-01T00:00:00.000000+00:00"


def open_rows(path: Path, runs: list[str]) -> sqlite3.Connection:
    """A new database on the store's schema, WAL and ``synchronous=FULL`` as the store opens it, holding
    the given runs."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    for statement in MIGRATIONS[0]:
        conn.execute(statement)
    conn.executemany(
        "INSERT INTO runs (run_id, name, status, retry, created_at) VALUES (?, 'n', 'running', '{}', ?)",
        [(run, NOW) for run in runs],
    )
    return conn


def write_rows(conn: sqlite3.Connection, run: str, step: str, output_json: str) -> None:
    """A completed step's rows, inside the caller's transaction."""
    conn.execute(
        "INSERT INTO steps (run_id, step, status, attempt, output, started_at, ended_at) "
        "VALUES (?, ?, 'completed', 1, ?, ?, ?)",
        (run, step, output_json, NOW, NOW),
    )
    conn.execute(
        "INSERT INTO journal (run_id, at, kind, step, attempt) VALUES (?, ?, 'step_completed', ?, 1)",
        (run, NOW, step),
    )


_Queued = tuple[str, str, str, "asyncio.Future[None]"]


class Floor:
    """See the module docstring. Its thread starts at once; ``close`` (or leaving ``async with``) stops it."""

    def __init__(self, path: Path, runs: list[str]) -> None:
        self._conn = open_rows(path, runs)
        self._queue: SimpleQueue[_Queued | None] = SimpleQueue()
        self._thread = threading.Thread(target=self._commit_batches, name="floor-writer", daemon=True)
        self._thread.start()

    async def __aenter__(self) -> Floor:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._queue.put(None)
        await asyncio.to_thread(self._thread.join)
        self._conn.close()

    async def checkpoint(self, run: str, step: str, output_json: str) -> None:
        """Return once the step's rows are committed."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put((run, step, output_json, future))
        await future

    def _commit_batches(self) -> None:
        conn = self._conn
        while True:
            taken = [self._queue.get()]
            while not self._queue.empty():
                taken.append(self._queue.get())
            batch = [item for item in taken if item is not None]
            if batch:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    for run, step, output_json, _ in batch:
                        conn.execute("SELECT status FROM runs WHERE run_id = ?", (run,)).fetchone()  # what decides
                        write_rows(conn, run, step, output_json)
                    conn.execute("COMMIT")
                    failure = None
                except sqlite3.Error as exc:  # a caller's mistake (an unknown run): the batch is told
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    failure = exc
                futures = [future for *_, future in batch]
                futures[0].get_loop().call_soon_threadsafe(_answer, futures, failure)
            if len(batch) < len(taken):  # closed
                return


def _answer(futures: list[asyncio.Future[None]], failure: sqlite3.Error | None) -> None:
    for future in futures:
        if future.done():
            continue
        if failure is None:
            future.set_result(None)
        else:
            future.set_exception(failure)
