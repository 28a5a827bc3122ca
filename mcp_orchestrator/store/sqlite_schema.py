"""The SQLite schema and its forward migrations.

Each migration is a list of statements applied in one IMMEDIATE transaction together with its
row in ``schema_version``, so processes that start at once on a new file apply it exactly once.
Append new migrations; never edit a released one.
"""

from __future__ import annotations

import sqlite3

from ..errors import SchemaTooNew
from .sql import SCHEMA_VERSION_IN_USE

MIGRATIONS: list[list[str]] = [
    # 1: runs, their labels, steps and the journal.
    [
        """
        CREATE TABLE runs (
            run_id        TEXT PRIMARY KEY,
            name          TEXT NOT NULL,
            key           TEXT UNIQUE,
            status        TEXT NOT NULL,
            input         TEXT,
            output        TEXT,
            error         TEXT,
            parent_run_id TEXT REFERENCES runs (run_id) ON DELETE SET NULL,
            labels        TEXT NOT NULL DEFAULT '{}',
            workspace     TEXT,
            retry         TEXT NOT NULL,
            deadline_at   TEXT,
            created_at    TEXT NOT NULL,
            ended_at      TEXT
        )  -- updated_at is not stored: it is the time of the run's latest journal entry
        """,
        "CREATE INDEX runs_by_status ON runs (status, run_id)",
        "CREATE INDEX runs_by_parent ON runs (parent_run_id, run_id)",
        "CREATE INDEX runs_by_workspace ON runs (workspace, run_id)",
        "CREATE INDEX runs_by_name ON runs (name, run_id)",
        "CREATE INDEX runs_by_created ON runs (created_at)",
        "CREATE INDEX runs_by_deadline ON runs (deadline_at) "
        "WHERE deadline_at IS NOT NULL AND status IN ('queued', 'running', 'waiting')",
        """
        CREATE TABLE run_labels (
            key    TEXT NOT NULL,
            value  TEXT NOT NULL,
            run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            PRIMARY KEY (key, value, run_id)
        ) WITHOUT ROWID
        """,
        "CREATE INDEX run_labels_by_run ON run_labels (run_id)",
        """
        CREATE TABLE steps (
            run_id     TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            step       TEXT NOT NULL,
            status     TEXT NOT NULL,
            attempt    INTEGER NOT NULL,
            output     TEXT,
            error      TEXT,
            started_at TEXT NOT NULL,
            ended_at   TEXT,
            retry_at   TEXT,
            PRIMARY KEY (run_id, step)
        )
        """,
        """
        CREATE TABLE journal (
            seq     INTEGER PRIMARY KEY,  -- no AUTOINCREMENT: it costs a page write per entry
            run_id  TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            at      TEXT NOT NULL,
            kind    TEXT NOT NULL,
            step    TEXT,
            attempt INTEGER,
            detail  TEXT
        )
        """,
        "CREATE INDEX journal_by_run ON journal (run_id, seq)",
    ],
    # 2: events, the waits of runs for them (and sleeps), which run consumed which event, and the
    # events that cancel a run.
    [
        # Events whose seq is above a run's events_after arrived after the run started.
        "ALTER TABLE runs ADD COLUMN events_after INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE steps ADD COLUMN kind TEXT NOT NULL DEFAULT 'checkpoint'",
        """
        CREATE TABLE events (
            seq         INTEGER PRIMARY KEY,
            event_id    TEXT NOT NULL UNIQUE,
            name        TEXT NOT NULL,
            data        TEXT,
            source      TEXT NOT NULL,
            received_at TEXT NOT NULL
        )
        """,
        "CREATE INDEX events_by_name ON events (name, seq)",
        """
        CREATE TABLE waits (
            run_id     TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            step       TEXT NOT NULL,
            kind       TEXT NOT NULL,
            names      TEXT NOT NULL DEFAULT '[]',
            match      TEXT NOT NULL DEFAULT '{}',
            mode       TEXT,
            until      TEXT,
            created_at TEXT NOT NULL,
            PRIMARY KEY (run_id, step)
        )
        """,
        "CREATE INDEX waits_by_until ON waits (until) WHERE until IS NOT NULL",
        """
        CREATE TABLE wait_names (
            name   TEXT NOT NULL,
            run_id TEXT NOT NULL,
            step   TEXT NOT NULL,
            PRIMARY KEY (name, run_id, step),
            FOREIGN KEY (run_id, step) REFERENCES waits (run_id, step) ON DELETE CASCADE
        ) WITHOUT ROWID
        """,
        """
        CREATE TABLE cancel_triggers (
            run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            name   TEXT NOT NULL,
            match  TEXT NOT NULL DEFAULT '{}'
        )
        """,
        "CREATE INDEX cancel_triggers_by_name ON cancel_triggers (name)",
        """
        CREATE TABLE consumed_events (
            run_id    TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            event_seq INTEGER NOT NULL,
            step      TEXT NOT NULL,
            PRIMARY KEY (run_id, event_seq)
        ) WITHOUT ROWID
        """,
    ],
    # 3: sub-agents (their process records) and the supervisor's lease.
    [
        """
        CREATE TABLE agents (
            run_id      TEXT PRIMARY KEY REFERENCES runs (run_id) ON DELETE CASCADE,
            state       TEXT NOT NULL,
            start_after TEXT,
            doc         TEXT NOT NULL
        ) WITHOUT ROWID
        """,
        "CREATE INDEX agents_by_state ON agents (state, start_after)",
        """
        CREATE TABLE leases (
            name       TEXT PRIMARY KEY,
            holder     TEXT NOT NULL,
            expires_at TEXT NOT NULL
        ) WITHOUT ROWID
        """,
    ],
    # 4: schedules and their firings (one row per schedule and due time: fired exactly once).
    [
        """
        CREATE TABLE schedules (
            name     TEXT PRIMARY KEY,
            enabled  INTEGER NOT NULL,
            next_due TEXT,
            doc      TEXT NOT NULL
        ) WITHOUT ROWID
        """,
        "CREATE INDEX schedules_due ON schedules (next_due) WHERE enabled = 1 AND next_due IS NOT NULL",
        """
        CREATE TABLE schedule_firings (
            name   TEXT NOT NULL,
            due_at TEXT NOT NULL,
            doc    TEXT NOT NULL,
            PRIMARY KEY (name, due_at)
        ) WITHOUT ROWID
        """,
    ],
    # 5: what retention deletes by age.
    [
        "CREATE INDEX runs_by_ended ON runs (ended_at) WHERE ended_at IS NOT NULL",
        "CREATE INDEX events_by_received ON events (received_at)",
        "CREATE INDEX firings_by_due ON schedule_firings (due_at)",
    ],
    # 6: how far readers of the journal (the trace exporter) have come.
    ["CREATE TABLE cursors (name TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID"],
    # 7: what runs may spend and have spent, what their sub-agents did (a bounded timeline), and
    # messages to them waiting to be delivered.
    [
        "ALTER TABLE runs ADD COLUMN budget TEXT",
        "ALTER TABLE runs ADD COLUMN usage TEXT",
        "ALTER TABLE runs ADD COLUMN tree_usage TEXT",
        """
        CREATE TABLE activity (
            seq    INTEGER PRIMARY KEY,  -- no AUTOINCREMENT, as the journal
            run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            ref    TEXT,  -- an entry replaced in place when its ref comes again (NULLs are distinct)
            at     TEXT NOT NULL,
            kind   TEXT NOT NULL,
            doc    TEXT NOT NULL,  -- the rest of the entry
            UNIQUE (run_id, ref)
        )
        """,
        "CREATE INDEX activity_by_run ON activity (run_id, seq)",
        """
        CREATE TABLE messages (
            seq        INTEGER PRIMARY KEY,
            message_id TEXT NOT NULL UNIQUE,
            run_id     TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            status     TEXT NOT NULL,
            doc        TEXT NOT NULL  -- the whole message, its status included
        )
        """,
        "CREATE INDEX messages_by_run ON messages (run_id, status, seq)",
    ],
    # 8: long calls taken as MCP tasks, each a view of the run it started or waits in.
    [
        """
        CREATE TABLE tasks (
            task_id TEXT PRIMARY KEY,
            run_id  TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            doc     TEXT NOT NULL  -- the whole task record
        ) WITHOUT ROWID
        """,
        "CREATE INDEX tasks_by_run ON tasks (run_id)",
    ],
    # 9: what the dashboard counts and links: runs that failed lately, waits of a kind (pending
    # approvals, pauses) and the runs an event woke or cancelled.
    [
        "CREATE INDEX runs_by_status_ended ON runs (status, ended_at)",
        "CREATE INDEX waits_by_kind ON waits (kind, run_id)",
        "CREATE INDEX consumed_events_by_event ON consumed_events (event_seq)",
        "CREATE INDEX journal_cancelled_by_event ON journal (json_extract(detail, '$.event_seq')) "
        "WHERE kind = 'run_cancelled'",
    ],
]

SCHEMA_VERSION = len(MIGRATIONS)


def current_version(conn: sqlite3.Connection) -> int:
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
    (version,) = conn.execute(SCHEMA_VERSION_IN_USE).fetchone()
    return int(version)


def migrate(conn: sqlite3.Connection, location: str) -> int:
    """Apply the missing migrations; the caller holds an IMMEDIATE transaction."""
    version = current_version(conn)
    if version > SCHEMA_VERSION:
        raise SchemaTooNew.of(location, version, SCHEMA_VERSION, "file")
    for number in range(version + 1, SCHEMA_VERSION + 1):
        for statement in MIGRATIONS[number - 1]:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (?, strftime('%Y-%m-%dT%H:%M:%fZ'))",
            (number,),
        )
    return SCHEMA_VERSION
