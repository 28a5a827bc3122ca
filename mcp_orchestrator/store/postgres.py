"""The shared store: one PostgreSQL database for several orchestrator nodes (asyncpg).

Transactions: a transaction function reads, decides and writes as if it were alone, exactly as
under SQLite's single writer; here many run at once (on several nodes), so a write transaction
locks what it reads before deciding on it. Rows read by key are locked as they are read (``FOR NO
KEY UPDATE``: a run, a sub-agent, a schedule), so two transactions on one run take turns while
transactions on different runs proceed in parallel. What is not a row yet is guarded by an advisory
lock on its name: an event name or a run awaited (a wait registered and an event sent at once see
each other), a lease, the sub-agent limits (claims and reaps take turns store-wide). Rows a node
takes work from are read ``FOR UPDATE SKIP LOCKED`` (queued sub-agents, due waits, overdue runs,
due schedules), so nodes never queue behind each other's rows. Writes run ``READ COMMITTED`` (every
statement sees what committed before it, including the work of a lock just waited for); a deadlock
or a key inserted by someone else in the meantime runs the function again on a fresh transaction,
as the ``Transaction`` contract allows. Reads run ``REPEATABLE READ READ ONLY``: one consistent
snapshot.

The transaction function is synchronous (see ``store.base``) and asyncpg is not: the function runs
in a greenlet of its own on the event loop's thread, and each statement switches back to the loop
for asyncpg to run it (the bridge SQLAlchemy's asyncio support uses). A switch costs about a
microsecond, where handing each statement from a worker thread to the loop and back costs two
thread wake-ups.

Wake-ups: every write transaction but a quiet one (``wake=False``: heartbeats) sends ``NOTIFY`` on
the store's channel; it is delivered when the transaction commits, to every node listening (one
connection per process, opened when something first waits). A notification from this process is
ignored: its own commits wake its waiters at once. PostgreSQL makes transactions that notify take
turns at commit (so notifications arrive in commit order): their commits cannot be grouped.

Connections that fail: a transaction whose connection is lost before ``COMMIT`` is sent is run again
on a new connection. One lost during ``COMMIT`` may or may not have been made: the store asks the
server (``txid_status`` of the transaction id taken just before) and answers with the function's
result if it was made, runs it again if not, and raises a ``StoreError`` saying the outcome is
unknown only if the server cannot tell (nothing is retried that could be made twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import greenlet

from ..errors import SchemaTooNew, StoreBusy, StoreError
from ..ids import new_id
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
from .postgres_schema import CREATE_VERSION_TABLE, MIGRATIONS, SCHEMA_VERSION

T = TypeVar("T")

_LIVE = "(" + ", ".join(f"'{status.value}'" for status in sorted(LIVE_RUN_STATUSES)) + ")"
# Transient refusals: the transaction was not made, and running it again (it reads afresh) is the remedy.
_RETRYABLE = (asyncpg.SerializationError, asyncpg.DeadlockDetectedError)
# A key inserted by a concurrent transaction (the same idempotency key, event id or step): run again,
# the function then finds the row and answers as for a repeated call. A few times only: more is a bug.
_KEY_TAKEN_RETRIES = 3
_LOCK_SPACE = 0x6D63706F  # the first key of every advisory lock this store takes
# A gap in journal numbers younger than this may be a transaction still open (numbers are taken
# before commit): journal readers stop before it. Older gaps are rollbacks or removed runs.
_JOURNAL_SETTLE_S = 10.0
_EVENTS_PAGE = 200
_BEGIN_WRITE = "BEGIN ISOLATION LEVEL READ COMMITTED"
_BEGIN_READ = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
_XID_AND_NOTIFY = "SELECT txid_current() FROM pg_notify($1, $2)"
_SERVER_SETTINGS = {"timezone": "UTC", "application_name": "mcp-orchestrator"}  # every connection's


def _count(status: str) -> int:
    """The row count of a command tag such as ``DELETE 12``."""
    return int(status.rsplit(" ", 1)[-1])


def _run_document(payloads: str) -> str:
    # The database builds each row's JSON document and pydantic parses it in one call, as on
    # SQLite; updated_at is the time of the run's latest journal entry.
    return (
        "SELECT json_build_object('run_id', run_id, 'name', name, 'key', key, 'status', status, "
        f"{payloads}, 'parent_run_id', parent_run_id, 'labels', labels, "
        "'workspace', workspace, 'retry', retry, 'deadline_at', deadline_at, "
        "'created_at', created_at, 'ended_at', ended_at, 'updated_at', coalesce("
        "(SELECT at FROM journal WHERE journal.run_id = runs.run_id ORDER BY seq DESC LIMIT 1), created_at)"
        ")::text FROM runs"
    )


_SELECT_RUN = _run_document("'input', input, 'output', output, 'error', error")
_SELECT_RUN_LEAN = _run_document("'input', NULL, 'output', NULL, 'error', NULL")
_SELECT_STEP = (
    "SELECT json_build_object('step', step, 'kind', kind, 'status', status, 'attempt', attempt, 'output', output, "
    "'error', error, 'started_at', started_at, 'ended_at', ended_at, 'retry_at', retry_at)::text FROM steps"
)
_SELECT_EVENT = (
    "SELECT seq, json_build_object('event_id', event_id, 'name', name, 'data', data, 'source', source, "
    "'received_at', received_at)::text FROM events"
)
_SELECT_WAIT = (
    "SELECT run_id, json_build_object('step', step, 'kind', kind, 'events', names, 'match', match, 'mode', mode, "
    "'until', until, 'created_at', created_at)::text FROM waits"
)
_SELECT_JOURNAL = (
    "SELECT json_build_object('seq', seq, 'run_id', run_id, 'at', at, 'kind', kind, 'step', step, "
    "'attempt', attempt, 'detail', coalesce(detail, '{}'::json))::text FROM journal"
)


class PostgresTransaction:
    """Row reads and writes inside one PostgreSQL transaction (see ``store.base``); called in the
    transaction's greenlet (see ``_run_in_greenlet``), each statement is awaited on the event loop."""

    def __init__(self, conn: asyncpg.Connection, *, writable: bool) -> None:
        self._conn = conn
        self._writable = writable
        self._locked: set[str] = set()  # advisory locks held: taken once, kept until the end

    def _await(self, awaitable: Awaitable[T]) -> T:
        return _await_from_greenlet(awaitable)

    def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return self._await(self._conn.fetch(sql, *args))

    def _fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        return self._await(self._conn.fetchrow(sql, *args))

    def _fetchval(self, sql: str, *args: Any) -> Any:
        return self._await(self._conn.fetchval(sql, *args))

    def _execute(self, sql: str, *args: Any) -> str:
        return self._await(self._conn.execute(sql, *args))

    def _executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            self._await(self._conn.executemany(sql, rows))

    def _locking(self, clause: str = "FOR NO KEY UPDATE") -> str:
        """The locking clause for a read in a write transaction (rows decided on stay as read)."""
        return f" {clause}" if self._writable else ""

    def _lock_names(self, *names: str) -> None:
        """In a write transaction, take the advisory locks of these names (until it ends), in a fixed
        order so that two transactions wanting the same names cannot deadlock."""
        wanted = sorted(set(names) - self._locked)
        if self._writable and wanted:
            self._execute(
                "SELECT pg_advisory_xact_lock($1, hashtext(name)) FROM unnest($2::text[]) name", _LOCK_SPACE, wanted
            )
            self._locked.update(wanted)

    def get_run(self, run_id: str, *, payloads: bool = True) -> Run | None:
        select = _SELECT_RUN if payloads else _SELECT_RUN_LEAN
        document = self._fetchval(f"{select} WHERE run_id = $1{self._locking()}", run_id)
        return None if document is None else Run.model_validate_json(document)

    def get_run_by_key(self, key: str) -> Run | None:
        document = self._fetchval(f"{_SELECT_RUN} WHERE key = $1{self._locking()}", key)
        return None if document is None else Run.model_validate_json(document)

    def peek_runs(self, run_ids: Sequence[str], *, settle: bool = False) -> list[Run | None]:
        # FOR SHARE waits for a transaction changing the run (and keeps others from changing it until
        # this one ends) without blocking other readers.
        rows = self._fetch(
            f"{_SELECT_RUN_LEAN} WHERE run_id = ANY($1::text[])" + (self._locking("FOR SHARE") if settle else ""),
            list(run_ids),
        )
        found = {run.run_id: run for run in (Run.model_validate_json(row[0]) for row in rows)}
        return [found.get(run_id) for run_id in run_ids]

    def insert_run(self, run: Run) -> None:
        self._execute(
            "INSERT INTO runs (run_id, name, key, status, input, output, error, parent_run_id, labels, workspace, "
            "retry, deadline_at, created_at, ended_at, events_after) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, "
            "(SELECT coalesce(max(seq), 0) FROM events))",
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
            run.deadline_at,
            run.created_at,
            run.ended_at,
        )
        self._executemany(
            "INSERT INTO run_labels (key, value, run_id) VALUES ($1, $2, $3)",
            [(key, value, run.run_id) for key, value in run.labels.items()],
        )

    def list_runs(self, query: RunFilter) -> list[Run]:
        clauses: list[str] = []
        params: list[Any] = []

        def param(value: Any) -> str:
            params.append(value)
            return f"${len(params)}"

        if query.statuses:
            clauses.append(f"status = ANY({param([status.value for status in query.statuses])}::text[])")
        for column, value in (
            ("name", query.name),
            ("parent_run_id", query.parent_run_id),
            ("workspace", query.workspace),
        ):
            if value is not None:
                clauses.append(f"{column} = {param(value)}")
        if query.since is not None:
            clauses.append(f"created_at >= {param(query.since)}")
        if query.before_run_id is not None:
            clauses.append(f"run_id < {param(query.before_run_id)}")
        for key, value in query.labels:
            condition = f"l.key = {param(key)}" + ("" if value is None else f" AND l.value = {param(value)}")
            clauses.append(f"EXISTS (SELECT 1 FROM run_labels l WHERE l.run_id = runs.run_id AND {condition})")
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._fetch(f"{_SELECT_RUN} {where} ORDER BY run_id DESC LIMIT {param(query.limit)}", *params)
        return [Run.model_validate_json(row[0]) for row in rows]

    def list_children(self, run_id: str) -> list[Run]:
        rows = self._fetch(f"{_SELECT_RUN} WHERE parent_run_id = $1 ORDER BY run_id", run_id)
        return [Run.model_validate_json(row[0]) for row in rows]

    def live_descendant_ids(self, run_id: str) -> list[str]:
        rows = self._fetch(
            f"""
            WITH RECURSIVE tree (run_id) AS (
                SELECT run_id FROM runs WHERE parent_run_id = $1
                UNION
                SELECT runs.run_id FROM runs JOIN tree ON runs.parent_run_id = tree.run_id
            )
            SELECT runs.run_id FROM runs JOIN tree USING (run_id) WHERE runs.status IN {_LIVE} ORDER BY runs.run_id
            {self._locking("FOR NO KEY UPDATE OF runs")}
            """,
            run_id,
        )
        return [row[0] for row in rows]

    def overdue_run_ids(self, now: datetime) -> list[str]:
        rows = self._fetch(
            f"SELECT run_id FROM runs WHERE deadline_at IS NOT NULL AND status IN {_LIVE} AND deadline_at <= $1"
            + self._locking("FOR NO KEY UPDATE SKIP LOCKED"),
            now,
        )
        return [row[0] for row in rows]

    def set_runs_status(
        self, run_ids: Sequence[str], status: RunStatus, at: datetime, *, output: Any = None, error: Any = None
    ) -> None:
        values = (status.value, _dump(output), _dump(error), at if status.terminal else None)
        self._executemany(
            "UPDATE runs SET status = $1, output = $2, error = $3, ended_at = $4 WHERE run_id = $5",
            [(*values, run_id) for run_id in run_ids],
        )

    def restart_run(self, run_id: str, status: RunStatus, deadline_at: datetime | None) -> None:
        self._execute(
            "UPDATE runs SET status = $1, output = NULL, error = NULL, ended_at = NULL, deadline_at = $2 "
            "WHERE run_id = $3",
            status.value,
            deadline_at,
            run_id,
        )

    def get_step(self, run_id: str, step: str) -> Step | None:
        document = self._fetchval(f"{_SELECT_STEP} WHERE run_id = $1 AND step = $2", run_id, step)
        return None if document is None else Step.model_validate_json(document)

    def delete_step(self, run_id: str, step: str) -> None:
        self._execute("DELETE FROM steps WHERE run_id = $1 AND step = $2", run_id, step)

    def list_steps(self, run_id: str) -> list[Step]:
        rows = self._fetch(f"{_SELECT_STEP} WHERE run_id = $1 ORDER BY position", run_id)
        return [Step.model_validate_json(row[0]) for row in rows]

    def save_step(self, run_id: str, step: Step) -> None:
        self._execute(
            """
            INSERT INTO steps (run_id, step, kind, status, attempt, output, error, started_at, ended_at, retry_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
            ON CONFLICT (run_id, step) DO UPDATE SET
                kind = excluded.kind, status = excluded.status, attempt = excluded.attempt,
                output = excluded.output, error = excluded.error, started_at = excluded.started_at,
                ended_at = excluded.ended_at, retry_at = excluded.retry_at
            """,
            run_id,
            step.step,
            step.kind,
            step.status.value,
            step.attempt,
            _dump(step.output),
            _dump(step.error),
            step.started_at,
            step.ended_at,
            step.retry_at,
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
        self._execute(
            "INSERT INTO journal (run_id, at, kind, step, attempt, detail) VALUES ($1, $2, $3, $4, $5, $6)",
            run_id,
            at,
            kind,
            step,
            attempt,
            _dump(detail) if detail else None,
        )

    def read_journal(self, run_id: str, limit: int) -> list[JournalEntry]:
        rows = self._fetch(f"{_SELECT_JOURNAL} WHERE run_id = $1 ORDER BY seq DESC LIMIT $2", run_id, limit)
        return [JournalEntry.model_validate_json(row[0]) for row in reversed(rows)]

    # Events and waits.

    def events_after(self, run_id: str) -> int:
        value = self._fetchval("SELECT events_after FROM runs WHERE run_id = $1", run_id)
        return 0 if value is None else int(value)

    def insert_event(self, event: Event) -> int:
        return int(
            self._fetchval(
                "INSERT INTO events (event_id, name, data, source, received_at) VALUES ($1, $2, $3, $4, $5) "
                "RETURNING seq",
                event.event_id,
                event.name,
                _dump(event.data),
                event.source,
                event.received_at,
            )
        )

    def has_event(self, event_id: str) -> bool:
        return self._fetchval("SELECT 1 FROM events WHERE event_id = $1", event_id) is not None

    def unconsumed_events(self, run_id: str, names: Sequence[str], after_seq: int) -> Iterator[tuple[int, Event]]:
        # A wait about to be registered and an event being sent take the same name locks, so that
        # one of them always sees the other (see waits_for).
        self._lock_names(*names)
        # Page by page: the caller usually stops at the first event that matches.
        while True:
            rows = self._fetch(
                f"{_SELECT_EVENT} WHERE name = ANY($1::text[]) AND seq > $2 AND NOT EXISTS "
                "(SELECT 1 FROM consumed_events c WHERE c.run_id = $3 AND c.event_seq = events.seq) "
                f"ORDER BY seq LIMIT {_EVENTS_PAGE}",
                list(names),
                after_seq,
                run_id,
            )
            for row in rows:
                yield row[0], Event.model_validate_json(row[1])
            if len(rows) < _EVENTS_PAGE:
                return
            after_seq = rows[-1][0]

    def consume_event(self, run_id: str, seq: int, step: str) -> None:
        self._execute("INSERT INTO consumed_events (run_id, event_seq, step) VALUES ($1, $2, $3)", run_id, seq, step)

    def list_events(self, name: str | None, limit: int, before_seq: int | None = None) -> list[tuple[int, Event]]:
        rows = self._fetch(
            f"{_SELECT_EVENT} WHERE ($1::text IS NULL OR name = $1) AND ($2::bigint IS NULL OR seq < $2) "
            "ORDER BY seq DESC LIMIT $3",
            name,
            before_seq,
            limit,
        )
        return [(row[0], Event.model_validate_json(row[1])) for row in rows]

    def insert_wait(self, run_id: str, wait: Wait) -> None:
        self._execute(
            "INSERT INTO waits (run_id, step, kind, names, match, mode, until, created_at) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            run_id,
            wait.step,
            wait.kind,
            _dump(wait.events),
            _dump(wait.match),
            wait.mode,
            wait.until,
            wait.created_at,
        )
        self._executemany(
            "INSERT INTO wait_names (name, run_id, step) VALUES ($1, $2, $3)",
            [(name, run_id, wait.step) for name in dict.fromkeys(wait.events)],
        )

    def delete_wait(self, run_id: str, step: str) -> None:
        self._execute("DELETE FROM waits WHERE run_id = $1 AND step = $2", run_id, step)

    def get_wait(self, run_id: str, step: str) -> Wait | None:
        row = self._fetchrow(f"{_SELECT_WAIT} WHERE run_id = $1 AND step = $2", run_id, step)
        return None if row is None else Wait.model_validate_json(row[1])

    def list_waits(self, run_id: str) -> list[Wait]:
        rows = self._fetch(f"{_SELECT_WAIT} WHERE run_id = $1 ORDER BY created_at, step", run_id)
        return [Wait.model_validate_json(row[1]) for row in rows]

    def waits_for(self, name: str) -> list[tuple[str, Wait]]:
        self._lock_names(name)
        rows = self._fetch(
            f"{_SELECT_WAIT} WHERE (run_id, step) IN (SELECT run_id, step FROM wait_names WHERE name = $1) "
            "ORDER BY created_at, run_id, step" + self._locking("FOR UPDATE"),
            name,
        )
        return [(row[0], Wait.model_validate_json(row[1])) for row in rows]

    def due_waits(self, now: datetime) -> list[tuple[str, Wait]]:
        rows = self._fetch(
            f"{_SELECT_WAIT} WHERE until IS NOT NULL AND until <= $1 ORDER BY until"
            + self._locking("FOR UPDATE SKIP LOCKED"),
            now,
        )
        return [(row[0], Wait.model_validate_json(row[1])) for row in rows]

    def insert_cancel_triggers(self, run_id: str, triggers: Sequence[tuple[str, dict[str, Any]]]) -> None:
        self._executemany(
            "INSERT INTO cancel_triggers (run_id, name, match) VALUES ($1, $2, $3)",
            [(run_id, name, _dump(match)) for name, match in triggers],
        )

    def cancel_triggers_for(self, name: str) -> list[tuple[str, dict[str, Any]]]:
        rows = self._fetch(
            "SELECT t.run_id, t.match FROM cancel_triggers t JOIN runs USING (run_id) "
            f"WHERE t.name = $1 AND runs.status IN {_LIVE} ORDER BY t.run_id"
            + self._locking("FOR NO KEY UPDATE OF runs"),
            name,
        )
        return [(row[0], json.loads(row[1])) for row in rows]

    def next_wake(self) -> datetime | None:
        return self._fetchval("SELECT min(until) FROM waits WHERE until IS NOT NULL")

    # Sub-agents and leases.

    def get_agent(self, run_id: str) -> Agent | None:
        doc = self._fetchval(f"SELECT doc FROM agents WHERE run_id = $1{self._locking()}", run_id)
        return None if doc is None else Agent.model_validate_json(doc)

    def save_agent(self, agent: Agent) -> None:
        self._execute(
            "INSERT INTO agents (run_id, state, start_after, doc) VALUES ($1, $2, $3, $4) ON CONFLICT (run_id) "
            "DO UPDATE SET state = excluded.state, start_after = excluded.start_after, doc = excluded.doc",
            agent.run_id,
            agent.state.value,
            agent.start_after,
            agent.model_dump_json(),
        )

    def agents_in(self, states: Sequence[AgentState]) -> list[Agent]:
        self._lock_names("agent-limits")  # claims count what is active: they take turns
        rows = self._fetch(
            "SELECT doc FROM agents WHERE state = ANY($1::text[]) ORDER BY run_id", [state.value for state in states]
        )
        return [Agent.model_validate_json(row[0]) for row in rows]

    def startable_agents(self, now: datetime, limit: int) -> list[Agent]:
        # In a write transaction the rows are locked as they are read, skipping any that another
        # transaction holds right now (a cancel, say): a claim never waits for them.
        self._lock_names("agent-limits")
        lock = self._locking("FOR NO KEY UPDATE OF a SKIP LOCKED")
        rows = self._fetch(
            "SELECT a.doc FROM agents a JOIN runs r USING (run_id) "
            "WHERE ((a.state = 'queued' AND r.status IN ('queued', 'running')) "
            "OR (a.state = 'idle' AND r.status = 'running')) "
            f"AND (a.start_after IS NULL OR a.start_after <= $1) ORDER BY a.run_id LIMIT $2{lock}",
            now,
            limit,
        )
        return [Agent.model_validate_json(row[0]) for row in rows]

    def retired_agents(self) -> list[Agent]:
        self._lock_names("agent-limits")
        rows = self._fetch(
            "SELECT a.doc FROM agents a JOIN runs r USING (run_id) "
            f"WHERE a.state IN ('queued', 'idle') AND r.status NOT IN {_LIVE} ORDER BY a.run_id"
        )
        return [Agent.model_validate_json(row[0]) for row in rows]

    def next_agent_start(self) -> datetime | None:
        return self._fetchval(
            "SELECT min(a.start_after) FROM agents a JOIN runs r USING (run_id) "
            f"WHERE a.state = 'queued' AND r.status IN {_LIVE}"
        )

    def get_lease(self, name: str) -> tuple[str, datetime] | None:
        self._lock_names(f"lease:{name}")  # the row may not exist yet: two takers must take turns
        row = self._fetchrow("SELECT holder, expires_at FROM leases WHERE name = $1", name)
        return None if row is None else (row[0], row[1])

    def put_lease(self, name: str, holder: str, expires_at: datetime) -> None:
        self._execute(
            "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3) "
            "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at",
            name,
            holder,
            expires_at,
        )

    def delete_lease(self, name: str, holder: str) -> None:
        self._execute("DELETE FROM leases WHERE name = $1 AND holder = $2", name, holder)

    def journal_after(self, seq: int, kinds: Sequence[str], limit: int) -> list[JournalEntry]:
        # Journal numbers are taken when a row is written, not when it commits: a transaction still
        # open may hold a lower number than one committed. A reader that moved its cursor past such
        # a gap would skip that entry for good, so entries are returned only up to the first gap
        # that may still be filled (one followed by rows stored less than _JOURNAL_SETTLE_S ago).
        rows = self._fetch(
            "SELECT seq, kind, stored_at > clock_timestamp() - make_interval(secs => $3) AS recent "
            "FROM journal WHERE seq > $1 ORDER BY seq LIMIT $2",
            seq,
            limit * 4,
            _JOURNAL_SETTLE_S,
        )
        wanted: list[int] = []
        expected = seq + 1
        for number, kind, recent in rows:
            if number != expected and recent:
                break
            expected = number + 1
            if kind in kinds:
                wanted.append(number)
                if len(wanted) == limit:
                    break
        if not wanted:
            return []
        found = self._fetch(f"{_SELECT_JOURNAL} WHERE seq = ANY($1::bigint[]) ORDER BY seq", wanted)
        return [JournalEntry.model_validate_json(row[0]) for row in found]

    def get_cursor(self, name: str) -> int:
        self._lock_names(f"cursor:{name}")
        value = self._fetchval("SELECT seq FROM cursors WHERE name = $1", name)
        return 0 if value is None else int(value)

    def set_cursor(self, name: str, seq: int) -> None:
        self._execute(
            "INSERT INTO cursors (name, seq) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET seq = excluded.seq",
            name,
            seq,
        )

    # Retention.

    def ended_runs_before(self, cutoff: datetime, limit: int) -> list[str]:
        rows = self._fetch(
            f"SELECT run_id FROM runs WHERE status NOT IN {_LIVE} AND ended_at < $1 "
            "AND run_id IS DISTINCT FROM (SELECT run_id FROM journal ORDER BY seq DESC LIMIT 1) "
            "ORDER BY ended_at LIMIT $2" + self._locking("FOR UPDATE SKIP LOCKED"),
            cutoff,
            limit,
        )
        return [row[0] for row in rows]

    def delete_runs(self, run_ids: Sequence[str]) -> None:
        if run_ids:
            self._execute("DELETE FROM runs WHERE run_id = ANY($1::text[])", list(run_ids))

    def oldest_live_run_created(self) -> datetime | None:
        return self._fetchval(f"SELECT min(created_at) FROM runs WHERE status IN {_LIVE}")

    def delete_events_before(self, cutoff: datetime) -> int:
        return _count(
            self._execute("DELETE FROM events WHERE received_at < $1 AND seq < (SELECT max(seq) FROM events)", cutoff)
        )

    def delete_firings_before(self, cutoff: datetime) -> int:
        return _count(self._execute("DELETE FROM schedule_firings WHERE due_at < $1", cutoff))

    # Schedules.

    def get_schedule(self, name: str) -> Schedule | None:
        self._lock_names(f"schedule:{name}")  # a new name is not a row yet
        doc = self._fetchval(f"SELECT doc FROM schedules WHERE name = $1{self._locking()}", name)
        return None if doc is None else Schedule.model_validate_json(doc)

    def save_schedule(self, schedule: Schedule) -> None:
        self._execute(
            "INSERT INTO schedules (name, enabled, next_due, doc) VALUES ($1, $2, $3, $4) ON CONFLICT (name) "
            "DO UPDATE SET enabled = excluded.enabled, next_due = excluded.next_due, doc = excluded.doc",
            schedule.name,
            schedule.enabled,
            schedule.next_due,
            schedule.model_dump_json(exclude={"upcoming"}),
        )

    def delete_schedule(self, name: str) -> None:
        self._execute("DELETE FROM schedules WHERE name = $1", name)
        self._execute("DELETE FROM schedule_firings WHERE name = $1", name)

    def list_schedules(self, enabled: bool | None) -> list[Schedule]:
        rows = self._fetch(
            "SELECT doc FROM schedules WHERE ($1::boolean IS NULL OR enabled = $1) ORDER BY name", enabled
        )
        return [Schedule.model_validate_json(row[0]) for row in rows]

    def due_schedules(self, now: datetime, limit: int) -> list[Schedule]:
        rows = self._fetch(
            "SELECT doc FROM schedules WHERE enabled AND next_due IS NOT NULL AND next_due <= $1 "
            "ORDER BY next_due LIMIT $2" + self._locking("FOR NO KEY UPDATE SKIP LOCKED"),
            now,
            limit,
        )
        return [Schedule.model_validate_json(row[0]) for row in rows]

    def next_schedule_due(self) -> datetime | None:
        return self._fetchval("SELECT min(next_due) FROM schedules WHERE enabled AND next_due IS NOT NULL")

    def has_firing(self, name: str, due_at: datetime) -> bool:
        row = self._fetchval("SELECT 1 FROM schedule_firings WHERE name = $1 AND due_at = $2", name, due_at)
        return row is not None

    def insert_firing(self, name: str, firing: Firing) -> None:
        self._execute(
            "INSERT INTO schedule_firings (name, due_at, doc) VALUES ($1, $2, $3)",
            name,
            firing.due_at,
            firing.model_dump_json(),
        )

    def list_firings(self, name: str, limit: int) -> list[Firing]:
        rows = self._fetch(
            "SELECT doc FROM schedule_firings WHERE name = $1 ORDER BY due_at DESC LIMIT $2", name, limit
        )
        return [Firing.model_validate_json(row[0]) for row in rows]


class _Awaiting:
    """What a transaction's greenlet hands to the event loop: something to await for it."""

    __slots__ = ("awaitable",)

    def __init__(self, awaitable: Awaitable[Any]) -> None:
        self.awaitable = awaitable


def _await_from_greenlet(awaitable: Awaitable[T]) -> T:
    """Await on the event loop from synchronous code running in ``_run_in_greenlet``."""
    parent = greenlet.getcurrent().parent
    if parent is None:
        raise RuntimeError("a PostgreSQL transaction function ran outside its store")
    return parent.switch(_Awaiting(awaitable))


async def _run_in_greenlet(fn: Callable[[PostgresTransaction], T], tx: PostgresTransaction) -> T:
    """Run ``fn(tx)`` in a greenlet; every awaitable it hands over is awaited here, and its outcome
    (value or exception) sent back in."""
    child = greenlet.greenlet(fn)
    handed = child.switch(tx)
    while not child.dead:
        try:
            value = await handed.awaitable
        except BaseException as exc:  # into fn, which may handle it
            handed = child.throw(exc)
        else:
            handed = child.switch(value)
    return handed


class _CommitUnknown(Exception):
    """The connection was lost while COMMIT was on its way: the transaction ``xid`` may or may not
    have committed; ``result`` is what its function returned."""

    def __init__(self, xid: int, result: Any) -> None:
        super().__init__(xid)
        self.xid, self.result = xid, result


class PostgresStore:
    """See the module docstring. ``url`` is a ``postgresql://`` connection URL; ``location`` is the
    same URL without its password (it is shown in messages)."""

    def __init__(self, url: str, *, pool_size: int = 10, retry_s: float = 60.0) -> None:
        self._url = url
        self.location = _without_password(url)
        self._pool_size = pool_size
        self._retry_s = retry_s
        self._pool: asyncpg.Pool | None = None
        self._token = new_id()  # marks this process's notifications
        self._channel = "mcp_orchestrator"
        self._changes = Changes()
        self._listener: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self._url,
                min_size=1,
                max_size=self._pool_size,
                reset=_end_transaction,
                server_settings=_SERVER_SETTINGS,
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreError(f"cannot connect to the store {self.location}: {exc}") from exc
        try:
            async with self._pool.acquire() as conn:
                schema = await self._migrate(conn)
        except BaseException as exc:
            await self.close()
            if isinstance(exc, asyncpg.PostgresError | OSError | asyncpg.InterfaceError):
                raise StoreError(f"cannot prepare the store {self.location}: {exc}") from exc
            raise
        # One channel per schema: stores that share a database under different search paths stay apart.
        self._channel = f"mcp_orchestrator_{schema}"

    async def _migrate(self, conn: asyncpg.Connection) -> str:
        schema = await conn.fetchval("SELECT current_schema()")
        if schema is None:
            path = await conn.fetchval("SHOW search_path")
            raise StoreError(f"the store {self.location}: no schema of the search_path ({path}) exists; create it")
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext('schema'))", _LOCK_SPACE)
            await conn.execute(CREATE_VERSION_TABLE)
            version = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version")
            if version > SCHEMA_VERSION:
                raise SchemaTooNew.of(self.location, version, SCHEMA_VERSION, "database")
            for number in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[number - 1]:
                    await conn.execute(statement)
                await conn.execute("INSERT INTO schema_version (version, applied_at) VALUES ($1, now())", number)
        return str(schema)

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def __aenter__(self) -> PostgresStore:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def write(self, fn: Callable[[PostgresTransaction], T], *, wake: bool = True) -> T:
        return await self._run(fn, writable=True, wake=wake)

    async def read(self, fn: Callable[[PostgresTransaction], T]) -> T:
        return await self._run(fn, writable=False, wake=False)

    @property
    def generation(self) -> int:
        return self._changes.generation

    async def wait_for_change(self, timeout: float, since: int | None = None) -> None:
        """Return after a commit by any node (this process's at once, others' by notification), or after
        ``timeout``; at once if a commit was seen since ``generation`` was ``since``."""
        if self._changes.moved(since):
            return
        if self._listener is None and self._pool is not None:
            self._listener = asyncio.get_running_loop().create_task(self._listen(), name="postgres-listener")
        await self._changes.wait(timeout)

    async def _listen(self) -> None:
        """Keep one connection listening on the channel; when it is lost, wake every waiter (they
        look again) and listen again."""
        delay = 0.1
        while True:
            lost = asyncio.get_running_loop().create_future()
            try:
                conn = await asyncpg.connect(self._url, server_settings=_SERVER_SETTINGS)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            try:
                conn.add_termination_listener(lambda _conn, lost=lost: lost.done() or lost.set_result(None))
                await conn.add_listener(self._channel, self._on_notification)
                delay = 0.1
                self._changes.seen()  # commits made while nobody listened are looked at now
                await lost
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.shield(conn.close(timeout=1))
            self._changes.seen()
            await asyncio.sleep(delay)

    def _on_notification(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        if payload != self._token:
            self._changes.seen()

    async def _run(self, fn: Callable[[PostgresTransaction], T], *, writable: bool, wake: bool) -> T:
        if self._pool is None:
            raise StoreError(f"the store {self.location} is not open")
        # The transaction finishes even if the caller is cancelled: its function may be midway, with
        # a connection in hand, and its outcome must be settled either way.
        task = asyncio.get_running_loop().create_task(self._with_retries(fn, writable, wake))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(task)

    async def _with_retries(self, fn: Callable[[PostgresTransaction], T], writable: bool, wake: bool) -> T:
        deadline = time.monotonic() + self._retry_s
        pause = 0.002
        key_taken = 0
        while True:
            try:
                result = await self._once(fn, writable, wake)
            except _RETRYABLE as exc:
                if time.monotonic() > deadline:
                    raise StoreBusy(
                        f"the store {self.location} kept refusing this write as conflicting with others "
                        f"({exc.sqlstate}); it was not made, try it again"
                    ) from exc
            except asyncpg.UniqueViolationError as exc:
                key_taken += 1
                if key_taken > _KEY_TAKEN_RETRIES:
                    raise StoreError(f"the store {self.location} failed: {exc}") from exc
            except _CommitUnknown as exc:
                # Ask the server what became of the transaction: made (answer as if nothing happened),
                # not made (run it again), or, if the server cannot tell, say so.
                outcome = await self._transaction_status(exc.xid, deadline)
                if outcome == "committed":
                    if wake:
                        self._changes.seen()
                    return exc.result
                if outcome != "aborted":
                    raise StoreError(
                        f"the connection to the store {self.location} was lost while committing "
                        f"({exc.__cause__}); the write may or may not have been made: look (status, "
                        "list_runs) before repeating it"
                    ) from exc.__cause__
            except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, _ServerGone) as exc:
                if time.monotonic() > deadline:
                    raise StoreError(f"the store {self.location} cannot be reached: {exc}") from exc
                pause = max(pause, 0.05)
            except asyncpg.PostgresError as exc:
                raise StoreError(f"the store {self.location} failed: {exc}") from exc
            else:
                if wake:
                    self._changes.seen()
                return result
            await asyncio.sleep(random.uniform(pause / 2, pause))
            pause = min(pause * 2, 1.0)

    async def _transaction_status(self, xid: int, deadline: float) -> str | None:
        """'committed' or 'aborted' (PostgreSQL's txid_status), or None if the server could not tell
        before ``deadline`` (a transaction whose backend is still winding down is 'in progress')."""
        assert self._pool is not None
        while True:
            try:
                async with self._pool.acquire() as conn:
                    status = await conn.fetchval("SELECT txid_status($1)", xid)
                if status != "in progress":  # None: too old to tell
                    return None if status is None else str(status)
            except Exception as exc:
                if not _connection_lost(exc):
                    return None
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.05)

    async def _once(self, fn: Callable[[PostgresTransaction], T], writable: bool, wake: bool) -> T:
        assert self._pool is not None
        async with self._pool.acquire() as conn:
            xid: int | None = None  # set once COMMIT may be on its way
            try:
                await conn.execute(_BEGIN_WRITE if writable else _BEGIN_READ)
                result = await _run_in_greenlet(fn, PostgresTransaction(conn, writable=writable))
                if writable and wake:  # the notification reaches every listener when (and only if) this commits
                    xid = int(await conn.fetchval(_XID_AND_NOTIFY, self._channel, self._token))
                elif writable:
                    xid = int(await conn.fetchval("SELECT txid_current()"))
                await conn.execute("COMMIT")
                return result
            except BaseException as exc:
                if _connection_lost(exc):
                    # asyncpg has usually released a lost connection already: the pool's proxy then
                    # refuses every call, terminate() too, and that error must not hide this one.
                    with contextlib.suppress(asyncpg.InterfaceError):
                        conn.terminate()
                    if xid is not None and not isinstance(exc, asyncpg.InternalClientError):
                        raise _CommitUnknown(xid, result) from exc  # (that error is raised before sending)
                    raise _ServerGone(str(exc)) from exc
                if not conn.is_closed() and conn.is_in_transaction():
                    with contextlib.suppress(Exception):
                        await conn.execute("ROLLBACK")
                raise


async def _end_transaction(conn: asyncpg.Connection) -> None:
    """What a connection needs on its way back to the pool. Every transaction ends in COMMIT or
    ROLLBACK and leaves no session state (advisory locks end with their transaction; LISTEN has a
    connection of its own), so asyncpg's default reset, a round trip on every release, is not needed."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


class _ServerGone(Exception):
    """The connection failed before anything was committed: the transaction can run again."""


def _connection_lost(exc: BaseException) -> bool:
    # InternalClientError: a connection the server ended while it sat in the pool can be handed out
    # before asyncpg has noticed; its first statement then fails with "another operation is in progress".
    return isinstance(
        exc,
        OSError
        | asyncpg.PostgresConnectionError
        | asyncpg.InterfaceError
        | asyncpg.InternalClientError
        | asyncpg.exceptions.OperatorInterventionError,
    ) and not isinstance(exc, asyncpg.exceptions.QueryCanceledError)


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username}:***@{netloc.rsplit('@', 1)[1]}"
    query = urlencode([(k, "***" if k == "password" else v) for k, v in parse_qsl(parts.query)])
    return urlunsplit(parts._replace(netloc=netloc, query=query))
