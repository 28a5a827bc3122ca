"""Runs and their steps: start, checkpoint, finish, cancel, retry, and reading them back.

Knows nothing of MCP, HTTP or SQL. Every primitive validates its input, then runs one function in
one store transaction that reads the rows it needs, decides, writes and journals. Where a primitive
must both record something and refuse the call (a run found past its deadline), the transaction
returns the error and the service raises it after the commit.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from .. import transitions
from ..errors import (
    InvalidInput,
    OrchestratorError,
    Remedy,
    RunAmbiguous,
    RunNotFound,
    RunTerminal,
    StepFailed,
    raise_or_return,
    short_json,
)
from ..ids import new_id, prefix_range
from ..logs import read_log_tails
from ..models import (
    LABEL_KEY_PATTERN,
    Activity,
    AgentState,
    CancelRunInput,
    CancelRunResult,
    CheckpointInput,
    CheckpointResult,
    FinishRunInput,
    FinishRunResult,
    ListRunsInput,
    ListRunsResult,
    RetryRunInput,
    RetryRunResult,
    Run,
    RunFilter,
    RunState,
    RunStatus,
    StartRunInput,
    StartRunResult,
    StatusInput,
    StatusResult,
    Step,
    StepStatus,
    Wait,
)
from ..store.base import Transaction
from ..transitions import get_run
from .context import Context
from .sizing import RunSteps, fit_runs, fit_start, fit_status, page_steps, steps_window

TREE_DEPTH, TREE_WIDTH = 5, 50  # how much of a run's tree descendants() shows
TREE_MAX = 250  # runs in all that descendants() reads, whatever the depth and width allow
# The shortest id prefix resolve() takes. An id starts with its creation time in milliseconds, 10
# characters of 5 bits: 4 characters span about 12 days of runs, 3 about a year, 2 about 35 years, so a
# shorter prefix names nearly every run. (Telling one run from those made around it takes 9 or 10.)
PREFIX_MIN = 4
PREFIX_CANDIDATES = 5  # how many runs an ambiguous prefix lists


class Runs:
    """Durable runs and checkpoints (see the module docstring)."""

    def __init__(self, context: Context) -> None:
        self.context = context
        self.store = context.store

    # Runs.

    async def start_run(self, args: StartRunInput, *, budget: int | None = None) -> StartRunResult:
        """Create a run, or return the one that already has ``args.key``; with a ``budget`` (bytes of
        JSON), its steps paged and its values previewed to fit it (``sizing.fit_start``)."""
        self.context.check_payload("input", args.input)
        run_id = new_id()
        workspace = self.context.workspace
        result = await self.store.write(
            lambda tx: transitions.create_run(tx, self.context.now(), args, run_id, workspace=workspace)
        )
        steps = RunSteps.of(result.steps)
        if budget is None:
            return result.model_copy(update=page_steps(steps).fields())
        return fit_start(result, steps, budget)

    async def finish_run(self, args: FinishRunInput) -> FinishRunResult:
        """Complete the run with ``output``, or fail it with ``error``; asked again, the first answer wins."""
        self.context.check_payload("output", args.output)
        self.context.check_payload("error", args.error)
        return raise_or_return(await self.store.write(lambda tx: self._finish_run(tx, args)))

    def _finish_run(self, tx: Transaction, args: FinishRunInput) -> FinishRunResult | OrchestratorError:
        run = get_run(tx, args.run_id)
        target = RunStatus.FAILED if args.error is not None else RunStatus.COMPLETED
        if run.status.terminal:
            if run.status == target:
                return FinishRunResult(run=run, replayed=True)
            raise RunTerminal(run.run_id, run.status, f"it has ended and cannot be finished again as {target}")
        now = self.context.now()
        if (expired := transitions.expire_if_overdue(tx, now, run)) is not None:
            return expired
        detail = None if args.error is None else {"error": args.error}
        transitions.end_runs(
            tx, now, [run.run_id], target, f"run_{target}", detail, output=args.output, error=args.error
        )
        return FinishRunResult(run=get_run(tx, run.run_id), replayed=False)

    async def cancel_run(self, args: CancelRunInput) -> CancelRunResult:
        """Cancel the run and every live descendant; already-ended runs stay as they are."""

        def cancel(tx: Transaction) -> CancelRunResult:
            run = get_run(tx, args.run_id)
            cancelled = transitions.cancel(tx, self.context.now(), run, args.reason or "cancelled")
            return CancelRunResult(run=get_run(tx, run.run_id), cancelled_run_ids=cancelled)

        return await self.store.write(cancel)

    async def retry_run(self, args: RetryRunInput) -> RetryRunResult:
        """A failed or cancelled run becomes live again, from its last completed step."""
        return await self.store.write(lambda tx: self._retry_run(tx, args))

    def _retry_run(self, tx: Transaction, args: RetryRunInput) -> RetryRunResult:
        run = get_run(tx, args.run_id, payloads=False)
        if run.status not in (RunStatus.FAILED, RunStatus.CANCELLED):
            advice = "start a new run for new work" if run.status.terminal else "it is still live; nothing to retry"
            raise RunTerminal(run.run_id, run.status, f"only a failed or cancelled run can be retried: {advice}")
        now = self.context.now()
        reset = []
        for step in tx.list_steps(run.run_id):
            if step.status == StepStatus.FAILED:  # a new set of attempts
                tx.save_step(run.run_id, step.model_copy(update={"status": StepStatus.RETRYING, "retry_at": None}))
                reset.append(step.step)
            elif step.status == StepStatus.WAITING:  # its wait ended with the run: it starts over
                tx.delete_step(run.run_id, step.step)
                reset.append(step.step)
        agent = tx.get_agent(run.run_id)
        deadline = None if run.deadline_at is None else now + (run.deadline_at - run.created_at)
        tx.restart_run(run.run_id, RunStatus.QUEUED if agent else RunStatus.RUNNING, deadline)
        if agent is not None:  # its process starts again, resumed, with a new set of attempts
            update = {"state": AgentState.QUEUED, "failures": 0, "resume": True, "start_after": None}
            tx.save_agent(agent.model_copy(update=update))
        detail = {"from": run.status.value, "reason": args.reason or "retried", "reset_steps": reset}
        tx.append_journal(run.run_id, "run_retried", now, detail=detail)
        return RetryRunResult(run=get_run(tx, run.run_id), reset_steps=reset)

    # Steps.

    async def checkpoint(self, args: CheckpointInput) -> CheckpointResult:
        """Record a step's result, a failed attempt, or the start of an attempt (see CheckpointInput)."""
        output = self.context.check_payload("output", args.output)  # as JSON text: stored as it is
        self.context.check_payload("error", args.error)
        # Quiet: a checkpoint that ends no run and starts nothing concerns no waiter (the supervisor, a
        # blocked wait); _checkpoint says so when it does. Pages watching every commit still see it.
        return raise_or_return(await self.store.write(lambda tx: self._checkpoint(tx, args, output), wake=False))

    def _checkpoint(
        self, tx: Transaction, args: CheckpointInput, output: str | None
    ) -> CheckpointResult | OrchestratorError:
        run, step = transitions.run_and_step(tx, args.run_id, args.step)
        if step is not None and step.status == StepStatus.COMPLETED:
            return CheckpointResult(step=step, replayed=True)
        if step is not None and step.status == StepStatus.FAILED:
            if args.error is not None:  # the same failure reported again
                return CheckpointResult(step=step, replayed=True, retry=False)
            raise StepFailed(
                f"step {args.step!r} of run {run.run_id} failed for good after {step.attempt} attempt(s) "
                f"(last error: {short_json(step.error)}); it takes no more attempts",
                remedy=Remedy(
                    "finish_run",
                    " with an error",
                    before="handle the failure, use a new step name for a different approach, or ",
                ),
                run_id=run.run_id,
                step=args.step,
            )
        if step is not None and step.status == StepStatus.WAITING:
            raise InvalidInput(
                f"step {args.step!r} of run {run.run_id} is a pending {step.kind} wait, not a checkpoint; "
                f"call {transitions.WAIT_TOOLS[step.kind]} with it to keep waiting",
                run_id=run.run_id,
                step=args.step,
            )
        if run.status.terminal:
            raise RunTerminal(run.run_id, run.status, f"a {run.status} run takes no new checkpoints")
        now = self.context.now()
        if (expired := transitions.expire_if_overdue(tx, now, run)) is not None:
            tx.wake()  # the run failed: its waiters (a parent's wait_for_runs) are told
            return expired
        if run.status == RunStatus.QUEUED:
            tx.wake()
            tx.set_runs_status([run.run_id], RunStatus.RUNNING)
            tx.append_journal(run.run_id, "run_started", now)
        if args.begin:
            return _begin_attempt(tx, run, args.step, step, now)
        if args.error is not None:
            return _fail_attempt(tx, run, args, step, now)
        return _complete_step(tx, run, args, step, now, output)

    # Reading.

    async def resolve(self, text: str) -> str:
        """The id of the run ``text`` names, as a person types it: its id, its idempotency key, or (at
        least PREFIX_MIN characters, any case) the start of its id that no other run's shares. An unknown
        name is RunNotFound; a prefix of several runs is RunAmbiguous, listing some of them."""

        def read(tx: Transaction) -> str | list[Run]:
            if tx.peek_runs([text])[0] is not None:
                return text
            if (keyed := tx.get_run_by_key(text)) is not None:
                return keyed.run_id
            bounds = prefix_range(text.upper()) if len(text) >= PREFIX_MIN else None
            return [] if bounds is None else tx.runs_in_id_range(*bounds, PREFIX_CANDIDATES + 1)

        found = await self.store.read(read)
        if isinstance(found, str):
            return found
        if not found:
            short = len(text) < PREFIX_MIN and prefix_range(text.upper()) is not None
            raise RunNotFound(text, by_key_or_prefix=True, prefix_min=PREFIX_MIN if short else 0)
        if len(found) == 1:
            return found[0].run_id
        listed = [
            {
                "run_id": r.run_id,
                "name": r.name,
                "status": r.status.value,
                "created": f"{r.created_at:%Y-%m-%dT%H:%M:%SZ}",
            }
            for r in found[:PREFIX_CANDIDATES]
        ]
        raise RunAmbiguous(text, listed, more=len(found) > PREFIX_CANDIDATES)

    async def status(
        self, args: StatusInput, *, budget: int | None = None, children: int | None = None
    ) -> StatusResult:
        """The run with its steps, children and latest journal entries; with a ``budget`` (bytes of JSON),
        fitted to it for a model (``sizing.fit_status``), else every step asked for whole. ``children``: only
        the newest that many children, without their payloads (a page read again on every change)."""

        activity_before = _activity_cursor(args.activity_cursor)
        steps_before = None if args.steps_cursor is None else int(args.steps_cursor)

        def read(tx: Transaction) -> tuple[StatusResult, RunSteps]:
            run = get_run(tx, args.run_id)
            process = tx.get_agent(run.run_id)
            activity = tx.read_activity(run.run_id, args.activity_limit, before_seq=activity_before) if process else []
            more = len(activity) == args.activity_limit and activity and activity[0].seq > 0
            # Every step by name; whole only those the answer can show, not every output of a long run.
            names = tx.step_names(run.run_id)
            start, end = steps_window(len(names), before=steps_before, limit=args.steps_limit, budget=budget)
            steps = RunSteps(names, tx.steps_at(run.run_id, start, end - start), start)
            result = StatusResult(
                run=run,
                steps=[],  # the page, below
                waits=tx.list_waits(run.run_id),
                children=(
                    tx.list_children(run.run_id)
                    if children is None
                    else sorted(tx.children_of([run.run_id], children), key=lambda child: child.run_id)
                ),
                process=process,
                journal=tx.read_journal(run.run_id, args.journal_limit) if args.journal_limit else [],
                activity=activity,
                activity_cursor=str(activity[0].seq) if more else None,
                messages=tx.messages_of([run.run_id], ["queued"], 50) if process else [],
            )
            return result, steps

        result, steps = await self.store.read(read)
        now = self.context.now()
        if any(wait.until is not None and wait.until <= now for wait in result.waits):
            # So that status is right even when no server runs timers.
            await self.store.write(lambda tx: transitions.fire_due_waits(tx, self.context.now()))
            result, steps = await self.store.read(read)
        if transitions.overdue(result.run, self.context.now()):
            await self.store.write(
                lambda tx: transitions.expire_if_overdue(tx, self.context.now(), get_run(tx, args.run_id))
            )
            result, steps = await self.store.read(read)
        if result.process is not None and result.process.log_dir is not None and args.log_lines:
            result.log_tail = read_log_tails(Path(result.process.log_dir), args.log_lines)
        outputs = args.include_outputs
        if budget is None:
            page = page_steps(steps, before=steps_before, limit=args.steps_limit, outputs=outputs)
            return result.model_copy(update=page.fields())
        return fit_status(result, steps, budget, before=steps_before, limit=args.steps_limit, outputs=outputs)

    async def activity(self, run_id: str, limit: int, *, after: int | None = None) -> list[Activity]:
        """The run's activity entries, oldest first: the latest ``limit``, or the first ``limit`` after entry
        ``after`` (its ``seq``), for a reader that follows the timeline as it grows."""

        def read(tx: Transaction) -> list[Activity]:
            get_run(tx, run_id, payloads=False)
            return tx.read_activity(run_id, limit, after_seq=after)

        return await self.store.read(read)

    async def waits(self, run_ids: Sequence[str]) -> dict[str, list[Wait]]:
        """What each of these runs waits for (its pending waits), read at once: for a summary of many runs,
        where ``status`` of each would read far more."""
        return await self.store.read(lambda tx: tx.waits_of(run_ids))

    async def descendants(self, children: list[Run]) -> list[tuple[int, Run]]:
        """The tree under a run (given its children), depth first, as (depth, run): see ``tree_below``."""
        return (await self.tree_below(children))[0]

    async def tree_below(self, children: list[Run]) -> tuple[list[tuple[int, Run]], bool]:
        """The tree under a run (given its children), depth first, as (depth, run), for people to read: at
        most TREE_DEPTH levels, the newest TREE_WIDTH runs under each run and TREE_MAX runs in all, each
        level one statement; and whether the tree holds more than that (then a person opens a run below)."""
        levels: list[list[Run]] = [sorted(children, key=lambda run: run.run_id)[-TREE_WIDTH:]]
        cut = len(children) > TREE_WIDTH

        def read(tx: Transaction) -> bool:
            nonlocal cut
            total = len(levels[0])
            while levels[-1] and len(levels) < TREE_DEPTH and total < TREE_MAX:
                found = tx.children_of([run.run_id for run in levels[-1]], TREE_WIDTH + 1)
                under: dict[str | None, list[Run]] = {}
                for run in found:
                    under.setdefault(run.parent_run_id, []).append(run)
                level = []
                for parent in levels[-1]:
                    newest = under.get(parent.run_id, [])
                    cut = cut or len(newest) > TREE_WIDTH
                    level += sorted(newest[:TREE_WIDTH], key=lambda run: run.run_id)
                cut = cut or len(level) > TREE_MAX - total
                levels.append(level[: TREE_MAX - total])
                total += len(levels[-1])
            # Below the last level read: a run there may have children of its own, not shown.
            return cut or bool(levels[-1] and tx.count_children([run.run_id for run in levels[-1]]))

        cut = await self.store.read(read)
        under = {run.run_id: run for level in levels[1:] for run in level}
        below: dict[str, list[Run]] = {}
        for run in under.values():
            below.setdefault(run.parent_run_id or "", []).append(run)
        tree: list[tuple[int, Run]] = []

        def walk(runs: list[Run], depth: int) -> None:
            for run in runs:
                tree.append((depth, run))
                walk(below.get(run.run_id, []), depth + 1)

        walk(levels[0], 0)
        return tree, cut

    async def ancestors(self, run_id: str, limit: int) -> tuple[list[Run], int]:
        """The runs above this one, root first, without their payloads: the nearest ``limit`` of them, and
        how many more are above those (a person's tree view says so rather than reading a deep chain)."""

        def read(tx: Transaction) -> tuple[list[Run], int]:
            above = tx.ancestor_ids(run_id)
            runs = [run for ancestor_id in above[:limit] if (run := tx.get_run(ancestor_id, payloads=False))]
            return runs[::-1], max(0, len(above) - limit)

        return await self.store.read(read)

    async def list_runs(self, args: ListRunsInput, *, budget: int | None = None) -> ListRunsResult:
        """Runs newest first, filtered, one page at a time; with a ``budget`` (bytes of JSON), a page
        no longer than that (``sizing.fit_runs``)."""
        query = self.filter_of(args)
        await self.expire_overdue_runs()
        runs, cursor = page_of(await self.store.read(lambda tx: tx.list_runs(query)), args.limit)
        result = ListRunsResult(runs=runs, next_cursor=cursor)
        return result if budget is None else fit_runs(result, budget)

    @staticmethod
    def filter_of(args: ListRunsInput) -> RunFilter:
        """A page of list_runs as the store is asked for it: one run more than the page, so that ``page_of``
        knows whether there is a next page."""
        return RunFilter(
            statuses=[] if args.status is None else args.status if isinstance(args.status, list) else [args.status],
            name=args.name,
            parent_run_id=args.parent_run_id,
            labels=[_parse_label(label) for label in _as_list(args.label)],
            workspace=args.workspace,
            since=args.since,
            before_run_id=args.cursor,
            limit=args.limit + 1,
        )

    async def expire_overdue_runs(self) -> list[str]:
        """Fail every live run whose deadline has passed; returns their ids."""
        if not await self.store.read(lambda tx: tx.overdue_run_ids(self.context.now())):
            return []

        def expire(tx: Transaction) -> list[str]:
            now = self.context.now()
            expired = []
            for run_id in tx.overdue_run_ids(now):
                if transitions.expire_if_overdue(tx, now, get_run(tx, run_id)) is not None:
                    expired.append(run_id)
            return expired

        return await self.store.write(expire)


def page_of(runs: list[Run], limit: int) -> tuple[list[Run], str | None]:
    """The page of runs read by a ``filter_of`` query, and the cursor of the next page (None: no more)."""
    if len(runs) > limit:
        return runs[:limit], runs[limit - 1].run_id
    return runs, None


def _begin_attempt(tx: Transaction, run: RunState, name: str, step: Step | None, now: datetime) -> CheckpointResult:
    previous: Any = None
    if step is not None and step.status == StepStatus.STARTED:
        previous = "unknown"
        tx.append_journal(run.run_id, "attempt_unknown", now, name, step.attempt)
    elif step is not None:
        previous = "failed"
    attempt = 1 if step is None else step.attempt + 1
    new = Step(step=name, status=StepStatus.STARTED, attempt=attempt, started_at=now)
    tx.save_step(run.run_id, new)
    tx.append_journal(run.run_id, "step_started", now, name, attempt)
    return CheckpointResult(step=new, replayed=False, previous_outcome=previous)


def _fail_attempt(
    tx: Transaction, run: RunState, args: CheckpointInput, step: Step | None, now: datetime
) -> CheckpointResult:
    attempt, started_at = _this_attempt(step, now)
    policy = get_run(tx, run.run_id, payloads=False).retry
    give_up = not args.retryable or attempt >= policy.max_attempts
    retry_at = None if give_up else now + timedelta(seconds=policy.backoff_s(attempt))
    new = Step(
        step=args.step,
        status=StepStatus.FAILED if give_up else StepStatus.RETRYING,
        attempt=attempt,
        error=args.error,
        started_at=started_at,
        ended_at=now,
        retry_at=retry_at,
    )
    tx.save_step(run.run_id, new)
    if give_up:
        why = "not retryable" if not args.retryable else f"{attempt} of {policy.max_attempts} attempts used"
        tx.append_journal(run.run_id, "step_failed", now, args.step, attempt, {"error": args.error, "why": why})
    else:
        detail = {"error": args.error, "retry_at": new.model_dump(mode="json")["retry_at"]}
        tx.append_journal(run.run_id, "attempt_failed", now, args.step, attempt, detail)
    return CheckpointResult(step=new, replayed=False, retry=not give_up, retry_at=retry_at)


def _complete_step(
    tx: Transaction, run: RunState, args: CheckpointInput, step: Step | None, now: datetime, output: str | None
) -> CheckpointResult:
    """``output``: the step's output as JSON text (``Context.check_payload``'s)."""
    attempt, started_at = _this_attempt(step, now)
    new = Step(step=args.step, status=StepStatus.COMPLETED, attempt=attempt, started_at=started_at, ended_at=now)
    new.output = args.output  # valid already, as the input's: given after, so a large one is not walked again
    tx.save_step(run.run_id, new, output_json=output)
    tx.append_journal(run.run_id, "step_completed", now, args.step, attempt)
    return CheckpointResult(step=new, replayed=False)


def _this_attempt(step: Step | None, now: datetime) -> tuple[int, datetime]:
    """The attempt an outcome belongs to: the started one, else a new one that began just now."""
    if step is None:
        return 1, now
    if step.status == StepStatus.STARTED:
        return step.attempt, step.started_at
    return step.attempt + 1, now


def _activity_cursor(cursor: str | None) -> int | None:
    """The entry number an activity cursor names (entries before it are read)."""
    if cursor is None:
        return None
    if not cursor.isdigit() or len(cursor) > 18:
        raise InvalidInput(
            f"activity_cursor {cursor!r:.40} is not one a status returned; pass its activity_cursor as given",
            field="activity_cursor",
        )
    return int(cursor)


def _as_list(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else value


def _parse_label(label: str) -> tuple[str, str | None]:
    key, sep, value = label.partition("=")
    if not re.fullmatch(LABEL_KEY_PATTERN, key):
        raise InvalidInput(f"label filter {label!r} must be 'key=value' or 'key', with a key like 'repo' or 'team.x'")
    return key, value if sep else None
