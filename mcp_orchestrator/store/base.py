"""The seam between the engine and a database.

A ``Store`` runs a function inside one transaction and hands it a ``Transaction``: plain,
synchronous row reads and writes that decide nothing. The engine writes its decisions as such
functions (read the run and the step, decide, write), so one primitive is one atomic transaction
on any database.

Why synchronous: on SQLite the whole function runs on the connection's own thread in one hop, and
concurrent writers are committed together (group commit), which is what makes thousands of durable
checkpoints a second possible. A driver that is asynchronous by nature (asyncpg) runs the function
in a greenlet and switches to the event loop for each statement.

Transaction functions must not touch the event loop and may run more than once (a batch that
could not commit, a deadlock, a key another writer inserted meanwhile, a connection lost before
COMMIT: each runs the function again from the start), so they only read and write through the
transaction, and decide only on what they read there.

Where writers run at once (PostgreSQL), a write transaction reads rows the way it means to use them:
a row it decides on is locked as it is read (``FOR NO KEY UPDATE``, ``FOR SHARE``), and rows it takes
work from skip those another transaction holds (``SKIP LOCKED``). Those clauses are part of the
statements, as the reading is. What is not a row yet (an event name a wait may meet, a lease or a
schedule nobody has created, the sub-agent limits) is guarded only by the locks the caller takes by
name (``Transaction.lock``): no read takes one by itself, so the rules that need them say so where
they decide.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeAlias, TypeVar

from ..models import (
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

T = TypeVar("T")
# Which sub-agents a query selects: by state, the statuses their run may have (any other state: none).
AgentRule: TypeAlias = Mapping[AgentState, Collection[RunStatus]]


class Transaction(Protocol):
    woken: bool
    """Whether a write called ``wake``: its commit wakes waiters even if the write was quiet."""

    def wake(self) -> None:
        """Say that this write, though begun as quiet (``write(..., wake=False)``), may end a wait or
        start or stop work after all: its commit wakes waiters as any other."""

    def lock(self, *names: str) -> None:
        """Take the named locks, held until the transaction ends: a write transaction deciding on what
        is not a row yet (a name nobody has used) takes turns with others deciding on the same names.
        Where writers run at once (PostgreSQL) these are advisory locks, each taken once per
        transaction: one call's names in a fixed order, successive calls' in call order (so callers
        that take several names one after another keep one order); where writers take turns
        (SQLite), and in reads, there is nothing to take."""

    def get_run(self, run_id: str, *, payloads: bool = True) -> Run | None:
        """``payloads=False`` leaves input, output and error out (None): cheaper on hot paths."""

    def get_run_by_key(self, key: str) -> Run | None: ...

    def peek_runs(self, run_ids: Sequence[str], *, settle: bool = False) -> list[Run | None]:
        """Runs (without input, output and error) that the transaction looks at but does not change,
        such as the runs a fan-in awaits, in the order given. ``get_run`` may take its run for change
        (where writers run at once, a run read in a write transaction is locked until it ends); these
        are not taken, so transactions looking at each other's runs cannot block one another. With
        ``settle``, a change another transaction is making to one of them is waited for first: a
        fan-in that has just registered its wait then sees any run that ended meanwhile, while the
        transaction ending it, not seeing the wait yet, left it to this one."""

    def insert_run(self, run: Run, events_after: int) -> None:
        """``events_after``: the highest event seq that arrived before the run started (later ones
        arrived after it; 0: all of them)."""

    def list_runs(self, query: RunFilter) -> list[Run]:
        """Newest first (by run_id), at most ``query.limit`` rows."""

    def list_children(self, run_id: str) -> list[Run]: ...

    # What the dashboard counts and links, each answered from an index.

    def count_runs(self, statuses: Collection[RunStatus]) -> dict[RunStatus, int]:
        """How many runs are in each of ``statuses`` (a status without runs: absent)."""

    def count_ended_since(self, status: RunStatus, since: datetime) -> int:
        """How many runs in ``status`` ended at or after ``since``."""

    def count_children(self, run_ids: Sequence[str]) -> dict[str, int]:
        """How many children each of these runs has (none: absent)."""

    def count_waits(self, kind: str) -> int:
        """How many pending waits of this kind there are (e.g. 'approval')."""

    def count_waits_of(self, kind: str, run_ids: Sequence[str]) -> dict[str, int]:
        """How many pending waits of this kind each of these runs has (none: absent)."""

    def count_runs_waiting_in(self, kind: str, or_kind: str, step_prefix: str) -> int:
        """How many runs have a pending wait of ``kind``, or of ``or_kind`` on a step starting with
        ``step_prefix``."""

    def consumers_of(self, seqs: Sequence[int]) -> dict[int, list[str]]:
        """The runs that consumed each of these events (by seq), by run id (none: absent)."""

    def cancelled_by(self, seqs: Sequence[int]) -> dict[int, list[str]]:
        """The runs each of these events cancelled through a cancel trigger (by seq), by run id (none:
        absent); not their descendants, cancelled with them."""

    def children_of(self, run_ids: Sequence[str], limit: int) -> list[Run]:
        """Each of these runs' newest ``limit`` children, without input, output and error, grouped by
        parent, newest first within a parent."""

    def runs_in_id_range(self, low: str, high: str, limit: int) -> list[Run]:
        """Runs (without input, output and error) with ``low <= run_id < high``, by id, at most ``limit``:
        the runs whose id starts with a prefix, ``low`` and ``high`` being its first id and the next prefix."""

    def descendant_ids(self, run_id: str, statuses: Collection[RunStatus]) -> list[str]:
        """Ids of every descendant (children, their children ...) in one of ``statuses``."""

    def overdue_run_ids(self, now: datetime) -> list[str]:
        """Live runs whose deadline_at is at or before ``now``: those the partial index on deadlines
        holds (its statuses are the index's, part of the schema, so they are not a parameter)."""

    def set_runs_status(
        self,
        run_ids: Sequence[str],
        status: RunStatus,
        *,
        ended_at: datetime | None = None,
        output: Any = None,
        error: Any = None,
    ) -> None:
        """Write status, ended_at, output and error as given (None clears).

        ``updated_at`` is never written: it is the time of the run's latest journal entry.
        """

    def restart_run(self, run_id: str, status: RunStatus, deadline_at: datetime | None) -> None:
        """Make an ended run live again: status, no output, error or ended_at, a new deadline."""

    def get_step(self, run_id: str, step: str) -> Step | None: ...

    def run_and_step(self, run_id: str, step: str) -> tuple[RunState, Step | None] | None:
        """The run's status and deadline with its step ``step`` (None: no such step), the run taken as
        ``get_run`` takes it; None: no such run. One statement where writers take turns (SQLite)."""

    def delete_step(self, run_id: str, step: str) -> None: ...

    def list_steps(self, run_id: str, kind: str | None = None) -> list[Step]:
        """In the order they were first recorded; with ``kind``, only the steps of that kind (a sub-agent's
        approvals or budget pauses, without reading its checkpoints)."""

    def step_names(self, run_id: str) -> list[tuple[str, StepStatus]]:
        """Each step's name and status, in ``list_steps``'s order: a long run's, without its outputs."""

    def steps_at(self, run_id: str, offset: int, limit: int) -> list[Step]:
        """The steps at positions ``offset`` to ``offset + limit - 1`` of ``list_steps``'s order."""

    def save_step(self, run_id: str, step: Step, *, output_json: str | None = None) -> None:
        """Insert or replace the step's row. ``output_json``: its output as JSON text, when the caller has
        it already (a checkpoint's, encoded to check its size), so it is not encoded twice."""

    def append_journal(
        self,
        run_id: str,
        kind: str,
        at: datetime,
        step: str | None = None,
        attempt: int | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None: ...

    def read_journal(self, run_id: str, limit: int) -> list[JournalEntry]:
        """The latest ``limit`` entries of the run, oldest first."""

    # Events and waits. Events are numbered (seq) in the order they were stored.

    def events_after(self, run_id: str) -> int:
        """The run's ``events_after`` (see ``insert_run``)."""

    def last_event_seq(self) -> int:
        """The highest event seq stored (0: none yet)."""

    def insert_event(self, event: Event) -> int:
        """Store the event; returns its seq."""

    def has_event(self, event_id: str) -> bool: ...

    def unconsumed_events(self, run_id: str, names: Sequence[str], after_seq: int) -> Iterator[tuple[int, Event]]:
        """Events of these names after ``after_seq`` that no step of the run consumed, oldest first."""

    def consume_event(self, run_id: str, seq: int, step: str) -> None: ...

    def list_events(self, name: str | None, limit: int, before_seq: int | None = None) -> list[tuple[int, Event]]:
        """Newest first."""

    def insert_wait(self, run_id: str, wait: Wait) -> None: ...

    def delete_wait(self, run_id: str, step: str) -> None: ...

    def get_wait(self, run_id: str, step: str) -> Wait | None: ...

    def list_waits(self, run_id: str) -> list[Wait]: ...

    def waits_of(self, run_ids: Sequence[str]) -> dict[str, list[Wait]]:
        """Each run's pending waits (none: an empty list), read at once."""

    def waits_for(self, name: str) -> list[tuple[str, Wait]]:
        """(run_id, wait) of every pending wait on this name (an event name, or for a fan-in an
        awaited run's id), oldest wait first."""

    def due_waits(self, now: datetime) -> list[tuple[str, Wait]]:
        """(run_id, wait) of every pending wait whose ``until`` is at or before ``now``."""

    def waits_of_kind(self, kind: str) -> list[tuple[str, Wait]]:
        """(run_id, wait) of every pending wait of this kind (e.g. 'approval'), oldest first."""

    def steps_of_kind(
        self, kind: str, statuses: Collection[StepStatus], run_ids: Sequence[str] | None, limit: int
    ) -> list[tuple[str, Step]]:
        """(run_id, step) of steps of this kind in one of ``statuses`` (of these runs, or of any),
        newest first (by started_at), at most ``limit``."""

    def insert_cancel_triggers(self, run_id: str, triggers: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """(event name, match) pairs that cancel the run."""

    def cancel_triggers_for(self, name: str, statuses: Collection[RunStatus]) -> list[tuple[str, dict[str, Any]]]:
        """(run_id, match) of the runs in one of ``statuses`` that an event of this name may cancel."""

    def next_wake(self) -> datetime | None:
        """The earliest ``until`` of any pending wait."""

    # Sub-agents and the supervisor's lease.

    def get_agent(self, run_id: str) -> Agent | None: ...

    def save_agent(self, agent: Agent) -> None:
        """Insert or replace the sub-agent's record."""

    def agents_in(self, states: Collection[AgentState]) -> list[Agent]:
        """Every sub-agent in one of these states, oldest run first."""

    def agents_by_run_status(
        self, rule: AgentRule, *, start_by: datetime | None = None, limit: int | None = None
    ) -> list[Agent]:
        """The sub-agents ``rule`` selects, oldest run first; with ``start_by``, those whose start_after
        is unset or at or before it; at most ``limit``. A write transaction takes work from them:
        it skips those another transaction holds."""

    def earliest_start_after(self, rule: AgentRule) -> datetime | None:
        """The earliest start_after of the sub-agents ``rule`` selects."""

    def get_lease(self, name: str) -> tuple[str, datetime] | None:
        """(holder, expires_at) of the lease, if anyone took it."""

    def put_lease(self, name: str, holder: str, expires_at: datetime) -> None: ...

    def delete_lease(self, name: str, holder: str) -> None:
        """Give the lease up, if ``holder`` holds it."""

    def journal_after(self, seq: int, kinds: Sequence[str], limit: int) -> list[JournalEntry]:
        """Entries of these kinds after ``seq`` (across all runs), oldest first."""

    def get_cursor(self, name: str) -> int:
        """How far the journal reader ``name`` has come (0 at first)."""

    def set_cursor(self, name: str, seq: int) -> None: ...

    # What sub-agents spend and do, and messages to them.

    def ancestor_ids(self, run_id: str) -> list[str]:
        """The run's parent, its parent's parent ... nearest first (the run itself not included)."""

    def set_run_usage(self, run_id: str, usage: Usage | None, tree_usage: Usage | None) -> None:
        """Write the run's own and its tree's spending as given."""

    def set_run_budget(self, run_id: str, budget: Budget | None) -> None: ...

    def append_activity(self, run_id: str, entries: Sequence[Activity]) -> None:
        """Store the entries in order (their ``seq`` is assigned here). An entry whose ``ref`` the run already
        has replaces that entry's content in place: it keeps its seq (a tool call, then its result)."""

    def read_activity(
        self, run_id: str, limit: int, *, before_seq: int | None = None, after_seq: int | None = None
    ) -> list[Activity]:
        """Oldest first: the latest ``limit`` entries (before ``before_seq``), or with ``after_seq`` the
        first ``limit`` entries after it."""

    def trim_activity(self, run_id: str, keep: int) -> int:
        """Delete all but the run's newest ``keep`` entries; returns how many were deleted."""

    def insert_message(self, message: Message) -> None: ...

    def save_message(self, message: Message) -> None:
        """Replace the stored message of the same id (its status, delivery)."""

    def messages_of(self, run_ids: Sequence[str], statuses: Collection[MessageStatus], limit: int) -> list[Message]:
        """Messages to these runs in one of ``statuses``, oldest first, at most ``limit``."""

    # Long calls taken as MCP tasks.

    def insert_task(self, task: TaskRecord) -> None: ...

    def get_task(self, task_id: str) -> TaskRecord | None: ...

    def save_task(self, task: TaskRecord) -> None:
        """Replace the stored task of the same id (its status)."""

    # Retention.

    def removable_runs_before(self, cutoff: datetime, limit: int) -> list[str]:
        """Completed, failed or cancelled runs that ended before ``cutoff`` and have no live descendant,
        oldest end first; where a deleted newest row's number is taken again (SQLite), except the run
        holding the newest journal entry, so journal numbers never go back."""

    def delete_runs(self, run_ids: Sequence[str]) -> None:
        """Remove the runs with everything that is theirs: steps, journal, waits, labels, process record."""

    def oldest_run_created(self, statuses: Collection[RunStatus]) -> datetime | None:
        """The earliest created_at of the runs in one of ``statuses``."""

    def delete_events_before(self, cutoff: datetime) -> int:
        """Remove events received before ``cutoff``; where a deleted newest row's number is taken again
        (SQLite), except the newest event of all, so event numbers never go back and a run's
        events_after stays meaningful. Returns how many."""

    def delete_firings_before(self, cutoff: datetime) -> int:
        """Remove schedule firings due before ``cutoff``; returns how many."""

    def count_events_before(self, cutoff: datetime) -> int:
        """How many events ``delete_events_before`` would remove."""

    def count_firings_before(self, cutoff: datetime) -> int:
        """How many firings ``delete_firings_before`` would remove."""

    # Schedules.

    def get_schedule(self, name: str) -> Schedule | None: ...

    def save_schedule(self, schedule: Schedule) -> None:
        """Insert or replace the schedule (its ``upcoming`` is computed, never stored)."""

    def delete_schedule(self, name: str) -> None:
        """Remove the schedule and its firings."""

    def list_schedules(self, enabled: bool | None) -> list[Schedule]:
        """By name."""

    def due_schedules(self, now: datetime, limit: int) -> list[Schedule]:
        """Enabled schedules whose next_due is at or before ``now``, earliest first."""

    def next_schedule_due(self) -> datetime | None: ...

    def has_firing(self, name: str, due_at: datetime) -> bool: ...

    def insert_firing(self, name: str, firing: Firing) -> None:
        """Record a firing; (name, due_at) is unique: a second one for the same due time fails."""

    def list_firings(self, name: str, limit: int) -> list[Firing]:
        """Newest due time first."""


class Store(Protocol):
    """A database holding runs, steps and the journal, shared by every process that opens it."""

    location: str

    async def open(self) -> None:
        """Connect and bring the schema up to date."""

    async def close(self) -> None: ...

    async def __aenter__(self) -> Store: ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    async def write(self, fn: Callable[[Transaction], T], *, wake: bool = True) -> T:
        """Run ``fn`` in a write transaction and return its result once committed.

        If ``fn`` raises, its writes are undone and the exception propagates; other writers
        batched into the same commit are unaffected. ``wake=False`` says the write is quiet: it
        ends no wait and starts or stops no work (a heartbeat, a checkpoint that ends no run), so it
        wakes no waiter of consequences (``waking``), here or in other processes; ``fn`` may still
        call ``tx.wake()`` when it finds otherwise. Watchers of every commit see it regardless.
        """

    async def read(self, fn: Callable[[Transaction], T]) -> T:
        """Run ``fn`` on a consistent snapshot; it must not write."""

    @property
    def generation(self) -> int:
        """Grows with every commit this process has seen. Read it before checking the store, and pass
        it to ``wait_for_change`` as ``since``: a commit made during the check is then not missed."""

    @property
    def wake_generation(self) -> int:
        """Grows with every commit seen that may end a wait or start or stop work (not quiet ones); the
        ``since`` of ``wait_for_change(..., waking=True)``."""

    sees_quiet_commits: bool
    """Whether other processes' quiet commits are seen (SQLite: every commit is in the WAL index) or not
    (PostgreSQL notifies only of waking ones): a watcher of everything then looks again now and then."""

    async def wait_for_change(self, timeout: float, since: int | None = None, *, waking: bool = False) -> None:
        """Return after the next commit by any process sharing the store (with ``waking``, the next that
        may end a wait or start or stop work), or after ``timeout`` seconds; at once if the count
        (``generation``, or ``wake_generation`` with ``waking``) has moved past ``since``."""
