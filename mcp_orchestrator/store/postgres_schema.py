"""The PostgreSQL schema and its forward migrations.

The same tables as the SQLite store, in PostgreSQL's own types: ``timestamptz`` for times and
``json`` (not ``jsonb``: it keeps a caller's output byte for byte, key order included) for payloads.
Each migration is applied in one transaction, with its ``schema_version`` row, under an advisory
lock, so nodes that start at once on a new database apply it exactly once. Append new migrations;
never edit a released one.
"""

from __future__ import annotations

MIGRATIONS: list[list[str]] = [
    # 1: everything the SQLite store had at its version 6.
    [
        """
        CREATE TABLE runs (
            run_id        text PRIMARY KEY,
            name          text NOT NULL,
            key           text UNIQUE,
            status        text NOT NULL,
            input         json,
            output        json,
            error         json,
            parent_run_id text REFERENCES runs (run_id) ON DELETE SET NULL,
            labels        json NOT NULL DEFAULT '{}',
            workspace     text,
            retry         json NOT NULL,
            deadline_at   timestamptz,
            created_at    timestamptz NOT NULL,
            ended_at      timestamptz,
            events_after  bigint NOT NULL DEFAULT 0
        )
        """,
        "CREATE INDEX runs_by_status ON runs (status, run_id)",
        "CREATE INDEX runs_by_parent ON runs (parent_run_id, run_id)",
        "CREATE INDEX runs_by_workspace ON runs (workspace, run_id)",
        "CREATE INDEX runs_by_name ON runs (name, run_id)",
        "CREATE INDEX runs_by_created ON runs (created_at)",
        "CREATE INDEX runs_by_deadline ON runs (deadline_at) "
        "WHERE deadline_at IS NOT NULL AND status IN ('queued', 'running', 'waiting')",
        "CREATE INDEX runs_by_ended ON runs (ended_at) WHERE ended_at IS NOT NULL",
        """
        CREATE TABLE run_labels (
            key    text NOT NULL,
            value  text NOT NULL,
            run_id text NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            PRIMARY KEY (key, value, run_id)
        )
        """,
        "CREATE INDEX run_labels_by_run ON run_labels (run_id)",
        """
        CREATE TABLE steps (
            run_id     text NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            step       text NOT NULL,
            kind       text NOT NULL,
            status     text NOT NULL,
            attempt    integer NOT NULL,
            output     json,
            error      json,
            started_at timestamptz NOT NULL,
            ended_at   timestamptz,
            retry_at   timestamptz,
            position   bigint GENERATED ALWAYS AS IDENTITY,  -- first-recorded order
            PRIMARY KEY (run_id, step)
        )
        """,
        """
        CREATE TABLE journal (
            seq       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            run_id    text NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            at        timestamptz NOT NULL,
            kind      text NOT NULL,
            step      text,
            attempt   integer,
            detail    json,
            stored_at timestamptz NOT NULL DEFAULT clock_timestamp()  -- the database's clock
        )
        """,
        "CREATE INDEX journal_by_run ON journal (run_id, seq)",
        """
        CREATE TABLE events (
            seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            event_id    text NOT NULL UNIQUE,
            name        text NOT NULL,
            data        json,
            source      text NOT NULL,
            received_at timestamptz NOT NULL
        )
        """,
        "CREATE INDEX events_by_name ON events (name, seq)",
        "CREATE INDEX events_by_received ON events (received_at)",
        """
        CREATE TABLE waits (
            run_id     text NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            step       text NOT NULL,
            kind       text NOT NULL,
            names      json NOT NULL DEFAULT '[]',
            match      json NOT NULL DEFAULT '{}',
            mode       text,
            until      timestamptz,
            created_at timestamptz NOT NULL,
            PRIMARY KEY (run_id, step)
        )
        """,
        "CREATE INDEX waits_by_until ON waits (until) WHERE until IS NOT NULL",
        """
        CREATE TABLE wait_names (
            name   text NOT NULL,
            run_id text NOT NULL,
            step   text NOT NULL,
            PRIMARY KEY (name, run_id, step),
            FOREIGN KEY (run_id, step) REFERENCES waits (run_id, step) ON DELETE CASCADE
        )
        """,
        "CREATE INDEX wait_names_by_wait ON wait_names (run_id, step)",
        """
        CREATE TABLE cancel_triggers (
            run_id text NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            name   text NOT NULL,
            match  json NOT NULL DEFAULT '{}'
        )
        """,
        "CREATE INDEX cancel_triggers_by_name ON cancel_triggers (name)",
        "CREATE INDEX cancel_triggers_by_run ON cancel_triggers (run_id)",
        """
        CREATE TABLE consumed_events (
            run_id    text NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            event_seq bigint NOT NULL,
            step      text NOT NULL,
            PRIMARY KEY (run_id, event_seq)
        )
        """,
        """
        CREATE TABLE agents (
            run_id      text PRIMARY KEY REFERENCES runs (run_id) ON DELETE CASCADE,
            state       text NOT NULL,
            start_after timestamptz,
            doc         json NOT NULL
        )
        """,
        "CREATE INDEX agents_by_state ON agents (state, start_after)",
        """
        CREATE TABLE leases (
            name       text PRIMARY KEY,
            holder     text NOT NULL,
            expires_at timestamptz NOT NULL
        )
        """,
        """
        CREATE TABLE schedules (
            name     text PRIMARY KEY,
            enabled  boolean NOT NULL,
            next_due timestamptz,
            doc      json NOT NULL
        )
        """,
        "CREATE INDEX schedules_due ON schedules (next_due) WHERE enabled AND next_due IS NOT NULL",
        """
        CREATE TABLE schedule_firings (
            name   text NOT NULL,
            due_at timestamptz NOT NULL,
            doc    json NOT NULL,
            PRIMARY KEY (name, due_at)
        )
        """,
        "CREATE INDEX firings_by_due ON schedule_firings (due_at)",
        "CREATE TABLE cursors (name text PRIMARY KEY, seq bigint NOT NULL)",
    ],
    # 2: the SQLite store's version 7: budgets and spending, sub-agents' activity, messages to them.
    [
        "ALTER TABLE runs ADD COLUMN budget json, ADD COLUMN usage json, ADD COLUMN tree_usage json",
        """
        CREATE TABLE activity (
            seq    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            run_id text NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            ref    text,  -- an entry replaced in place when its ref comes again (NULLs are distinct)
            at     timestamptz NOT NULL,
            kind   text NOT NULL,
            doc    json NOT NULL,  -- the rest of the entry
            UNIQUE (run_id, ref)
        )
        """,
        "CREATE INDEX activity_by_run ON activity (run_id, seq)",
        """
        CREATE TABLE messages (
            seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            message_id text NOT NULL UNIQUE,
            run_id     text NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            status     text NOT NULL,
            doc        json NOT NULL  -- the whole message, its status included
        )
        """,
        "CREATE INDEX messages_by_run ON messages (run_id, status, seq)",
    ],
    # 3: the SQLite store's version 8: long calls taken as MCP tasks.
    [
        """
        CREATE TABLE tasks (
            task_id text PRIMARY KEY,
            run_id  text NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            doc     json NOT NULL  -- the whole task record
        )
        """,
        "CREATE INDEX tasks_by_run ON tasks (run_id)",
    ],
    # 4: the SQLite store's version 9: what the dashboard counts and links.
    [
        "CREATE INDEX runs_by_status_ended ON runs (status, ended_at)",
        "CREATE INDEX waits_by_kind ON waits (kind, run_id)",
        "CREATE INDEX consumed_events_by_event ON consumed_events (event_seq)",
        "CREATE INDEX journal_cancelled_by_event ON journal (((detail->>'event_seq')::bigint)) "
        "WHERE kind = 'run_cancelled'",
    ],
]

SCHEMA_VERSION = len(MIGRATIONS)

CREATE_VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_version (version integer PRIMARY KEY, applied_at timestamptz NOT NULL)"
)
