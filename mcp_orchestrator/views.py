"""How runs, steps, schedules and processes read as text, written once for the CLI and the dashboard.

The two faces show the same facts a little differently (the terminal marks UTC times with ``Z``,
shows a missing value as ``null``, says more about a process); ``terminal=True`` selects the
terminal's way, so each face keeps the exact output it has always had.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .errors import short_json
from .models import Agent, Schedule


def when(value: datetime | None, *, terminal: bool = False) -> str:
    """A stored time to the second, or nothing; the terminal marks it UTC with a ``Z``."""
    if value is None:
        return ""
    return value.strftime("%Y-%m-%d %H:%M:%SZ" if terminal else "%Y-%m-%d %H:%M:%S")


def duration(started: datetime, ended: datetime | None) -> str:
    """How long a step took, in ms under a second; nothing while it has not ended."""
    if ended is None:
        return ""
    seconds = (ended - started).total_seconds()
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def brief(value: Any, limit: int = 60, *, terminal: bool = False) -> str:
    """A value as one short line of JSON (a string as itself), cut at ``limit`` characters with ``…``.

    A missing value is blank on a page; the terminal shows it as ``null``, which a table cell can't
    confuse with an empty string.
    """
    return "" if value is None and not terminal else short_json(value, limit, ensure_ascii=False)


def whole(value: Any) -> str:
    """A value as one line of JSON (a string as itself), uncut: what a person must read in full,
    such as the error that ended a run."""
    return short_json(value, None, ensure_ascii=False)


def schedule_timing(schedule: Schedule, *, terminal: bool = False) -> str:
    """When a schedule fires: its cron and time zone, its interval, or its one time."""
    if schedule.cron:
        return f"{schedule.cron} {schedule.timezone}" if terminal else f"{schedule.cron} ({schedule.timezone})"
    if schedule.every_s:
        return f"every {schedule.every_s:g}s" if terminal else f"every {schedule.every_s:g} s"
    return f"at {when(schedule.at, terminal=True)}" if terminal else f"at {schedule.at}"


def process_facts(process: Agent, *, terminal: bool = False) -> list[str]:
    """What a sub-agent's process is doing, as short phrases to join with commas.

    The page names the worktree here; the terminal prints it on a line of its own, and adds the
    process's times (a page shows those in the run's journal).
    """
    attempts = f"attempt {process.attempt} of up to {process.max_attempts}"
    paused = []
    if process.paused_until is not None and process.state in ("queued", "idle"):
        paused = [
            f"paused: {process.paused_reason or 'usage limit'} until {when(process.paused_until, terminal=terminal)}"
        ]
    if not terminal:
        facts = [process.profile, str(process.state), *paused, attempts]
        if process.pid:
            facts.append(f"pid {process.pid} (group {process.pgid}) on {process.host or ''}")
        if process.exited_at:
            facts.append(f"exit {process.exit_code}")
        if process.worktree:
            facts.append(f"worktree {process.worktree} ({process.branch or ''})")
        return facts
    facts = [process.profile, attempts, str(process.state), *paused]
    if process.pid is not None:
        facts.append(f"runner pid {process.pid}, group {process.pgid} on {process.host}")
    if process.started_at is not None:
        facts.append(f"started {when(process.started_at, terminal=True)}")
    if process.exited_at is not None:
        facts.append(f"exit {process.exit_code} at {when(process.exited_at, terminal=True)}")
    elif process.heartbeat_at is not None:
        facts.append(f"heartbeat {when(process.heartbeat_at, terminal=True)}")
    if process.start_after is not None and process.state == "queued" and not paused:
        facts.append(f"retry after {when(process.start_after, terminal=True)}")
    return facts
