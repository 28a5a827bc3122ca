"""What the dashboard's lists read beyond one primitive: the run list (counts, one search box, children
under their parent), events with the runs they woke or cancelled, schedules with their latest firings, and how many
permission requests wait for a person.

Each page is one store read of a bounded number of indexed statements, whatever the store holds: the
counts are index ranges, the children and approvals of a page's runs are counted for those runs alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ..errors import InvalidInput
from ..ids import prefix_range
from ..models import (
    NAME_MAX,
    Event,
    Firing,
    ListRunsInput,
    ListSchedulesInput,
    Run,
    RunStatus,
    Schedule,
    text_problem,
)
from ..store.base import Transaction
from .approvals import KIND as APPROVAL
from .context import Context
from .runs import PREFIX_MIN, Runs, page_of
from .schedules import Schedules
from .subagents import PAUSE_STEP

FAILED_WITHIN = timedelta(hours=24)  # a failed run is news for a day (the session summary says so too)
CHILDREN_SHOWN = 20  # a parent's newest children listed under it; its count says how many there are
FIRINGS_SHOWN = 5  # a schedule's latest firings
SEARCH_MAX = NAME_MAX  # a name or key is at most this long, an id shorter
# Shorter text is not taken as the start of ids, as in the CLI: an id's first character spans about
# 1,100 years of runs, two about 35 years, three about a year, four about 12 days.
ID_PREFIX_MIN = PREFIX_MIN


@dataclass(frozen=True)
class RunCounts:
    """The run list's headline: runs running, waiting (but not paused), paused (at a budget or a usage
    limit) and failed within FAILED_WITHIN."""

    running: int
    waiting: int
    paused: int
    failed: int


@dataclass(frozen=True)
class RunRow:
    """A run of the list with what its row shows besides the run: its children (how many, and the newest
    CHILDREN_SHOWN when the list nests them) and the pending permission requests of it and of those."""

    run: Run
    children: int = 0
    approvals: int = 0  # its own
    nested: list[Run] = field(default_factory=list)
    nested_approvals: dict[str, int] = field(default_factory=dict)  # by child run id; none: absent

    @property
    def approvals_total(self) -> int:
        """Its own and its listed children's: a sub-agent asking is usually a child, folded under its row."""
        return self.approvals + sum(self.nested_approvals.values())


@dataclass(frozen=True)
class RunList:
    rows: list[RunRow]
    next_cursor: str | None
    nested: bool  # children are under their parents; False: every matching run is a row of its own
    counts: RunCounts


@dataclass(frozen=True)
class EventRow:
    event: Event
    woken_run_ids: list[str]  # the runs whose wait (or permission request) it ended
    cancelled_run_ids: list[str] = field(default_factory=list)  # the runs its cancel triggers ended


@dataclass(frozen=True)
class ScheduleRow:
    schedule: Schedule
    firings: list[Firing]  # newest first, at most FIRINGS_SHOWN


class Overview:
    """The dashboard's reads (see the module docstring)."""

    def __init__(self, context: Context, runs: Runs, schedules: Schedules) -> None:
        self.context = context
        self.store = context.store
        self.runs = runs
        self.schedules = schedules

    async def run_list(self, args: ListRunsInput, search: str | None = None) -> RunList:
        """A page of runs, newest first. Without a search or a filter (the cursor aside) the page holds runs
        without a parent, each with its newest children under it; with one, every run that matches is a row
        (a child found by its id or its name is shown, not hidden under its parent)."""
        text = search_text(search)
        filters = (args.status, args.name, args.parent_run_id, args.label, args.workspace, args.since)
        nested = text is None and all(value is None for value in filters)
        ids = prefix_range(text.upper()) if text is not None and len(text) >= ID_PREFIX_MIN else None
        query = Runs.filter_of(args).model_copy(update={"top_level": nested, "search_text": text, "search_ids": ids})
        since = self.context.now() - FAILED_WITHIN
        await self.runs.expire_overdue_runs()  # a run past its deadline shows as failed, as in list_runs

        def read(tx: Transaction) -> tuple[list[Run], dict[str, int], list[Run], dict[str, int], RunCounts]:
            runs = tx.list_runs(query)
            shown = [run.run_id for run in runs[: args.limit]]
            children = tx.count_children(shown)
            under = tx.children_of([run_id for run_id in shown if run_id in children], CHILDREN_SHOWN) if nested else []
            approvals = tx.count_waits_of(APPROVAL, [*shown, *(run.run_id for run in under)])
            return runs, children, under, approvals, _counts(tx, since)

        runs, children, under, approvals, counts = await self.store.read(read)
        page, cursor = page_of(runs, args.limit)
        nested_runs: dict[str, list[Run]] = {}
        for child in under:
            nested_runs.setdefault(child.parent_run_id or "", []).append(child)
        rows = []
        for run in page:
            kids = nested_runs.get(run.run_id, [])
            asking = {kid.run_id: approvals[kid.run_id] for kid in kids if kid.run_id in approvals}
            rows.append(RunRow(run, children.get(run.run_id, 0), approvals.get(run.run_id, 0), kids, asking))
        return RunList(rows=rows, next_cursor=cursor, nested=nested, counts=counts)

    async def approvals_waiting(self) -> int:
        """How many permission requests wait for a decision (one count over an index)."""
        return await self.store.read(lambda tx: tx.count_waits(APPROVAL))

    async def events(self, limit: int) -> list[EventRow]:
        """The newest ``limit`` events, each with the runs it woke and the runs it cancelled."""

        def read(tx: Transaction) -> list[EventRow]:
            rows = tx.list_events(None, limit)
            seqs = [seq for seq, _ in rows]
            woken, cancelled = tx.consumers_of(seqs), tx.cancelled_by(seqs)
            return [EventRow(event, woken.get(seq, []), cancelled.get(seq, [])) for seq, event in rows]

        return await self.store.read(read)

    async def schedules_with_firings(self) -> list[ScheduleRow]:
        """Every schedule (with its next due times) and its latest firings."""
        listed = (await self.schedules.list(ListSchedulesInput())).schedules
        names = [schedule.name for schedule in listed]
        firings = await self.store.read(lambda tx: [tx.list_firings(name, FIRINGS_SHOWN) for name in names])
        return [ScheduleRow(schedule, fired) for schedule, fired in zip(listed, firings, strict=True)]


def _counts(tx: Transaction, since: datetime) -> RunCounts:
    by_status = tx.count_runs([RunStatus.RUNNING, RunStatus.WAITING])
    paused = tx.count_runs_waiting_in("budget", "sleep", PAUSE_STEP)
    waiting = max(0, by_status.get(RunStatus.WAITING, 0) - paused)
    failed = tx.count_ended_since(RunStatus.FAILED, since)
    return RunCounts(running=by_status.get(RunStatus.RUNNING, 0), waiting=waiting, paused=paused, failed=failed)


def search_text(search: str | None) -> str | None:
    """The run list's search as the store is asked for it (None: no search), or why it cannot be."""
    text = (search or "").strip() or None
    if text is None:
        return None
    if len(text) > SEARCH_MAX:
        raise InvalidInput(
            f"the search is {len(text)} characters long; search for a run id (or its start), a key or a "
            f"name of at most {SEARCH_MAX} characters",
            field="q",
        )
    if (problem := text_problem(text)) is not None:
        raise InvalidInput(f"the search {problem}", field="q")
    return text
