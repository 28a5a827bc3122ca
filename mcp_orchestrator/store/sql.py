"""The SQL both stores speak, written once.

``SQLTransaction`` holds every statement of the ``Transaction`` protocol (see ``store.base``),
written against a ``Dialect``: the few ways SQLite and PostgreSQL spell the same thing differently
(placeholders, JSON documents, times, booleans, lists as parameters, row locks, index hints, the
numbers a deleted row leaves). ``Statements`` builds the texts once per dialect, never per call, so
the SQLite group-commit path pays nothing for the sharing. Each store subclasses the transaction
with its driver: the methods that run a statement on its own connection.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeAlias

from pydantic import BaseModel

from ..models import (
    LIVE_RUN_STATUSES,
    Activity,
    Agent,
    AgentState,
    Budget,
    Event,
    Firing,
    JournalEntry,
    Message,
    MessageStatus,
    Run,
    RunFilter,
    RunState,
    RunStatus,
    Schedule,
    Step,
    StepStatus,
    TaskRecord,
    Usage,
    Wait,
)
from .base import AgentRule
from .common import dump_json as _dump

Row: TypeAlias = Sequence[Any]

# The statuses the partial index runs_by_deadline holds, written out as its definition writes them: a
# query the index serves must spell them so (bound as parameters, no planner can tell they match).
LIVE = "(" + ", ".join(f"'{status.value}'" for status in sorted(LIVE_RUN_STATUSES)) + ")"
_EVENTS_PAGE = 200  # unconsumed events are read a page at a time: the caller usually stops at the first
# An activity entry's fields that are columns of its row; its doc holds the rest.
_ACTIVITY_COLUMNS = {"seq", "ref", "at", "kind"}
_STEP_STATUSES = {status.value: status for status in StepStatus}  # a long run's names: quicker than StepStatus()
# In a statement's template: the test that a column is one of a list of values; a rule's tests on
# sub-agents (see AgentRule); an optional clause (a time bound, a limit).
_IN, _RULE, _START, _LIMIT = "{in}", "{rule}", "{start}", "{limit}"
SCHEMA_VERSION_IN_USE = "SELECT coalesce(max(version), 0) FROM schema_version"  # 0: a new database


@dataclass(frozen=True)
class Dialect:
    """How one database spells what the statements need."""

    numbered: bool  # placeholders $1, $2 ... (PostgreSQL) rather than ? (SQLite)
    arrays: bool  # a list is bound as one array parameter rather than as one ? per value
    json_object: str  # the function that builds a JSON object from key, value pairs
    embed_json: str  # how a column holding JSON text goes into a document as JSON ({} is the column)
    as_text: str  # how a built document comes back as text ({} is the document)
    empty_object: str  # the literal of an empty JSON object
    is_true: str  # how a boolean column is tested ({} is the column)
    step_order: str  # the column that keeps a run's steps in the order they were first recorded
    returning_seq: str  # what an INSERT of an event adds to return its seq ("": the driver knows it)
    row_locks: bool  # write transactions lock the rows they decide on (FOR UPDATE and its kin)
    index_hints: bool  # queries name the partial index they rely on (INDEXED BY)
    detail_number: str  # a number in a journal entry's detail ({} is its key), spelled as its index is
    # The newest row's number is taken again once that row is deleted (SQLite's rowids without
    # AUTOINCREMENT): retention then keeps the newest journal entry and event, so numbers never go back.
    reuses_numbers: bool
    time: Callable[[datetime | None], Any]  # a time as a parameter, as the column stores it
    read_time: Callable[[Any], datetime]  # a time column's (not NULL) value as it comes back
    flag: Callable[[bool], Any]  # a boolean as a parameter

    def sql(self, text: str) -> str:
        """``text``, written with ``?`` placeholders, in this dialect's."""
        if not self.numbered:
            return text
        parts = text.split("?")
        return "".join(f"{part}${n}" for n, part in enumerate(parts[:-1], 1)) + parts[-1]

    def in_list(self, count: int) -> str:
        """What follows a column to test that it is one of ``count`` (text) values."""
        return "= ANY(?::text[])" if self.arrays else f"IN ({', '.join('?' * count)})"

    def values(self, items: Sequence[Any]) -> tuple[Any, ...]:
        """The parameters ``in_list`` stands for."""
        return (list(items),) if self.arrays else tuple(items)

    def document(self, plain: str, embedded: str = "", **exprs: str) -> str:
        """A JSON object the database builds from a row, as text: pydantic parses it in one call,
        several times cheaper than converting columns in Python. ``plain`` columns go in as they
        are, ``embedded`` ones (JSON text) as JSON, and each of ``exprs`` under its name."""
        pairs = [(c, c) for c in plain.split()] + [(c, self.embed_json.format(c)) for c in embedded.split()]
        body = ", ".join(f"'{key}', {value}" for key, value in [*pairs, *exprs.items()])
        return self.as_text.format(f"{self.json_object}({body})")


class Statements:
    """Every statement's text in one dialect, built once; ``writable``: for write transactions, the
    only ones that lock rows."""

    def __init__(self, d: Dialect, *, writable: bool) -> None:
        self.dialect = d
        self._listed: dict[tuple[str, tuple[int, ...]], str] = {}
        self._ruled: dict[tuple[str, tuple[int, ...], bool, bool], str] = {}
        sql = d.sql

        def lock(clause: str = "FOR NO KEY UPDATE") -> str:
            return f" {clause}" if d.row_locks and writable else ""

        def hint(index: str) -> str:
            return f" INDEXED BY {index}" if d.index_hints else ""

        def upsert(table: str, key: str, columns: str) -> str:
            names = columns.split(", ")
            updates = ", ".join(f"{name} = excluded.{name}" for name in names if name not in key.split(", "))
            return sql(
                f"INSERT INTO {table} ({columns}) VALUES ({', '.join('?' * len(names))}) "
                f"ON CONFLICT ({key}) DO UPDATE SET {updates}"
            )

        # updated_at is derived: every change to a run or its steps appends to the journal, so a
        # checkpoint writes no run row at all.
        latest = "SELECT at FROM journal WHERE journal.run_id = runs.run_id ORDER BY seq DESC LIMIT 1"
        updated_at = f"coalesce(({latest}), created_at)"
        run_columns = "run_id name key status parent_run_id workspace deadline_at created_at ended_at"
        run_json = "labels retry budget usage tree_usage"
        run = d.document(run_columns, f"input output error {run_json}", updated_at=updated_at)
        lean = d.document(run_columns, run_json, input="NULL", output="NULL", error="NULL", updated_at=updated_at)
        journal = d.document(
            "seq run_id at kind step attempt", detail=d.embed_json.format(f"coalesce(detail, {d.empty_object})")
        )
        step = step_document = d.document("step kind status attempt started_at ended_at retry_at", "output error")
        wait = d.document("step kind mode until created_at", "match", watched=d.embed_json.format("names"))
        self.select_run, lean = f"SELECT {run} FROM runs", f"SELECT {lean} FROM runs"
        self.select_journal, step = f"SELECT {journal} FROM journal", f"SELECT {step} FROM steps"
        event = f"SELECT seq, {d.document('event_id name source received_at', 'data')} FROM events"
        wait = f"SELECT run_id, {wait} FROM waits"

        # Runs.
        self.get_run = sql(f"{self.select_run} WHERE run_id = ?{lock()}")
        self.get_run_lean = sql(f"{lean} WHERE run_id = ?{lock()}")
        self.get_run_by_key = sql(f"{self.select_run} WHERE key = ?{lock()}")
        # FOR SHARE waits for a transaction changing the run (and keeps others from changing it until
        # this one ends) without blocking other readers.
        self.peek_runs = f"{lean} WHERE run_id {_IN}"
        self.peek_runs_settled = self.peek_runs + lock("FOR SHARE")
        self.insert_run = sql(
            "INSERT INTO runs (run_id, name, key, status, input, output, error, parent_run_id, labels, workspace, "
            "retry, deadline_at, created_at, ended_at, events_after, budget, usage, tree_usage) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        self.insert_label = sql("INSERT INTO run_labels (key, value, run_id) VALUES (?, ?, ?)")
        self.list_children = sql(f"{self.select_run} WHERE parent_run_id = ? ORDER BY run_id")
        # What the dashboard counts, each over an index: runs_by_status, runs_by_status_ended,
        # runs_by_parent, waits_by_kind; and the runs an event woke (consumed_events_by_event).
        self.count_runs = f"SELECT status, count(*) FROM runs WHERE status {_IN} GROUP BY status"
        self.count_ended_since = sql("SELECT count(*) FROM runs WHERE status = ? AND ended_at >= ?")
        self.count_children = (
            f"SELECT parent_run_id, count(*) FROM runs WHERE parent_run_id {_IN} GROUP BY parent_run_id"
        )
        self.count_waits = sql("SELECT count(*) FROM waits WHERE kind = ?")
        self.count_waits_of = f"SELECT run_id, count(*) FROM waits WHERE kind = ? AND run_id {_IN} GROUP BY run_id"
        self.count_runs_waiting_in = sql(
            "SELECT count(DISTINCT run_id) FROM waits WHERE kind = ? OR (kind = ? AND substr(step, 1, ?) = ?)"
        )
        seqs = "= ANY(?::bigint[])" if d.arrays else _IN  # event numbers, not text
        self.consumers_of = f"SELECT event_seq, run_id FROM consumed_events WHERE event_seq {seqs} ORDER BY run_id"
        # The runs an event cancelled (a cancel trigger's journal entry keeps the event's number), over the
        # partial expression index journal_cancelled_by_event.
        cancelling = d.detail_number.format("event_seq")
        self.cancelled_by = (
            f"SELECT {cancelling}, run_id FROM journal WHERE kind = 'run_cancelled' AND {cancelling} {seqs} "
            "ORDER BY run_id"
        )
        # Each parent's newest ``limit`` children, without payloads: one statement for a page of parents
        # (a run list's nested rows, a level of a run's tree), each partition read in order from runs_by_parent.
        self.children_of = (
            f"{lean} WHERE run_id IN (SELECT run_id FROM (SELECT run_id, row_number() OVER "
            f"(PARTITION BY parent_run_id ORDER BY run_id DESC) AS n FROM runs WHERE parent_run_id {_IN}) AS ranked "
            "WHERE n <= ?) ORDER BY parent_run_id, run_id DESC"
        )
        # Runs whose id starts with a prefix, as a range the primary key serves (LIKE would scan on PostgreSQL).
        self.runs_in_id_range = sql(f"{lean} WHERE run_id >= ? AND run_id < ? ORDER BY run_id LIMIT ?")
        self.descendant_ids = f"""
            WITH RECURSIVE tree (run_id) AS (
                SELECT run_id FROM runs WHERE parent_run_id = ?
                UNION
                SELECT runs.run_id FROM runs JOIN tree ON runs.parent_run_id = tree.run_id
            )
            SELECT runs.run_id FROM runs JOIN tree USING (run_id) WHERE runs.status {_IN} ORDER BY runs.run_id
            {lock("FOR NO KEY UPDATE OF runs")}
            """
        # SQLite's partial index runs_by_deadline holds only live runs with a deadline: this reads no other.
        self.overdue_run_ids = sql(
            f"SELECT run_id FROM runs{hint('runs_by_deadline')} "
            f"WHERE deadline_at IS NOT NULL AND status IN {LIVE} AND deadline_at <= ?"
            + lock("FOR NO KEY UPDATE SKIP LOCKED")
        )
        self.set_run_status = sql("UPDATE runs SET status = ?, output = ?, error = ?, ended_at = ? WHERE run_id = ?")
        self.restart_run = sql(
            "UPDATE runs SET status = ?, output = NULL, error = NULL, ended_at = NULL, deadline_at = ? WHERE run_id = ?"
        )

        # Steps and the journal.
        self.get_step = sql(f"{step} WHERE run_id = ? AND step = ?")
        # What a checkpoint or a new wait decides on: the run's status and deadline (taken as get_run
        # takes the run) and its step, NULL when there is none; in one statement, except where a write
        # waits for the run's lock (row_locks): a statement sees what was committed when it began, so
        # the step written by the transaction that held the run is read by a statement of its own.
        self.run_state = sql(f"SELECT status, deadline_at FROM runs WHERE run_id = ?{lock()}")
        self.run_and_step = (
            None
            if d.row_locks and writable
            else sql(
                f"SELECT status, deadline_at, ({step} WHERE steps.run_id = runs.run_id AND steps.step = ?) "
                "FROM runs WHERE run_id = ?"
            )
        )
        self.delete_step = sql("DELETE FROM steps WHERE run_id = ? AND step = ?")
        self.list_steps = sql(f"{step} WHERE run_id = ? ORDER BY {d.step_order}")
        self.list_steps_of_kind = sql(f"{step} WHERE run_id = ? AND kind = ? ORDER BY {d.step_order}")
        self.step_names = sql(f"SELECT step, status FROM steps WHERE run_id = ? ORDER BY {d.step_order}")
        # The positions first, then those rows: sorting whole documents to skip most of them would build
        # the JSON of every step of the run.
        self.steps_at = sql(
            f"{step} WHERE run_id = ? AND {d.step_order} IN (SELECT {d.step_order} FROM steps WHERE run_id = ? "
            f"ORDER BY {d.step_order} LIMIT ? OFFSET ?) ORDER BY {d.step_order}"
        )
        # An upsert, not a replace: the step's first-recorded order must not change.
        self.save_step = upsert(
            "steps",
            "run_id, step",
            "run_id, step, kind, status, attempt, output, error, started_at, ended_at, retry_at",
        )
        self.append_journal = sql(
            "INSERT INTO journal (run_id, at, kind, step, attempt, detail) VALUES (?, ?, ?, ?, ?, ?)"
        )
        self.read_journal = sql(f"{self.select_journal} WHERE run_id = ? ORDER BY seq DESC LIMIT ?")
        self.journal_after = f"{self.select_journal} WHERE seq > ? AND kind {_IN} ORDER BY seq LIMIT ?"

        # Events and waits.
        self.events_after = sql("SELECT events_after FROM runs WHERE run_id = ?")
        self.last_event_seq = "SELECT max(seq) FROM events"
        self.insert_event = sql(
            "INSERT INTO events (event_id, name, data, source, received_at) VALUES (?, ?, ?, ?, ?)" + d.returning_seq
        )
        self.has_event = sql("SELECT 1 FROM events WHERE event_id = ?")
        self.select_event = event
        self.unconsumed_events = (
            f"{event} WHERE name {_IN} AND seq > ? AND NOT EXISTS "
            "(SELECT 1 FROM consumed_events c WHERE c.run_id = ? AND c.event_seq = events.seq) "
            f"ORDER BY seq LIMIT {_EVENTS_PAGE}"
        )
        self.consume_event = sql("INSERT INTO consumed_events (run_id, event_seq, step) VALUES (?, ?, ?)")
        self.insert_wait = sql(
            "INSERT INTO waits (run_id, step, kind, names, match, mode, until, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        )
        self.insert_wait_name = sql("INSERT INTO wait_names (name, run_id, step) VALUES (?, ?, ?)")
        self.delete_wait = sql("DELETE FROM waits WHERE run_id = ? AND step = ?")
        self.get_wait = sql(f"{wait} WHERE run_id = ? AND step = ?")
        self.waits_of = f"{wait} WHERE run_id {_IN} ORDER BY created_at, step"
        self.waits_for = sql(
            f"{wait} WHERE (run_id, step) IN (SELECT run_id, step FROM wait_names WHERE name = ?) "
            "ORDER BY created_at, run_id, step" + lock("FOR UPDATE")
        )
        self.due_waits = sql(
            f"{wait} WHERE until IS NOT NULL AND until <= ? ORDER BY until" + lock("FOR UPDATE SKIP LOCKED")
        )
        self.waits_of_kind = sql(f"{wait} WHERE kind = ? ORDER BY created_at, run_id, step")
        self.select_kind_steps = f"SELECT run_id, {step_document} FROM steps"
        self.insert_cancel_trigger = sql("INSERT INTO cancel_triggers (run_id, name, match) VALUES (?, ?, ?)")
        self.cancel_triggers_for = (
            "SELECT t.run_id, t.match FROM cancel_triggers t JOIN runs USING (run_id) "
            f"WHERE t.name = ? AND runs.status {_IN} ORDER BY t.run_id" + lock("FOR NO KEY UPDATE OF runs")
        )
        self.next_wake = "SELECT min(until) FROM waits WHERE until IS NOT NULL"

        # Sub-agents, leases and cursors.
        self.get_agent = sql(f"SELECT doc FROM agents WHERE run_id = ?{lock()}")
        self.save_agent = upsert("agents", "run_id", "run_id, state, start_after, doc")
        self.agents_in = f"SELECT doc FROM agents WHERE state {_IN} ORDER BY run_id"
        # A rule's tests (one per state, see AgentRule) are ORed: each can use the index agents_by_state.
        # In a write transaction the rows are locked as they are read, skipping any that another
        # transaction holds right now (a cancel, say): a claim never waits for them.
        agents = f"FROM agents a JOIN runs r USING (run_id) WHERE ({_RULE})"
        take = lock("FOR NO KEY UPDATE OF a SKIP LOCKED")
        self.agents_by_run_status = f"SELECT a.doc {agents}{_START} ORDER BY a.run_id{_LIMIT}{take}"
        self.earliest_start_after = f"SELECT min(a.start_after) {agents}"
        self.get_lease = sql("SELECT holder, expires_at FROM leases WHERE name = ?")
        self.put_lease = upsert("leases", "name", "name, holder, expires_at")
        self.delete_lease = sql("DELETE FROM leases WHERE name = ? AND holder = ?")
        self.get_cursor = sql("SELECT seq FROM cursors WHERE name = ?")
        self.set_cursor = upsert("cursors", "name", "name, seq")

        # What sub-agents spend and do, and messages to them. Ancestors are read by their parent links
        # alone (set once, at insert): nothing to lock.
        self.ancestor_ids = sql(
            """
            WITH RECURSIVE up (run_id, depth) AS (
                SELECT parent_run_id, 1 FROM runs WHERE run_id = ? AND parent_run_id IS NOT NULL
                UNION ALL
                SELECT runs.parent_run_id, up.depth + 1 FROM runs JOIN up USING (run_id)
                WHERE runs.parent_run_id IS NOT NULL
            )
            SELECT run_id FROM up ORDER BY depth
            """
        )
        self.set_run_usage = sql("UPDATE runs SET usage = ?, tree_usage = ? WHERE run_id = ?")
        self.set_run_budget = sql("UPDATE runs SET budget = ? WHERE run_id = ?")
        # An entry whose ref the run has already replaces that entry's content, keeping its place (seq)
        # and its time: a tool call's result lands where the call was shown.
        self.append_activity = sql(
            "INSERT INTO activity (run_id, ref, at, kind, doc) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (run_id, ref) DO UPDATE SET kind = excluded.kind, doc = excluded.doc"
        )
        activity = "SELECT seq, ref, at, kind, doc FROM activity WHERE run_id = ?"
        self.latest_activity = sql(f"{activity} ORDER BY seq DESC LIMIT ?")
        self.activity_before = sql(f"{activity} AND seq < ? ORDER BY seq DESC LIMIT ?")
        self.activity_after = sql(f"{activity} AND seq > ? ORDER BY seq LIMIT ?")
        self.activity_between = sql(f"{activity} AND seq > ? AND seq < ? ORDER BY seq LIMIT ?")
        # The newest entry past the ones kept: none (the usual case) is one short index walk, nothing deleted.
        self.activity_trim_from = sql("SELECT seq FROM activity WHERE run_id = ? ORDER BY seq DESC LIMIT 1 OFFSET ?")
        self.trim_activity = sql("DELETE FROM activity WHERE run_id = ? AND seq <= ?")
        self.insert_message = sql("INSERT INTO messages (message_id, run_id, status, doc) VALUES (?, ?, ?, ?)")
        self.save_message = sql("UPDATE messages SET status = ?, doc = ? WHERE message_id = ?")
        self.messages_of = f"SELECT doc FROM messages WHERE run_id {_IN} AND status {_IN} ORDER BY seq LIMIT ?"
        self.insert_task = sql("INSERT INTO tasks (task_id, run_id, doc) VALUES (?, ?, ?)")
        self.get_task = sql("SELECT doc FROM tasks WHERE task_id = ?")
        self.save_task = sql("UPDATE tasks SET doc = ? WHERE task_id = ?")

        # Retention.
        newest_journal = (
            " AND run_id IS NOT (SELECT run_id FROM journal ORDER BY seq DESC LIMIT 1)" if d.reuses_numbers else ""
        )
        # The runs retention may remove: ended before the cutoff and no ancestor of a live run. The
        # ancestors of the (few) live runs are one walk up the tree, so a preview or a batch reads a
        # bounded set however many ended runs a live run holds back, and never stops at them.
        self.removable_runs_before = sql(
            f"""
            WITH RECURSIVE held (run_id) AS (
                SELECT parent_run_id FROM runs WHERE status IN {LIVE} AND parent_run_id IS NOT NULL
                UNION
                SELECT runs.parent_run_id FROM runs JOIN held ON runs.run_id = held.run_id
                WHERE runs.parent_run_id IS NOT NULL
            )
            SELECT run_id FROM runs WHERE status NOT IN {LIVE} AND ended_at < ?{newest_journal}
            AND run_id NOT IN (SELECT run_id FROM held)
            ORDER BY ended_at, run_id LIMIT ?"""
            + lock("FOR UPDATE SKIP LOCKED")
        )
        self.delete_runs = f"DELETE FROM runs WHERE run_id {_IN}"
        self.oldest_run_created = f"SELECT min(created_at) FROM runs WHERE status {_IN}"
        newest_event = f" AND seq < ({self.last_event_seq})" if d.reuses_numbers else ""
        self.delete_events_before = sql(f"DELETE FROM events WHERE received_at < ?{newest_event}")
        self.delete_firings_before = sql("DELETE FROM schedule_firings WHERE due_at < ?")
        # What those two would delete, counted (gc shows it before asking).
        self.count_events_before = sql(f"SELECT count(*) FROM events WHERE received_at < ?{newest_event}")
        self.count_firings_before = sql("SELECT count(*) FROM schedule_firings WHERE due_at < ?")

        # Schedules.
        enabled = d.is_true.format("enabled")
        self.get_schedule = sql(f"SELECT doc FROM schedules WHERE name = ?{lock()}")
        self.save_schedule = upsert("schedules", "name", "name, enabled, next_due, doc")
        self.delete_schedule = sql("DELETE FROM schedules WHERE name = ?")
        self.delete_firings = sql("DELETE FROM schedule_firings WHERE name = ?")
        self.list_schedules = "SELECT doc FROM schedules ORDER BY name"
        self.list_schedules_enabled = sql("SELECT doc FROM schedules WHERE enabled = ? ORDER BY name")
        self.due_schedules = sql(
            f"SELECT doc FROM schedules{hint('schedules_due')} "
            f"WHERE {enabled} AND next_due IS NOT NULL AND next_due <= ? ORDER BY next_due LIMIT ?"
            + lock("FOR NO KEY UPDATE SKIP LOCKED")
        )
        self.next_schedule_due = (
            f"SELECT min(next_due) FROM schedules{hint('schedules_due')} WHERE {enabled} AND next_due IS NOT NULL"
        )
        self.has_firing = sql("SELECT 1 FROM schedule_firings WHERE name = ? AND due_at = ?")
        self.insert_firing = sql("INSERT INTO schedule_firings (name, due_at, doc) VALUES (?, ?, ?)")
        self.list_firings = sql("SELECT doc FROM schedule_firings WHERE name = ? ORDER BY due_at DESC LIMIT ?")

    def ruled(self, template: str, rule: AgentRule, *, start: bool = False, limit: bool = False) -> str:
        """``template`` with one test per state of ``rule`` (its state, and one of its run statuses)
        and, if asked, a bound on start_after and a limit; built once per shape."""
        d = self.dialect
        counts = tuple(0 if d.arrays else len(statuses) for statuses in rule.values())
        key = (template, counts, start, limit)
        text = self._ruled.get(key)
        if text is None:
            tests = " OR ".join(f"(a.state = ? AND r.status {d.in_list(count)})" for count in counts)
            text = template.replace(_RULE, tests)
            text = text.replace(_START, " AND (a.start_after IS NULL OR a.start_after <= ?)" if start else "")
            text = self._ruled[key] = d.sql(text.replace(_LIMIT, " LIMIT ?" if limit else ""))
        return text

    def listed(self, template: str, *counts: int) -> str:
        """``template`` with its ``{in}`` tests, in order, each testing for one of as many values as
        ``counts`` says; built once per counts (once for all where lists are arrays)."""
        d = self.dialect
        key = (template, tuple(0 if d.arrays else count for count in counts))
        text = self._listed.get(key)
        if text is None:
            text = template
            for count in counts:
                text = text.replace(_IN, d.in_list(count), 1)
            text = self._listed[key] = d.sql(text)
        return text


class SQLTransaction(ABC):
    """Row reads and writes inside one transaction (see ``store.base``), each statement run through
    the store's driver: the abstract methods below, over the store's own connection."""

    def __init__(self, sql: Statements) -> None:
        self._sql = sql
        self._d = sql.dialect
        self.woken = False
        self._stamped: tuple[datetime | None, Any] = (None, None)  # the last time formatted, and its parameter

    def wake(self) -> None:
        self.woken = True

    # The driver.

    @abstractmethod
    def _run(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Run a statement; returns how many rows it changed."""

    @abstractmethod
    def _one(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        """The first row of a query, None if it has none."""

    @abstractmethod
    def _all(self, sql: str, args: Sequence[Any] = ()) -> list[Row]: ...

    @abstractmethod
    def _many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """Run a statement once for each of ``rows`` (none: nothing)."""

    @abstractmethod
    def _insert(self, sql: str, args: Sequence[Any]) -> int:
        """Run an INSERT into a numbered table; returns the new row's number."""

    def _value(self, sql: str, args: Sequence[Any] = ()) -> Any:
        row = self._one(sql, args)
        return None if row is None else row[0]

    def _time(self, sql: str, args: Sequence[Any] = ()) -> datetime | None:
        value = self._value(sql, args)
        return None if value is None else self._d.read_time(value)

    def _stamp(self, value: datetime | None) -> Any:
        """A time as a parameter, like ``Dialect.time``; a write stores its clock's reading several times
        (a step's start and end, its journal entry), and the last one formatted is formatted once."""
        last, parameter = self._stamped
        if value is not last and value is not None:
            parameter = self._d.time(value)
            self._stamped = (value, parameter)
        return parameter if value is not None else None

    def _in_values(self, items: Collection[StrEnum]) -> tuple[Any, ...]:
        """The parameters of an ``{in}`` test on states or statuses."""
        return self._d.values([item.value for item in items])

    def _rule(self, rule: AgentRule) -> list[Any]:
        """The parameters of a rule's tests (see ``Statements.ruled``)."""
        return [value for state, statuses in rule.items() for value in (state.value, *self._in_values(statuses))]

    @abstractmethod
    def lock(self, *names: str) -> None:
        """Take the named locks until the transaction ends (see ``store.base``)."""

    # Runs.

    def get_run(self, run_id: str, *, payloads: bool = True) -> Run | None:
        document = self._value(self._sql.get_run if payloads else self._sql.get_run_lean, (run_id,))
        return None if document is None else Run.model_validate_json(document)

    def get_run_by_key(self, key: str) -> Run | None:
        document = self._value(self._sql.get_run_by_key, (key,))
        return None if document is None else Run.model_validate_json(document)

    def peek_runs(self, run_ids: Sequence[str], *, settle: bool = False) -> list[Run | None]:
        if not run_ids:
            return []
        query = self._sql.listed(self._sql.peek_runs_settled if settle else self._sql.peek_runs, len(run_ids))
        found = {
            run.run_id: run
            for run in (Run.model_validate_json(row[0]) for row in self._all(query, self._d.values(run_ids)))
        }
        return [found.get(run_id) for run_id in run_ids]

    def insert_run(self, run: Run, events_after: int) -> None:
        time = self._d.time
        self._run(
            self._sql.insert_run,
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
                time(run.deadline_at),
                time(run.created_at),
                time(run.ended_at),
                events_after,
                _model(run.budget),
                _model(run.usage),
                _model(run.tree_usage),
            ),
        )
        self._many(self._sql.insert_label, [(key, value, run.run_id) for key, value in run.labels.items()])

    def list_runs(self, query: RunFilter) -> list[Run]:
        since = None if query.since is None else self._d.time(query.since)
        tests = [
            ("name = ?", query.name),
            ("parent_run_id = ?", query.parent_run_id),
            ("workspace = ?", query.workspace),
            ("created_at >= ?", since),
            ("run_id < ?", query.before_run_id),
        ]
        clauses = [clause for clause, value in tests if value is not None]
        params: list[Any] = [value for _, value in tests if value is not None]
        if query.statuses:
            clauses.append(f"status {self._d.in_list(len(query.statuses))}")
            params.extend(self._d.values([status.value for status in query.statuses]))
        for key, value in query.labels:
            same = "" if value is None else " AND l.value = ?"
            clauses.append(f"EXISTS (SELECT 1 FROM run_labels l WHERE l.run_id = runs.run_id AND l.key = ?{same})")
            params.extend([key] if value is None else [key, value])
        if query.top_level:
            clauses.append("parent_run_id IS NULL")
        alternatives: list[tuple[str, list[Any]]] = []
        if query.search_text is not None:
            alternatives += [("key = ?", [query.search_text]), ("name = ?", [query.search_text])]
        if query.search_ids is not None:
            alternatives.append(("run_id >= ? AND run_id < ?", list(query.search_ids)))
        if alternatives:
            # Each alternative walks its own index in id order and stops at ``limit`` (the key's, runs_by_name,
            # the primary key's range); one OR of them would gather every match and sort it.
            branches, searched = [], []
            for number, (test, values) in enumerate(alternatives):
                walk = f"SELECT run_id FROM runs {_where([*clauses, test])} ORDER BY run_id DESC LIMIT ?"
                branches.append(f"SELECT run_id FROM ({walk}) AS found{number}")
                searched += [*params, *values, query.limit]
            clauses, params = [f"run_id IN ({' UNION '.join(branches)})"], searched
        query_text = self._d.sql(f"{self._sql.select_run} {_where(clauses)} ORDER BY run_id DESC LIMIT ?")
        return [Run.model_validate_json(row[0]) for row in self._all(query_text, (*params, query.limit))]

    def list_children(self, run_id: str) -> list[Run]:
        return [Run.model_validate_json(row[0]) for row in self._all(self._sql.list_children, (run_id,))]

    def count_runs(self, statuses: Collection[RunStatus]) -> dict[RunStatus, int]:
        query = self._sql.listed(self._sql.count_runs, len(statuses))
        return {RunStatus(row[0]): int(row[1]) for row in self._all(query, self._in_values(statuses))}

    def count_ended_since(self, status: RunStatus, since: datetime) -> int:
        return int(self._value(self._sql.count_ended_since, (status.value, self._d.time(since))) or 0)

    def count_children(self, run_ids: Sequence[str]) -> dict[str, int]:
        if not run_ids:
            return {}
        query = self._sql.listed(self._sql.count_children, len(run_ids))
        return {row[0]: int(row[1]) for row in self._all(query, self._d.values(run_ids))}

    def count_waits(self, kind: str) -> int:
        return int(self._value(self._sql.count_waits, (kind,)) or 0)

    def count_waits_of(self, kind: str, run_ids: Sequence[str]) -> dict[str, int]:
        if not run_ids:
            return {}
        query = self._sql.listed(self._sql.count_waits_of, len(run_ids))
        return {row[0]: int(row[1]) for row in self._all(query, (kind, *self._d.values(run_ids)))}

    def count_runs_waiting_in(self, kind: str, or_kind: str, step_prefix: str) -> int:
        args = (kind, or_kind, len(step_prefix), step_prefix)
        return int(self._value(self._sql.count_runs_waiting_in, args) or 0)

    def consumers_of(self, seqs: Sequence[int]) -> dict[int, list[str]]:
        return self._runs_by_seq(self._sql.consumers_of, seqs)

    def cancelled_by(self, seqs: Sequence[int]) -> dict[int, list[str]]:
        return self._runs_by_seq(self._sql.cancelled_by, seqs)

    def _runs_by_seq(self, statement: str, seqs: Sequence[int]) -> dict[int, list[str]]:
        """The run ids a listed statement pairs with each event's ``seq`` (``seq, run_id`` rows)."""
        found: dict[int, list[str]] = {}
        if seqs:
            for seq, run_id in self._all(self._sql.listed(statement, len(seqs)), self._d.values(seqs)):
                found.setdefault(int(seq), []).append(run_id)
        return found

    def children_of(self, run_ids: Sequence[str], limit: int) -> list[Run]:
        if not run_ids:
            return []
        query = self._sql.listed(self._sql.children_of, len(run_ids))
        return [Run.model_validate_json(row[0]) for row in self._all(query, (*self._d.values(run_ids), limit))]

    def runs_in_id_range(self, low: str, high: str, limit: int) -> list[Run]:
        rows = self._all(self._sql.runs_in_id_range, (low, high, limit))
        return [Run.model_validate_json(row[0]) for row in rows]

    def descendant_ids(self, run_id: str, statuses: Collection[RunStatus]) -> list[str]:
        query = self._sql.listed(self._sql.descendant_ids, len(statuses))
        return [row[0] for row in self._all(query, (run_id, *self._in_values(statuses)))]

    def overdue_run_ids(self, now: datetime) -> list[str]:
        return [row[0] for row in self._all(self._sql.overdue_run_ids, (self._d.time(now),))]

    def set_runs_status(
        self,
        run_ids: Sequence[str],
        status: RunStatus,
        *,
        ended_at: datetime | None = None,
        output: Any = None,
        error: Any = None,
    ) -> None:
        values = (status.value, _dump(output), _dump(error), self._d.time(ended_at))
        self._many(self._sql.set_run_status, [(*values, run_id) for run_id in run_ids])

    def restart_run(self, run_id: str, status: RunStatus, deadline_at: datetime | None) -> None:
        self._run(self._sql.restart_run, (status.value, self._d.time(deadline_at), run_id))

    # Steps and the journal.

    def get_step(self, run_id: str, step: str) -> Step | None:
        document = self._value(self._sql.get_step, (run_id, step))
        return None if document is None else Step.model_validate_json(document)

    def run_and_step(self, run_id: str, step: str) -> tuple[RunState, Step | None] | None:
        if self._sql.run_and_step is not None:
            row = self._one(self._sql.run_and_step, (step, run_id))
        elif (row := self._one(self._sql.run_state, (run_id,))) is not None:  # the run held, then its step
            row = (*row, self._value(self._sql.get_step, (run_id, step)))
        if row is None:
            return None
        status, deadline_at, document = row
        state = RunState(run_id, RunStatus(status), None if deadline_at is None else self._d.read_time(deadline_at))
        return state, None if document is None else Step.model_validate_json(document)

    def delete_step(self, run_id: str, step: str) -> None:
        self._run(self._sql.delete_step, (run_id, step))

    def list_steps(self, run_id: str, kind: str | None = None) -> list[Step]:
        if kind is None:
            return self._steps(self._sql.list_steps, (run_id,))
        return self._steps(self._sql.list_steps_of_kind, (run_id, kind))

    def step_names(self, run_id: str) -> list[tuple[str, StepStatus]]:
        return [(name, _STEP_STATUSES[status]) for name, status in self._all(self._sql.step_names, (run_id,))]

    def steps_at(self, run_id: str, offset: int, limit: int) -> list[Step]:
        return self._steps(self._sql.steps_at, (run_id, run_id, limit, offset))

    def _steps(self, sql: str, args: Sequence[Any]) -> list[Step]:
        """The steps whose documents a statement reads, one a row."""
        return [Step.model_validate_json(row[0]) for row in self._all(sql, args)]

    def save_step(self, run_id: str, step: Step, *, output_json: str | None = None) -> None:
        time = self._stamp
        self._run(
            self._sql.save_step,
            (
                run_id,
                step.step,
                step.kind,
                step.status.value,
                step.attempt,
                _dump(step.output) if output_json is None else output_json,
                _dump(step.error),
                time(step.started_at),
                time(step.ended_at),
                time(step.retry_at),
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
        args = (run_id, self._stamp(at), kind, step, attempt, _dump(detail) if detail else None)
        self._run(self._sql.append_journal, args)

    def read_journal(self, run_id: str, limit: int) -> list[JournalEntry]:
        rows = self._all(self._sql.read_journal, (run_id, limit))
        return [JournalEntry.model_validate_json(row[0]) for row in reversed(rows)]

    def journal_after(self, seq: int, kinds: Sequence[str], limit: int) -> list[JournalEntry]:
        rows = self._all(self._sql.listed(self._sql.journal_after, len(kinds)), (seq, *self._d.values(kinds), limit))
        return [JournalEntry.model_validate_json(row[0]) for row in rows]

    # Events and waits.

    def events_after(self, run_id: str) -> int:
        value = self._value(self._sql.events_after, (run_id,))
        return 0 if value is None else int(value)

    def last_event_seq(self) -> int:
        value = self._value(self._sql.last_event_seq)
        return 0 if value is None else int(value)

    def insert_event(self, event: Event) -> int:
        args = (event.event_id, event.name, _dump(event.data), event.source, self._d.time(event.received_at))
        return self._insert(self._sql.insert_event, args)

    def has_event(self, event_id: str) -> bool:
        return self._one(self._sql.has_event, (event_id,)) is not None

    def unconsumed_events(self, run_id: str, names: Sequence[str], after_seq: int) -> Iterator[tuple[int, Event]]:
        query, listed = self._sql.listed(self._sql.unconsumed_events, len(names)), self._d.values(names)
        while True:
            rows = self._all(query, (*listed, after_seq, run_id))
            for row in rows:
                yield row[0], Event.model_validate_json(row[1])
            if len(rows) < _EVENTS_PAGE:
                return
            after_seq = rows[-1][0]

    def consume_event(self, run_id: str, seq: int, step: str) -> None:
        self._run(self._sql.consume_event, (run_id, seq, step))

    def list_events(self, name: str | None, limit: int, before_seq: int | None = None) -> list[tuple[int, Event]]:
        tests = [
            (clause, value) for clause, value in (("name = ?", name), ("seq < ?", before_seq)) if value is not None
        ]
        query = self._d.sql(f"{self._sql.select_event} {_where([c for c, _ in tests])} ORDER BY seq DESC LIMIT ?")
        rows = self._all(query, (*(value for _, value in tests), limit))
        return [(row[0], Event.model_validate_json(row[1])) for row in rows]

    def insert_wait(self, run_id: str, wait: Wait) -> None:
        time = self._stamp
        self._run(
            self._sql.insert_wait,
            (
                run_id,
                wait.step,
                wait.kind,
                _dump(wait.watched),
                _dump(wait.match),
                wait.mode,
                time(wait.until),
                time(wait.created_at),
            ),
        )
        self._many(self._sql.insert_wait_name, [(name, run_id, wait.step) for name in dict.fromkeys(wait.watched)])

    def delete_wait(self, run_id: str, step: str) -> None:
        self._run(self._sql.delete_wait, (run_id, step))

    def get_wait(self, run_id: str, step: str) -> Wait | None:
        row = self._one(self._sql.get_wait, (run_id, step))
        return None if row is None else Wait.model_validate_json(row[1])

    def list_waits(self, run_id: str) -> list[Wait]:
        return self.waits_of([run_id]).get(run_id, [])

    def waits_of(self, run_ids: Sequence[str]) -> dict[str, list[Wait]]:
        waits: dict[str, list[Wait]] = {run_id: [] for run_id in run_ids}
        if run_ids:
            query = self._sql.listed(self._sql.waits_of, len(run_ids))
            for run_id, doc in self._all(query, self._d.values(run_ids)):
                waits[run_id].append(Wait.model_validate_json(doc))
        return waits

    def waits_for(self, name: str) -> list[tuple[str, Wait]]:
        return [(row[0], Wait.model_validate_json(row[1])) for row in self._all(self._sql.waits_for, (name,))]

    def due_waits(self, now: datetime) -> list[tuple[str, Wait]]:
        rows = self._all(self._sql.due_waits, (self._d.time(now),))
        return [(row[0], Wait.model_validate_json(row[1])) for row in rows]

    def waits_of_kind(self, kind: str) -> list[tuple[str, Wait]]:
        return [(row[0], Wait.model_validate_json(row[1])) for row in self._all(self._sql.waits_of_kind, (kind,))]

    def steps_of_kind(
        self, kind: str, statuses: Collection[StepStatus], run_ids: Sequence[str] | None, limit: int
    ) -> list[tuple[str, Step]]:
        if not statuses or run_ids == []:
            return []
        clauses = ["kind = ?", f"status {self._d.in_list(len(statuses))}"]
        params: list[Any] = [kind, *self._in_values(statuses)]
        if run_ids is not None:
            clauses.append(f"run_id {self._d.in_list(len(run_ids))}")
            params.extend(self._d.values(run_ids))
        query = self._d.sql(f"{self._sql.select_kind_steps} {_where(clauses)} ORDER BY started_at DESC, step LIMIT ?")
        return [(row[0], Step.model_validate_json(row[1])) for row in self._all(query, (*params, limit))]

    def insert_cancel_triggers(self, run_id: str, triggers: Sequence[tuple[str, dict[str, Any]]]) -> None:
        self._many(self._sql.insert_cancel_trigger, [(run_id, name, _dump(match)) for name, match in triggers])

    def cancel_triggers_for(self, name: str, statuses: Collection[RunStatus]) -> list[tuple[str, dict[str, Any]]]:
        query = self._sql.listed(self._sql.cancel_triggers_for, len(statuses))
        return [(row[0], json.loads(row[1])) for row in self._all(query, (name, *self._in_values(statuses)))]

    def next_wake(self) -> datetime | None:
        return self._time(self._sql.next_wake)

    # Sub-agents, leases and cursors.

    def get_agent(self, run_id: str) -> Agent | None:
        doc = self._value(self._sql.get_agent, (run_id,))
        return None if doc is None else Agent.model_validate_json(doc)

    def save_agent(self, agent: Agent) -> None:
        args = (agent.run_id, agent.state.value, self._d.time(agent.start_after), agent.model_dump_json())
        self._run(self._sql.save_agent, args)

    def agents_in(self, states: Collection[AgentState]) -> list[Agent]:
        query = self._sql.listed(self._sql.agents_in, len(states))
        return [Agent.model_validate_json(row[0]) for row in self._all(query, self._in_values(states))]

    def agents_by_run_status(
        self, rule: AgentRule, *, start_by: datetime | None = None, limit: int | None = None
    ) -> list[Agent]:
        query = self._sql.ruled(
            self._sql.agents_by_run_status, rule, start=start_by is not None, limit=limit is not None
        )
        bounds = [value for value in (self._d.time(start_by), limit) if value is not None]
        return [Agent.model_validate_json(row[0]) for row in self._all(query, (*self._rule(rule), *bounds))]

    def earliest_start_after(self, rule: AgentRule) -> datetime | None:
        return self._time(self._sql.ruled(self._sql.earliest_start_after, rule), self._rule(rule))

    def get_lease(self, name: str) -> tuple[str, datetime] | None:
        row = self._one(self._sql.get_lease, (name,))
        return None if row is None else (row[0], self._d.read_time(row[1]))

    def put_lease(self, name: str, holder: str, expires_at: datetime) -> None:
        self._run(self._sql.put_lease, (name, holder, self._d.time(expires_at)))

    def delete_lease(self, name: str, holder: str) -> None:
        self._run(self._sql.delete_lease, (name, holder))

    def get_cursor(self, name: str) -> int:
        value = self._value(self._sql.get_cursor, (name,))
        return 0 if value is None else int(value)

    def set_cursor(self, name: str, seq: int) -> None:
        self._run(self._sql.set_cursor, (name, seq))

    # What sub-agents spend and do, and messages to them.

    def ancestor_ids(self, run_id: str) -> list[str]:
        return [row[0] for row in self._all(self._sql.ancestor_ids, (run_id,))]

    def set_run_usage(self, run_id: str, usage: Usage | None, tree_usage: Usage | None) -> None:
        self._run(self._sql.set_run_usage, (_model(usage), _model(tree_usage), run_id))

    def set_run_budget(self, run_id: str, budget: Budget | None) -> None:
        self._run(self._sql.set_run_budget, (_model(budget), run_id))

    def append_activity(self, run_id: str, entries: Sequence[Activity]) -> None:
        rows = [
            (run_id, entry.ref, self._d.time(entry.at), entry.kind, entry.model_dump_json(exclude=_ACTIVITY_COLUMNS))
            for entry in entries
        ]
        self._many(self._sql.append_activity, rows)

    def read_activity(
        self, run_id: str, limit: int, *, before_seq: int | None = None, after_seq: int | None = None
    ) -> list[Activity]:
        if after_seq is None:
            if before_seq is None:
                rows = self._all(self._sql.latest_activity, (run_id, limit))
            else:
                rows = self._all(self._sql.activity_before, (run_id, before_seq, limit))
            rows.reverse()
        elif before_seq is None:
            rows = self._all(self._sql.activity_after, (run_id, after_seq, limit))
        else:
            rows = self._all(self._sql.activity_between, (run_id, after_seq, before_seq, limit))
        return [
            Activity.model_validate(
                {**json.loads(doc), "seq": seq, "ref": ref, "at": self._d.read_time(at), "kind": kind}
            )
            for seq, ref, at, kind, doc in rows
        ]

    def trim_activity(self, run_id: str, keep: int) -> int:
        newest_dropped = self._value(self._sql.activity_trim_from, (run_id, keep))
        return 0 if newest_dropped is None else self._run(self._sql.trim_activity, (run_id, newest_dropped))

    def insert_message(self, message: Message) -> None:
        args = (message.message_id, message.run_id, message.status, message.model_dump_json())
        self._run(self._sql.insert_message, args)

    def save_message(self, message: Message) -> None:
        self._run(self._sql.save_message, (message.status, message.model_dump_json(), message.message_id))

    def messages_of(self, run_ids: Sequence[str], statuses: Collection[MessageStatus], limit: int) -> list[Message]:
        if not run_ids or not statuses:
            return []
        query = self._sql.listed(self._sql.messages_of, len(run_ids), len(statuses))
        params = (*self._d.values(run_ids), *self._d.values(list(statuses)), limit)
        return [Message.model_validate_json(row[0]) for row in self._all(query, params)]

    def insert_task(self, task: TaskRecord) -> None:
        self._run(self._sql.insert_task, (task.task_id, task.run_id, task.model_dump_json()))

    def get_task(self, task_id: str) -> TaskRecord | None:
        doc = self._value(self._sql.get_task, (task_id,))
        return None if doc is None else TaskRecord.model_validate_json(doc)

    def save_task(self, task: TaskRecord) -> None:
        self._run(self._sql.save_task, (task.model_dump_json(), task.task_id))

    # Retention.

    def removable_runs_before(self, cutoff: datetime, limit: int) -> list[str]:
        return [row[0] for row in self._all(self._sql.removable_runs_before, (self._d.time(cutoff), limit))]

    def delete_runs(self, run_ids: Sequence[str]) -> None:
        if run_ids:
            self._run(self._sql.listed(self._sql.delete_runs, len(run_ids)), self._d.values(run_ids))

    def oldest_run_created(self, statuses: Collection[RunStatus]) -> datetime | None:
        return self._time(self._sql.listed(self._sql.oldest_run_created, len(statuses)), self._in_values(statuses))

    def delete_events_before(self, cutoff: datetime) -> int:
        return self._run(self._sql.delete_events_before, (self._d.time(cutoff),))

    def delete_firings_before(self, cutoff: datetime) -> int:
        return self._run(self._sql.delete_firings_before, (self._d.time(cutoff),))

    def count_events_before(self, cutoff: datetime) -> int:
        return int(self._value(self._sql.count_events_before, (self._d.time(cutoff),)) or 0)

    def count_firings_before(self, cutoff: datetime) -> int:
        return int(self._value(self._sql.count_firings_before, (self._d.time(cutoff),)) or 0)

    # Schedules.

    def get_schedule(self, name: str) -> Schedule | None:
        doc = self._value(self._sql.get_schedule, (name,))
        return None if doc is None else Schedule.model_validate_json(doc)

    def save_schedule(self, schedule: Schedule) -> None:
        doc = schedule.model_dump_json(exclude={"upcoming"})
        self._run(
            self._sql.save_schedule,
            (schedule.name, self._d.flag(schedule.enabled), self._d.time(schedule.next_due), doc),
        )

    def delete_schedule(self, name: str) -> None:
        self._run(self._sql.delete_schedule, (name,))
        self._run(self._sql.delete_firings, (name,))

    def list_schedules(self, enabled: bool | None) -> list[Schedule]:
        if enabled is None:
            rows = self._all(self._sql.list_schedules)
        else:
            rows = self._all(self._sql.list_schedules_enabled, (self._d.flag(enabled),))
        return [Schedule.model_validate_json(row[0]) for row in rows]

    def due_schedules(self, now: datetime, limit: int) -> list[Schedule]:
        rows = self._all(self._sql.due_schedules, (self._d.time(now), limit))
        return [Schedule.model_validate_json(row[0]) for row in rows]

    def next_schedule_due(self) -> datetime | None:
        return self._time(self._sql.next_schedule_due)

    def has_firing(self, name: str, due_at: datetime) -> bool:
        return self._one(self._sql.has_firing, (name, self._d.time(due_at))) is not None

    def insert_firing(self, name: str, firing: Firing) -> None:
        self._run(self._sql.insert_firing, (name, self._d.time(firing.due_at), firing.model_dump_json()))

    def list_firings(self, name: str, limit: int) -> list[Firing]:
        return [Firing.model_validate_json(row[0]) for row in self._all(self._sql.list_firings, (name, limit))]


def _model(value: BaseModel | None) -> str | None:
    """A model stored in a JSON column (None stays NULL)."""
    return None if value is None else _dump(value.model_dump(mode="json"))


def _where(clauses: list[str]) -> str:
    return f"WHERE {' AND '.join(clauses)}" if clauses else ""
