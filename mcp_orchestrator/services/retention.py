"""Retention: what ended long ago is removed, so the store does not grow without bound.

Runs that completed, failed or were cancelled before the cutoff go with everything that is theirs
(steps, journal, waits, labels, process records); a run that still has a live descendant stays,
so a tree is never cut under a live run. Events go when they are older than the cutoff and than
every live run (a live run may still wait for an event that arrived after it started). Schedule
firings go by due time; schedules themselves stay. SQLite reuses the freed pages, so the file
stops growing once old work is removed as fast as new work comes.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from ..models import LIVE_RUN_STATUSES, CollectResult
from ..store.base import Transaction
from .context import Context

BATCH = 500  # runs removed per transaction: a writer never waits long behind retention


async def collect(context: Context, older_than: timedelta) -> CollectResult:
    """Remove what ended more than ``older_than`` ago; returns what was removed."""
    cutoff = context.now() - older_than
    runs = 0
    while batch := await context.store.write(lambda tx: _remove_runs(tx, cutoff)):
        runs += batch

    def remove_the_rest(tx: Transaction) -> tuple[int, int]:
        oldest_live = tx.oldest_run_created(LIVE_RUN_STATUSES)
        events_before = cutoff if oldest_live is None else min(cutoff, oldest_live)
        return tx.delete_events_before(events_before), tx.delete_firings_before(cutoff)

    events, firings = await context.store.write(remove_the_rest)
    return CollectResult(before=cutoff, runs=runs, events=events, firings=firings)


def _remove_runs(tx: Transaction, cutoff: datetime) -> int:
    ended = tx.ended_runs_before(cutoff, BATCH)
    removable = [run_id for run_id in ended if not tx.descendant_ids(run_id, LIVE_RUN_STATUSES)]
    tx.delete_runs(removable)
    return len(removable)
