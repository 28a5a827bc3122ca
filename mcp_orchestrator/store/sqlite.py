"""The embedded store: one SQLite file in WAL mode, shared by every process that opens it.

Durability: ``synchronous=FULL`` by default, so an acknowledged write survives power loss.

Concurrency: each process has one writer connection and one reader connection (aiosqlite, one
thread each). Writes from many coroutines are queued and committed together (group commit): the
writer takes every queued function, runs them all in one ``BEGIN IMMEDIATE`` transaction, commits
once (one fsync for the batch) and only then answers each caller; a function that raises has its
own writes undone and leaves the others' standing. Other processes serialise on
the file's write lock; ``busy_timeout`` and a retry with jitter make a lock held elsewhere a
wait, never a "database is locked" error for the caller (up to ``lock_wait_s``).

The files under a running server: SQLite writes on through its open file descriptors when the
database file, its ``-wal`` or its ``-shm`` is deleted or renamed over (a backup restored with
``mv``), so acknowledged writes would land in a file nobody else can see and that is gone when the
process exits, or a stale log would be applied to the file that took the path. So the store
remembers each file's (st_dev, st_ino) when it opens them and compares the paths' before every
commit (three ``stat`` calls, a few microseconds, ~1-2% of a durable checkpoint, once per batch),
before a read when the last look is older than ``_READ_LOOK_S``, and every ``_WATCH_S`` while idle.
Once a file is found gone, the store refuses every read and write with ``StoreFileGone`` (nothing it
would read is what other processes see any more), wakes its waiters so blocked calls meet that
error, and, when the database file itself went, empties its log into the file it holds open so the
log left at the path cannot be applied to whatever file takes it. PostgreSQL has no such files and
is unaffected.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import aiosqlite

from ..errors import StoreBusy, StoreError, StoreFileGone
from ..models import (
    LIVE_RUN_STATUSES,
    Agent,
    AgentState,
    Event,
    Firing,
    JournalEntry,
    Run,
    RunFilter,
    RunStatus,
    Schedule,
    Step,
    Wait,
)
from .common import Changes
from .common import dump_json as _dump
from .sqlite_schema import migrate

T = TypeVar("T")

_BUSY_CODES = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}
_MAX_BATCH = 128
# How often a waiting process looks for other processes' commits, by how long nothing changed:
# (quiet for at least this many seconds, look every this many seconds).
_POLL_LADDER = ((5.0, 0.05), (0.5, 0.025), (0.0, 0.005))
# Written out, not bound as parameters, so that a query can match the partial index runs_by_deadline.
_LIVE = "(" + ", ".join(f"'{status.value}'" for status in sorted(LIVE_RUN_STATUSES)) + ")"
_STOP: Any = object()  # queued by close(): the writer finishes what came before it
# Whether the store's files are still at their paths is looked at before every commit, before a read
# when the last look is older than this, and by a watch task this often.
_READ_LOOK_S = 0.05
_WATCH_S = 0.5
_FILES = (("", "store file"), ("-wal", "store's write-ahead log"), ("-shm", "store's shared-memory index"))

log = logging.getLogger(__name__)


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in _BUSY_CODES
    return "locked" in str(exc) or "busy" in str(exc)


def _ts(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat(timespec="microseconds")


_RUN_COLUMNS = (
    "run_id, name, key, status, input, output, error, parent_run_id, labels, workspace, retry, "
    "deadline_at, created_at, ended_at"
)


def _run_document(payloads: str) -> str:
    # SQLite builds each row's JSON document and pydantic parses it in one call: several times
    # cheaper than converting columns in Python. updated_at is derived: every change to a run or
    # its steps appends to the journal, so a checkpoint writes no run row at all.
    return (
        "SELECT json_object('run_id', run_id, 'name', name, 'key', key, 'status', status, "
        f"{payloads}, 'parent_run_id', parent_run_id, 'labels', json(labels), "
        "'workspace', workspace, 'retry', json(retry), 'deadline_at', deadline_at, "
        "'created_at', created_at, 'ended_at', ended_at, 'updated_at', coalesce("
        "(SELECT at FROM journal WHERE journal.run_id = runs.run_id ORDER BY seq DESC LIMIT 1), created_at)"
        ") FROM runs"
    )


_SELECT_RUN = _run_document("'input', json(input), 'output', json(output), 'error', json(error)")
_SELECT_RUN_LEAN = _run_document("'input', NULL, 'output', NULL, 'error', NULL")
_STEP_COLUMNS = "step, kind, status, attempt, output, error, started_at, ended_at, retry_at"
_SELECT_STEP = (
    "SELECT json_object('step', step, 'kind', kind, 'status', status, 'attempt', attempt, 'output', json(output), "
    "'error', json(error), 'started_at', started_at, 'ended_at', ended_at, 'retry_at', retry_at) FROM steps"
)
_SELECT_EVENT = (
    "SELECT seq, json_object('event_id', event_id, 'name', name, 'data', json(data), 'source', source, "
    "'received_at', received_at) FROM events"
)
_SELECT_WAIT = (
    "SELECT run_id, json_object('step', step, 'kind', kind, 'events', json(names), 'match', json(match), 'mode', mode, "
    "'until', until, 'created_at', created_at) FROM waits"
)
_SELECT_JOURNAL = (
    "SELECT json_object('seq', seq, 'run_id', run_id, 'at', at, 'kind', kind, 'step', step, "
    "'attempt', attempt, 'detail', json(coalesce(detail, '{}'))) FROM journal"
)


class SQLiteTransaction:
    """Row reads and writes on a connection that is inside a transaction (see ``store.base``)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def get_run(self, run_id: str, *, payloads: bool = True) -> Run | None:
        select = _SELECT_RUN if payloads else _SELECT_RUN_LEAN
        row = self._conn.execute(f"{select} WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else Run.model_validate_json(row[0])

    def get_run_by_key(self, key: str) -> Run | None:
        row = self._conn.execute(f"{_SELECT_RUN} WHERE key = ?", (key,)).fetchone()
        return None if row is None else Run.model_validate_json(row[0])

    def peek_runs(self, run_ids: Sequence[str], *, settle: bool = False) -> list[Run | None]:
        return [self.get_run(run_id, payloads=False) for run_id in run_ids]  # writers take turns: nothing to settle

    def insert_run(self, run: Run) -> None:
        self._conn.execute(
            f"INSERT INTO runs ({_RUN_COLUMNS}, events_after) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, (SELECT coalesce(max(seq), 0) FROM events))",
            (
                run.run_id,
                run.name,
                run.key,
                run.status.value,
                _dump(run.input),
                _dump(run.output),
                _dump(run.error),
                run.parent_run_id,
                _dump(run.labels),
                run.workspace,
                _dump(run.retry.model_dump()),
                _ts(run.deadline_at),
                _ts(run.created_at),
                _ts(run.ended_at),
            ),
        )
        self._conn.executemany(
            "INSERT INTO run_labels (key, value, run_id) VALUES (?, ?, ?)",
            [(key, value, run.run_id) for key, value in run.labels.items()],
        )

    def list_runs(self, query: RunFilter) -> list[Run]:
        clauses: list[str] = []
        params: list[Any] = []
        if query.statuses:
            clauses.append(f"status IN ({', '.join('?' * len(query.statuses))})")
            params.extend(status.value for status in query.statuses)
        for column, value in (
            ("name", query.name),
            ("parent_run_id", query.parent_run_id),
            ("workspace", query.workspace),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if query.since is not None:
            clauses.append("created_at >= ?")
            params.append(_ts(query.since))
        if query.before_run_id is not None:
            clauses.append("run_id < ?")
            params.append(query.before_run_id)
        for key, value in query.labels:
            if value is None:
                clauses.append("EXISTS (SELECT 1 FROM run_labels l WHERE l.run_id = runs.run_id AND l.key = ?)")
                params.append(key)
            else:
                clauses.append(
                    "EXISTS (SELECT 1 FROM run_labels l WHERE l.run_id = runs.run_id AND l.key = ? AND l.value = ?)"
                )
                params.extend((key, value))
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._conn.execute(
            f"{_SELECT_RUN} {where} ORDER BY run_id DESC LIMIT ?", (*params, query.limit)
        ).fetchall()
        return [Run.model_validate_json(row[0]) for row in rows]

    def list_children(self, run_id: str) -> list[Run]:
        rows = self._conn.execute(f"{_SELECT_RUN} WHERE parent_run_id = ? ORDER BY run_id", (run_id,)).fetchall()
        return [Run.model_validate_json(row[0]) for row in rows]

    def live_descendant_ids(self, run_id: str) -> list[str]:
        rows = self._conn.execute(
            f"""
            WITH RECURSIVE tree (run_id) AS (
                SELECT run_id FROM runs WHERE parent_run_id = ?
                UNION
                SELECT runs.run_id FROM runs JOIN tree ON runs.parent_run_id = tree.run_id
            )
            SELECT runs.run_id FROM runs JOIN tree USING (run_id) WHERE runs.status IN {_LIVE} ORDER BY runs.run_id
            """,
            (run_id,),
        ).fetchall()
        return [row[0] for row in rows]

    def overdue_run_ids(self, now: datetime) -> list[str]:
        # The partial index runs_by_deadline holds only live runs with a deadline: this reads no other.
        rows = self._conn.execute(
            "SELECT run_id FROM runs INDEXED BY runs_by_deadline "
            f"WHERE deadline_at IS NOT NULL AND status IN {_LIVE} AND deadline_at <= ?",
            (_ts(now),),
        ).fetchall()
        return [row[0] for row in rows]

    def set_runs_status(
        self, run_ids: Sequence[str], status: RunStatus, at: datetime, *, output: Any = None, error: Any = None
    ) -> None:
        ended_at = _ts(at) if status.terminal else None
        values = (status.value, _dump(output), _dump(error), ended_at)
        self._conn.executemany(
            "UPDATE runs SET status = ?, output = ?, error = ?, ended_at = ? WHERE run_id = ?",
            [(*values, run_id) for run_id in run_ids],
        )

    def restart_run(self, run_id: str, status: RunStatus, deadline_at: datetime | None) -> None:
        self._conn.execute(
            "UPDATE runs SET status = ?, output = NULL, error = NULL, ended_at = NULL, deadline_at = ? "
            "WHERE run_id = ?",
            (status.value, _ts(deadline_at), run_id),
        )

    def delete_step(self, run_id: str, step: str) -> None:
        self._conn.execute("DELETE FROM steps WHERE run_id = ? AND step = ?", (run_id, step))

    def get_step(self, run_id: str, step: str) -> Step | None:
        row = self._conn.execute(f"{_SELECT_STEP} WHERE run_id = ? AND step = ?", (run_id, step)).fetchone()
        return None if row is None else Step.model_validate_json(row[0])

    def list_steps(self, run_id: str) -> list[Step]:
        rows = self._conn.execute(f"{_SELECT_STEP} WHERE run_id = ? ORDER BY rowid", (run_id,)).fetchall()
        return [Step.model_validate_json(row[0]) for row in rows]

    def save_step(self, run_id: str, step: Step) -> None:
        # An upsert, not INSERT OR REPLACE: the rowid (first-recorded order) must not change.
        self._conn.execute(
            f"""
            INSERT INTO steps (run_id, {_STEP_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (run_id, step) DO UPDATE SET
                kind = excluded.kind, status = excluded.status, attempt = excluded.attempt,
                output = excluded.output, error = excluded.error, started_at = excluded.started_at,
                ended_at = excluded.ended_at, retry_at = excluded.retry_at
            """,
            (
                run_id,
                step.step,
                step.kind,
                step.status.value,
                step.attempt,
                _dump(step.output),
                _dump(step.error),
                _ts(step.started_at),
                _ts(step.ended_at),
                _ts(step.retry_at),
            ),
        )

    def append_journal(
        self,
        run_id: str,
        kind: str,
        at: datetime,
        step: str | None = None,
        attempt: int | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        self._conn.execute(
            "INSERT INTO journal (run_id, at, kind, step, attempt, detail) VALUES (?, ?, ?, ?, ?, ?)",
            (run_id, _ts(at), kind, step, attempt, _dump(detail) if detail else None),
        )

    def read_journal(self, run_id: str, limit: int) -> list[JournalEntry]:
        rows = self._conn.execute(
            f"{_SELECT_JOURNAL} WHERE run_id = ? ORDER BY seq DESC LIMIT ?", (run_id, limit)
        ).fetchall()
        return [JournalEntry.model_validate_json(row[0]) for row in reversed(rows)]

    # Events and waits.

    def events_after(self, run_id: str) -> int:
        row = self._conn.execute("SELECT events_after FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return 0 if row is None else row[0]

    def insert_event(self, event: Event) -> int:
        cursor = self._conn.execute(
            "INSERT INTO events (event_id, name, data, source, received_at) VALUES (?, ?, ?, ?, ?)",
            (event.event_id, event.name, _dump(event.data), event.source, _ts(event.received_at)),
        )
        return int(cursor.lastrowid or 0)

    def has_event(self, event_id: str) -> bool:
        return self._conn.execute("SELECT 1 FROM events WHERE event_id = ?", (event_id,)).fetchone() is not None

    def unconsumed_events(self, run_id: str, names: Sequence[str], after_seq: int) -> Iterator[tuple[int, Event]]:
        cursor = self._conn.execute(
            f"{_SELECT_EVENT} WHERE name IN ({', '.join('?' * len(names))}) AND seq > ? AND NOT EXISTS "
            "(SELECT 1 FROM consumed_events c WHERE c.run_id = ? AND c.event_seq = events.seq) ORDER BY seq",
            (*names, after_seq, run_id),
        )
        for row in cursor:
            yield row[0], Event.model_validate_json(row[1])

    def consume_event(self, run_id: str, seq: int, step: str) -> None:
        self._conn.execute(
            "INSERT INTO consumed_events (run_id, event_seq, step) VALUES (?, ?, ?)", (run_id, seq, step)
        )

    def list_events(self, name: str | None, limit: int, before_seq: int | None = None) -> list[tuple[int, Event]]:
        clauses: list[str] = []
        params: list[Any] = []
        if name is not None:
            clauses.append("name = ?")
            params.append(name)
        if before_seq is not None:
            clauses.append("seq < ?")
            params.append(before_seq)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._conn.execute(f"{_SELECT_EVENT} {where} ORDER BY seq DESC LIMIT ?", (*params, limit)).fetchall()
        return [(row[0], Event.model_validate_json(row[1])) for row in rows]

    def insert_wait(self, run_id: str, wait: Wait) -> None:
        self._conn.execute(
            "INSERT INTO waits (run_id, step, kind, names, match, mode, until, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run_id,
                wait.step,
                wait.kind,
                _dump(wait.events),
                _dump(wait.match),
                wait.mode,
                _ts(wait.until),
                _ts(wait.created_at),
            ),
        )
        self._conn.executemany(
            "INSERT INTO wait_names (name, run_id, step) VALUES (?, ?, ?)",
            [(name, run_id, wait.step) for name in dict.fromkeys(wait.events)],
        )

    def delete_wait(self, run_id: str, step: str) -> None:
        self._conn.execute("DELETE FROM waits WHERE run_id = ? AND step = ?", (run_id, step))

    def get_wait(self, run_id: str, step: str) -> Wait | None:
        row = self._conn.execute(f"{_SELECT_WAIT} WHERE run_id = ? AND step = ?", (run_id, step)).fetchone()
        return None if row is None else Wait.model_validate_json(row[1])

    def list_waits(self, run_id: str) -> list[Wait]:
        rows = self._conn.execute(f"{_SELECT_WAIT} WHERE run_id = ? ORDER BY created_at, step", (run_id,)).fetchall()
        return [Wait.model_validate_json(row[1]) for row in rows]

    def waits_for(self, name: str) -> list[tuple[str, Wait]]:
        rows = self._conn.execute(
            f"{_SELECT_WAIT} WHERE (run_id, step) IN (SELECT run_id, step FROM wait_names WHERE name = ?) "
            "ORDER BY created_at, run_id, step",
            (name,),
        ).fetchall()
        return [(row[0], Wait.model_validate_json(row[1])) for row in rows]

    def due_waits(self, now: datetime) -> list[tuple[str, Wait]]:
        rows = self._conn.execute(
            f"{_SELECT_WAIT} WHERE until IS NOT NULL AND until <= ? ORDER BY until", (_ts(now),)
        ).fetchall()
        return [(row[0], Wait.model_validate_json(row[1])) for row in rows]

    def insert_cancel_triggers(self, run_id: str, triggers: Sequence[tuple[str, dict[str, Any]]]) -> None:
        self._conn.executemany(
            "INSERT INTO cancel_triggers (run_id, name, match) VALUES (?, ?, ?)",
            [(run_id, name, _dump(match)) for name, match in triggers],
        )

    def cancel_triggers_for(self, name: str) -> list[tuple[str, dict[str, Any]]]:
        rows = self._conn.execute(
            "SELECT t.run_id, t.match FROM cancel_triggers t JOIN runs USING (run_id) "
            f"WHERE t.name = ? AND runs.status IN {_LIVE} ORDER BY t.run_id",
            (name,),
        ).fetchall()
        return [(row[0], json.loads(row[1])) for row in rows]

    def next_wake(self) -> datetime | None:
        row = self._conn.execute("SELECT min(until) FROM waits WHERE until IS NOT NULL").fetchone()
        return None if row[0] is None else datetime.fromisoformat(row[0])

    # Sub-agents and leases.

    def get_agent(self, run_id: str) -> Agent | None:
        row = self._conn.execute("SELECT doc FROM agents WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else Agent.model_validate_json(row[0])

    def save_agent(self, agent: Agent) -> None:
        self._conn.execute(
            "INSERT INTO agents (run_id, state, start_after, doc) VALUES (?, ?, ?, ?) ON CONFLICT (run_id) "
            "DO UPDATE SET state = excluded.state, start_after = excluded.start_after, doc = excluded.doc",
            (agent.run_id, agent.state.value, _ts(agent.start_after), agent.model_dump_json()),
        )

    def agents_in(self, states: Sequence[AgentState]) -> list[Agent]:
        rows = self._conn.execute(
            f"SELECT doc FROM agents WHERE state IN ({', '.join('?' * len(states))}) ORDER BY run_id",
            [state.value for state in states],
        ).fetchall()
        return [Agent.model_validate_json(row[0]) for row in rows]

    def startable_agents(self, now: datetime, limit: int) -> list[Agent]:
        rows = self._conn.execute(
            "SELECT a.doc FROM agents a JOIN runs r USING (run_id) "
            "WHERE ((a.state = 'queued' AND r.status IN ('queued', 'running')) "
            "OR (a.state = 'idle' AND r.status = 'running')) "
            "AND (a.start_after IS NULL OR a.start_after <= ?) ORDER BY a.run_id LIMIT ?",
            (_ts(now), limit),
        ).fetchall()
        return [Agent.model_validate_json(row[0]) for row in rows]

    def retired_agents(self) -> list[Agent]:
        rows = self._conn.execute(
            "SELECT a.doc FROM agents a JOIN runs r USING (run_id) "
            f"WHERE a.state IN ('queued', 'idle') AND r.status NOT IN {_LIVE} ORDER BY a.run_id"
        ).fetchall()
        return [Agent.model_validate_json(row[0]) for row in rows]

    def next_agent_start(self) -> datetime | None:
        row = self._conn.execute(
            "SELECT min(a.start_after) FROM agents a JOIN runs r USING (run_id) "
            f"WHERE a.state = 'queued' AND r.status IN {_LIVE}"
        ).fetchone()
        return None if row[0] is None else datetime.fromisoformat(row[0])

    def get_lease(self, name: str) -> tuple[str, datetime] | None:
        row = self._conn.execute("SELECT holder, expires_at FROM leases WHERE name = ?", (name,)).fetchone()
        return None if row is None else (row[0], datetime.fromisoformat(row[1]))

    def put_lease(self, name: str, holder: str, expires_at: datetime) -> None:
        self._conn.execute(
            "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at",
            (name, holder, _ts(expires_at)),
        )

    def delete_lease(self, name: str, holder: str) -> None:
        self._conn.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder))

    def journal_after(self, seq: int, kinds: Sequence[str], limit: int) -> list[JournalEntry]:
        rows = self._conn.execute(
            f"{_SELECT_JOURNAL} WHERE seq > ? AND kind IN ({', '.join('?' * len(kinds))}) ORDER BY seq LIMIT ?",
            (seq, *kinds, limit),
        ).fetchall()
        return [JournalEntry.model_validate_json(row[0]) for row in rows]

    def get_cursor(self, name: str) -> int:
        row = self._conn.execute("SELECT seq FROM cursors WHERE name = ?", (name,)).fetchone()
        return 0 if row is None else int(row[0])

    def set_cursor(self, name: str, seq: int) -> None:
        self._conn.execute(
            "INSERT INTO cursors (name, seq) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET seq = excluded.seq",
            (name, seq),
        )

    # Retention.

    def ended_runs_before(self, cutoff: datetime, limit: int) -> list[str]:
        rows = self._conn.execute(
            f"SELECT run_id FROM runs WHERE status NOT IN {_LIVE} AND ended_at < ? "
            "AND run_id IS NOT (SELECT run_id FROM journal ORDER BY seq DESC LIMIT 1) ORDER BY ended_at LIMIT ?",
            (_ts(cutoff), limit),
        ).fetchall()
        return [row[0] for row in rows]

    def delete_runs(self, run_ids: Sequence[str]) -> None:
        self._conn.executemany("DELETE FROM runs WHERE run_id = ?", [(run_id,) for run_id in run_ids])

    def oldest_live_run_created(self) -> datetime | None:
        row = self._conn.execute(f"SELECT min(created_at) FROM runs WHERE status IN {_LIVE}").fetchone()
        return None if row[0] is None else datetime.fromisoformat(row[0])

    def delete_events_before(self, cutoff: datetime) -> int:
        cursor = self._conn.execute(
            "DELETE FROM events WHERE received_at < ? AND seq < (SELECT max(seq) FROM events)", (_ts(cutoff),)
        )
        return cursor.rowcount

    def delete_firings_before(self, cutoff: datetime) -> int:
        return self._conn.execute("DELETE FROM schedule_firings WHERE due_at < ?", (_ts(cutoff),)).rowcount

    # Schedules.

    def get_schedule(self, name: str) -> Schedule | None:
        row = self._conn.execute("SELECT doc FROM schedules WHERE name = ?", (name,)).fetchone()
        return None if row is None else Schedule.model_validate_json(row[0])

    def save_schedule(self, schedule: Schedule) -> None:
        self._conn.execute(
            "INSERT INTO schedules (name, enabled, next_due, doc) VALUES (?, ?, ?, ?) ON CONFLICT (name) "
            "DO UPDATE SET enabled = excluded.enabled, next_due = excluded.next_due, doc = excluded.doc",
            (
                schedule.name,
                int(schedule.enabled),
                _ts(schedule.next_due),
                schedule.model_dump_json(exclude={"upcoming"}),
            ),
        )

    def delete_schedule(self, name: str) -> None:
        self._conn.execute("DELETE FROM schedules WHERE name = ?", (name,))
        self._conn.execute("DELETE FROM schedule_firings WHERE name = ?", (name,))

    def list_schedules(self, enabled: bool | None) -> list[Schedule]:
        where, params = ("", ()) if enabled is None else ("WHERE enabled = ?", (int(enabled),))
        rows = self._conn.execute(f"SELECT doc FROM schedules {where} ORDER BY name", params).fetchall()
        return [Schedule.model_validate_json(row[0]) for row in rows]

    def due_schedules(self, now: datetime, limit: int) -> list[Schedule]:
        rows = self._conn.execute(
            "SELECT doc FROM schedules INDEXED BY schedules_due "
            "WHERE enabled = 1 AND next_due IS NOT NULL AND next_due <= ? ORDER BY next_due LIMIT ?",
            (_ts(now), limit),
        ).fetchall()
        return [Schedule.model_validate_json(row[0]) for row in rows]

    def next_schedule_due(self) -> datetime | None:
        row = self._conn.execute(
            "SELECT min(next_due) FROM schedules INDEXED BY schedules_due WHERE enabled = 1 AND next_due IS NOT NULL"
        ).fetchone()
        return None if row[0] is None else datetime.fromisoformat(row[0])

    def has_firing(self, name: str, due_at: datetime) -> bool:
        row = self._conn.execute(
            "SELECT 1 FROM schedule_firings WHERE name = ? AND due_at = ?", (name, _ts(due_at))
        ).fetchone()
        return row is not None

    def insert_firing(self, name: str, firing: Firing) -> None:
        self._conn.execute(
            "INSERT INTO schedule_firings (name, due_at, doc) VALUES (?, ?, ?)",
            (name, _ts(firing.due_at), firing.model_dump_json()),
        )

    def list_firings(self, name: str, limit: int) -> list[Firing]:
        rows = self._conn.execute(
            "SELECT doc FROM schedule_firings WHERE name = ? ORDER BY due_at DESC LIMIT ?", (name, limit)
        ).fetchall()
        return [Firing.model_validate_json(row[0]) for row in rows]


class SQLiteStore:
    """See the module docstring. ``location`` is the database file's path."""

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "full",
        lock_wait_s: float = 60.0,
    ) -> None:
        self.location = str(path)
        self._synchronous = synchronous.upper()
        self._lock_wait_s = lock_wait_s
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._writer_task: asyncio.Task[None] | None = None
        self._changes = Changes()  # the commits seen: ours, and others' the poller noticed
        self._watchers = 0
        self._shm: int | None = None  # the WAL index file, read to see commits (see _version)
        self._seen: bytes | int | None = None  # the version waiters last saw
        self._local_commits = 0
        self._poller: asyncio.Task[None] | None = None
        self._opened: list[_Opened] = []  # the files, as they were when the store opened them
        self._looked_at = 0.0  # time.monotonic() of the last look at them
        self._gone: StoreFileGone | None = None
        self._watch: asyncio.Task[None] | None = None
        self._after_gone_task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        try:
            Path(self.location).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the directory of the store {self.location}: {exc.strerror}") from exc
        created = not Path(self.location).exists()
        try:
            self._writer = await aiosqlite.connect(self.location, isolation_level=None)
            if created:  # runs hold agents' inputs and outputs: the owner's alone (SQLite gives -wal the same)
                os.chmod(self.location, 0o600)
            self._reader = await aiosqlite.connect(self.location, isolation_level=None)
            await _on_thread(self._writer, self._configure_writer)
            await _on_thread(self._reader, self._configure_reader)
        except BaseException as exc:
            await self.close()  # a connection left open keeps its thread, and the process, alive
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"cannot open the store {self.location}: {exc}") from exc
            raise
        with contextlib.suppress(OSError):
            self._shm = os.open(f"{self.location}-shm", os.O_RDONLY)
        self._seen = await self._version()
        self._opened = [
            _Opened(path, what, found) for path, what in _paths(self.location) if (found := _identity(path))
        ]
        self._looked_at = time.monotonic()
        loop = asyncio.get_running_loop()
        self._writer_task = loop.create_task(self._write_loop(), name="sqlite-writer")
        self._watch = loop.create_task(self._watch_files(), name="sqlite-file-watch")

    async def close(self) -> None:
        """Finish the writes already queued, then close both connections."""
        for task in (self._poller, self._watch):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._poller = self._watch = None
        if self._writer_task is not None:
            self._queue.put_nowait(_STOP)
            await self._writer_task
            self._writer_task = None
        if self._after_gone_task is not None:
            await self._after_gone_task
        for conn in (self._writer, self._reader):
            if conn is not None:
                await conn.close()
        self._writer = self._reader = None
        if self._shm is not None:  # after the connections: closing any descriptor of the file drops
            os.close(self._shm)  # the process's locks on it, SQLite's included
            self._shm = None

    async def __aenter__(self) -> SQLiteStore:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def write(self, fn: Callable[[SQLiteTransaction], T], *, wake: bool = True) -> T:
        # ``wake`` goes unused: other processes see every commit in the WAL index, and a batch
        # commits quiet and other writes together.
        if self._writer_task is None:
            raise StoreError(f"the store {self.location} is not open")
        self._refuse_if_gone(max_age=float("inf"))  # the writer looks again before it commits
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((fn, future))
        return await future

    async def read(self, fn: Callable[[SQLiteTransaction], T]) -> T:
        if self._reader is None:
            raise StoreError(f"the store {self.location} is not open")
        self._refuse_if_gone(max_age=_READ_LOOK_S)
        try:
            return await _on_thread(self._reader, lambda conn: self._retry_busy(conn, "BEGIN", fn))
        except sqlite3.Error as exc:
            raise _translate(exc, self.location) from exc

    @property
    def generation(self) -> int:
        return self._changes.generation

    async def wait_for_change(self, timeout: float, since: int | None = None) -> None:
        """Return after a commit to the store by anyone (this process or another), or after ``timeout``;
        at once if a commit was seen since ``generation`` was ``since``.

        Commits in this process wake waiters at once; another process's commits are seen by polling
        the WAL index's change counter every few milliseconds, and only while somebody waits.
        """
        if self._changes.moved(since):
            return
        self._watchers += 1
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll_foreign_commits(), name="sqlite-poller")
        try:
            await self._changes.wait(timeout)
        finally:
            self._watchers -= 1

    async def _version(self) -> bytes | int:
        """Changes with every commit by any process. The WAL index (the -shm file) starts with a
        header whose change counter each commit bumps (SQLite's documented WAL format): reading its
        48 bytes in the event loop costs a microsecond, where asking SQLite for data_version costs
        a hop to the reader's thread. The pragma remains the way when there is no -shm file."""
        if self._shm is not None:
            return os.pread(self._shm, 48, 0)
        assert self._reader is not None
        return await _on_thread(self._reader, _data_version)

    async def _poll_foreign_commits(self) -> None:
        # It starts from the version the previous poller saw last, so a commit made while no poller
        # ran (between a waiter's check and its wait) wakes the waiter at once instead of being missed.
        changed_at = time.monotonic()
        local = self._local_commits
        while self._reader is not None:
            current = await self._version()
            if current != self._seen:
                self._seen = current
                if self._local_commits == local:  # another process is busy: look often for a while
                    changed_at = time.monotonic()
                self._changes.seen()
            local = self._local_commits
            if self._watchers == 0:
                return
            # Each wake-up of the loop costs CPU even with nothing to read: after a quiet spell,
            # look less often (a first change after it is seen a few milliseconds later).
            quiet_for = time.monotonic() - changed_at
            await asyncio.sleep(next(pause for after, pause in _POLL_LADDER if quiet_for >= after))

    # The files under a running server (see the module docstring).

    def _look(self) -> StoreFileGone | None:
        """Whether a file this store opened is no longer at its path (any thread; once gone, gone)."""
        if self._gone is None:
            self._looked_at = time.monotonic()
            for opened in self._opened:
                found = _identity(opened.path)
                if found != opened.identity:
                    self._gone = _gone_error(opened, found)
                    break
        return self._gone

    def _refusal(self) -> StoreFileGone:
        # A new exception each time: raising one instance again and again would grow its traceback.
        assert self._gone is not None
        return StoreFileGone(self._gone.message, **self._gone.fields)

    def _refuse_if_gone(self, max_age: float) -> None:
        """Raise ``StoreFileGone`` if a file is known gone, or found gone by a look (taken when the
        last one is older than ``max_age`` seconds)."""
        if self._gone is None and time.monotonic() - self._looked_at >= max_age:
            self._look()
        if self._gone is not None:
            self._notice_gone()
            raise self._refusal()

    def _refuse_commit_if_gone(self) -> None:
        # On the writer's thread, just before COMMIT: no write is acknowledged into a file that went.
        if self._look() is not None:
            raise self._refusal()

    def _notice_gone(self) -> None:
        """On the event loop, once: report the loss and do what follows from it."""
        if self._gone is not None and self._after_gone_task is None:
            self._after_gone_task = asyncio.get_running_loop().create_task(self._after_gone(), name="sqlite-gone")

    async def _after_gone(self) -> None:
        assert self._gone is not None
        log.error("%s", self._gone.message)
        self._changes.seen()  # blocked waits look again, and meet the refusal
        # The database file went but its log is still at the path: empty the log into the file this
        # process holds, so it is not applied to the file that takes the path (SQLite would apply it).
        database, *logs = self._opened
        if (
            self._gone.fields["path"] == database.path
            and self._writer is not None
            and logs
            and all(_identity(opened.path) == opened.identity for opened in logs)
        ):
            with contextlib.suppress(ValueError):  # the connection closed meanwhile: nothing to retire
                await _on_thread(self._writer, _retire_log)

    async def _watch_files(self) -> None:
        """Look at the files every ``_WATCH_S`` even when nobody reads or writes, so a server left
        idle reports the loss (and retires its log) soon after it happens."""
        while True:
            await asyncio.sleep(_WATCH_S)
            if time.monotonic() - self._looked_at >= _WATCH_S and self._look() is not None:
                self._notice_gone()
                return

    # Everything below runs on a connection's own thread, except the write loop.

    def _configure(self, conn: sqlite3.Connection) -> None:
        # busy_timeout lets SQLite itself wait for another process's lock; _retry_busy adds jitter
        # and a longer overall bound on top, for bursts where the built-in handler gives up.
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("PRAGMA foreign_keys = ON")

    def _configure_writer(self, conn: sqlite3.Connection) -> None:
        self._configure(conn)
        deadline = time.monotonic() + self._lock_wait_s
        while True:
            try:
                (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
                break
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(random.uniform(0.005, 0.05))
        if mode.lower() != "wal":
            raise StoreError(f"the store {self.location} cannot use WAL mode (got {mode!r}); use a local disk")
        conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        self._retry_busy(conn, "BEGIN IMMEDIATE", lambda tx: migrate(conn, self.location))

    def _configure_reader(self, conn: sqlite3.Connection) -> None:
        self._configure(conn)
        conn.execute("PRAGMA query_only = ON")

    def _retry_busy(
        self,
        conn: sqlite3.Connection,
        begin: str,
        fn: Callable[[SQLiteTransaction], T],
        before_commit: Callable[[], None] | None = None,
    ) -> T:
        deadline = time.monotonic() + self._lock_wait_s
        while True:
            try:
                conn.execute(begin)
                try:
                    result = fn(SQLiteTransaction(conn))
                    if before_commit is not None:
                        before_commit()
                    conn.execute("COMMIT")
                    return result
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(random.uniform(0.001, 0.02))

    def _run_batch(
        self, conn: sqlite3.Connection, fns: list[Callable[[SQLiteTransaction], Any]]
    ) -> list[tuple[bool, Any]]:
        # Optimistic: the whole batch in one transaction with no savepoints. Writes rarely fail
        # (the engine checks before it writes), so the two extra statements per write a savepoint
        # costs are paid only when one does: then the batch is rolled back and run again with each
        # write in its own savepoint, so one caller's error leaves the others' writes standing.
        check = self._refuse_commit_if_gone
        try:
            return self._retry_busy(conn, "BEGIN IMMEDIATE", lambda tx: [(True, fn(tx)) for fn in fns], check)
        except Exception as exc:
            if len(fns) == 1:
                return [(False, _translate(exc, self.location))]
            if isinstance(exc, StoreFileGone) or (isinstance(exc, sqlite3.OperationalError) and _is_busy(exc)):
                raise

        def isolated(tx: SQLiteTransaction) -> list[tuple[bool, Any]]:
            outcomes: list[tuple[bool, Any]] = []
            for fn in fns:
                conn.execute("SAVEPOINT one_write")
                try:
                    outcomes.append((True, fn(tx)))
                except Exception as exc:
                    if isinstance(exc, sqlite3.OperationalError) and _is_busy(exc):
                        raise  # _retry_busy runs the whole batch again
                    conn.execute("ROLLBACK TO one_write")
                    outcomes.append((False, _translate(exc, self.location)))
                conn.execute("RELEASE one_write")
            return outcomes

        return self._retry_busy(conn, "BEGIN IMMEDIATE", isolated, check)

    async def _write_loop(self) -> None:
        assert self._writer is not None
        writer = self._writer
        stopping = False
        while not stopping:
            batch: list[tuple[Callable[[SQLiteTransaction], Any], asyncio.Future[Any]]] = []
            item = await self._queue.get()
            while True:
                if item is _STOP:
                    stopping = True
                    break
                if not item[1].done():  # a caller cancelled before its write began: skip it
                    batch.append(item)
                if len(batch) >= _MAX_BATCH or self._queue.empty():
                    break
                item = self._queue.get_nowait()
            if batch:
                await self._commit(writer, batch)

    async def _commit(
        self,
        writer: aiosqlite.Connection,
        batch: list[tuple[Callable[[SQLiteTransaction], Any], asyncio.Future[Any]]],
    ) -> None:
        fns = [fn for fn, _ in batch]
        try:
            outcomes = await _on_thread(writer, lambda conn: self._run_batch(conn, fns))
        except StoreFileGone:
            outcomes = [(False, self._refusal()) for _ in batch]
        except Exception as exc:
            outcomes = [(False, _translate(exc, self.location))] * len(batch)
        if self._gone is not None:
            self._notice_gone()
        for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
            if future.done():
                continue  # the caller gave up while its write was being committed
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        self._local_commits += 1
        self._changes.seen()


def _paths(location: str) -> list[tuple[str, str]]:
    """The store's files while it is open, each with what a message calls it. SQLite puts the log
    and the index beside the file a symbolic link names; the database is looked for at the link."""
    database, real = os.path.abspath(location), os.path.realpath(location)
    return [(real + suffix if suffix else database, what) for suffix, what in _FILES]


def _identity(path: str) -> tuple[int, int] | None:
    """The (st_dev, st_ino) of the file at ``path``, None if nothing can be found there. A stat, never
    an open: closing a descriptor of the database would drop SQLite's locks on it."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


class _Opened(NamedTuple):
    path: str
    what: str  # what a message calls it
    identity: tuple[int, int]  # (st_dev, st_ino)


def _gone_error(opened: _Opened, found: tuple[int, int] | None) -> StoreFileGone:
    now = "nothing is there now" if found is None else f"inode {found[1]} is there now"
    return StoreFileGone(
        f"the {opened.what} {opened.path} was removed or replaced while this server had it open "
        f"(inode {opened.identity[1]} is no longer at that path: {now}); nothing more is written to it or "
        "read from it: restart the server against the file you mean to use, and stop every server "
        "before you move, delete or restore a store's files",
        path=opened.path,
        inode=opened.identity[1],
    )


def _retire_log(conn: sqlite3.Connection) -> None:
    """Copy the write-ahead log into the database file this connection holds and empty it."""
    with contextlib.suppress(sqlite3.Error):
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


def _data_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA data_version").fetchone()[0])


async def _on_thread(db: aiosqlite.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    # aiosqlite runs each call on the connection's own thread; handing it a whole transaction
    # makes that one hop instead of one per statement, which is most of the cost of a durable
    # checkpoint. _execute and _conn are aiosqlite internals, pinned by the dependency's range
    # and covered by the store tests.
    return await db._execute(fn, db._conn)


def _translate(exc: BaseException, location: str) -> BaseException:
    """sqlite3 errors become StoreError; everything else passes through unchanged."""
    if not isinstance(exc, sqlite3.Error):
        return exc
    if isinstance(exc, sqlite3.OperationalError) and _is_busy(exc):
        error: StoreError = StoreBusy(
            f"the store {location} stayed locked by another process for too long; the write was not made, try it again",
        )
    else:
        error = StoreError(f"the store {location} failed: {exc}")
    error.__cause__ = exc
    return error
