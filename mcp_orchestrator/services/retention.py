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

from ..models import LIVE_RUN_STATUSES, CollectPreview, CollectResult, Run
from ..store.base import Transaction
from .context import Context

BATCH = 500  # runs removed per transaction: a writer never waits long behind retention
PREVIEW_MAX = 10_000  # runs a preview counts at most (it reads their ids)
PREVIEW_SHOWN = 3  # runs a preview shows at each end


def cutoff_for(context: Context, older_than: timedelta) -> datetime:
    """The time before which what ended goes: computed once, so that a preview and the collect a
    person confirms after it use the same one."""
    return context.now() - older_than


async def collect(context: Context, before: datetime) -> CollectResult:
    """Remove what ended before ``before``; returns what was removed."""
    runs = 0
    while batch := await context.store.write(lambda tx: _remove_runs(tx, before)):
        runs += batch

    def remove_the_rest(tx: Transaction) -> tuple[int, int]:
        oldest_live = tx.oldest_run_created(LIVE_RUN_STATUSES)
        events_before = before if oldest_live is None else min(before, oldest_live)
        return tx.delete_events_before(events_before), tx.delete_firings_before(before)

    events, firings = await context.store.write(remove_the_rest)
    return CollectResult(before=before, runs=runs, events=events, firings=firings)


async def preview(context: Context, before: datetime) -> CollectPreview:
    """What ``collect(before)`` would remove now, removing nothing: the counts (runs up to PREVIEW_MAX),
    and the first and last runs to go among the runs counted. One bounded read."""

    def read(tx: Transaction) -> CollectPreview:
        removable = tx.removable_runs_before(before, PREVIEW_MAX + 1)
        more = len(removable) > PREVIEW_MAX
        removable = removable[:PREVIEW_MAX]
        shown = (
            removable if len(removable) <= 2 * PREVIEW_SHOWN else removable[:PREVIEW_SHOWN] + removable[-PREVIEW_SHOWN:]
        )
        runs = {run.run_id: run for run in tx.peek_runs(shown) if run is not None}
        oldest_live = tx.oldest_run_created(LIVE_RUN_STATUSES)
        events_before = before if oldest_live is None else min(before, oldest_live)
        listed: list[Run] = [runs[run_id] for run_id in shown if run_id in runs]
        return CollectPreview(
            before=before,
            runs=len(removable),
            runs_more=more,
            oldest=listed[:PREVIEW_SHOWN],
            newest=listed[PREVIEW_SHOWN:],
            events=tx.count_events_before(events_before),
            firings=tx.count_firings_before(before),
        )

    return await context.store.read(read)


def _remove_runs(tx: Transaction, before: datetime) -> int:
    removable = tx.removable_runs_before(before, BATCH)
    tx.delete_runs(removable)
    return len(removable)
