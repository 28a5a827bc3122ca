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
from ..errors import InvalidInput, OrchestratorError, RunTerminal, StepFailed, raise_or_return, short_json
from ..ids import new_id
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
from .sizing import fit_runs, fit_start, fit_status, page_steps

TREE_DEPTH, TREE_WIDTH = 5, 50  # how much of a run's tree descendants() shows


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
        if budget is None:
            return result.model_copy(update=page_steps(result.steps).fields())
        return fit_start(result, result.steps, budget)

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
        self.context.check_payload("output", args.output)
        self.context.check_payload("error", args.error)
        return raise_or_return(await self.store.write(lambda tx: self._checkpoint(tx, args)))

    def _checkpoint(self, tx: Transaction, args: CheckpointInput) -> CheckpointResult | OrchestratorError:
        run = get_run(tx, args.run_id, payloads=False)
        step = tx.get_step(run.run_id, args.step)
        if step is not None and step.status == StepStatus.COMPLETED:
            return CheckpointResult(step=step, replayed=True)
        if step is not None and step.status == StepStatus.FAILED:
            if args.error is not None:  # the same failure reported again
                return CheckpointResult(step=step, replayed=True, retry=False)
            raise StepFailed(
                f"step {args.step!r} of run {run.run_id} failed for good after {step.attempt} attempt(s) "
                f"(last error: {short_json(step.error)}); it takes no more attempts. Handle the failure, "
                "use a new step name for a different approach, or finish_run with an error",
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
            return expired
        if run.status == RunStatus.QUEUED:
            tx.set_runs_status([run.run_id], RunStatus.RUNNING)
            tx.append_journal(run.run_id, "run_started", now)
        if args.begin:
            return _begin_attempt(tx, run, args.step, step, now)
        if args.error is not None:
            return _fail_attempt(tx, run, args, step, now)
        return _complete_step(tx, run, args, step, now)

    # Reading.

    async def status(self, args: StatusInput, *, budget: int | None = None) -> StatusResult:
        """The run with its steps, children and latest journal entries; with a ``budget`` (bytes of JSON),
        fitted to it for a model (``sizing.fit_status``), else every step asked for whole."""

        before = _activity_cursor(args.activity_cursor)

        def read(tx: Transaction) -> StatusResult:
            run = get_run(tx, args.run_id)
            process = tx.get_agent(run.run_id)
            activity = tx.read_activity(run.run_id, args.activity_limit, before_seq=before) if process else []
            more = len(activity) == args.activity_limit and activity and activity[0].seq > 0
            return StatusResult(
                run=run,
                steps=tx.list_steps(run.run_id),
                waits=tx.list_waits(run.run_id),
                children=tx.list_children(run.run_id),
                process=process,
                journal=tx.read_journal(run.run_id, args.journal_limit) if args.journal_limit else [],
                activity=activity,
                activity_cursor=str(activity[0].seq) if more else None,
                messages=tx.messages_of([run.run_id], ["queued"], 50) if process else [],
            )

        result = await self.store.read(read)
        now = self.context.now()
        if any(wait.until is not None and wait.until <= now for wait in result.waits):
            # So that status is right even when no server runs timers.
            await self.store.write(lambda tx: transitions.fire_due_waits(tx, self.context.now()))
            result = await self.store.read(read)
        if transitions.overdue(result.run, self.context.now()):
            await self.store.write(
                lambda tx: transitions.expire_if_overdue(tx, self.context.now(), get_run(tx, args.run_id))
            )
            result = await self.store.read(read)
        if result.process is not None and result.process.log_dir is not None and args.log_lines:
            result.log_tail = read_log_tails(Path(result.process.log_dir), args.log_lines)
        steps = result.steps
        before = None if args.steps_cursor is None else int(args.steps_cursor)
        if budget is None:
            page = page_steps(steps, before=before, limit=args.steps_limit, outputs=args.include_outputs)
            return result.model_copy(update=page.fields())
        return fit_status(result, steps, budget, before=before, limit=args.steps_limit, outputs=args.include_outputs)

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

    async def descendants(self, children: list[Run], depth: int = 0) -> list[tuple[int, Run]]:
        """The tree under a run (given its children), depth first, as (depth, run): at most
        TREE_DEPTH levels and TREE_WIDTH runs a level, for people to read."""
        tree: list[tuple[int, Run]] = []
        for child in children[:TREE_WIDTH]:
            tree.append((depth, child))
            if depth + 1 < TREE_DEPTH:
                below = await self.list_runs(ListRunsInput(parent_run_id=child.run_id, limit=TREE_WIDTH))
                tree += await self.descendants(sorted(below.runs, key=lambda run: run.run_id), depth + 1)
        return tree

    async def list_runs(self, args: ListRunsInput, *, budget: int | None = None) -> ListRunsResult:
        """Runs newest first, filtered, one page at a time; with a ``budget`` (bytes of JSON), a page
        no longer than that (``sizing.fit_runs``)."""
        query = RunFilter(
            statuses=[] if args.status is None else args.status if isinstance(args.status, list) else [args.status],
            name=args.name,
            parent_run_id=args.parent_run_id,
            labels=[_parse_label(label) for label in _as_list(args.label)],
            workspace=args.workspace,
            since=args.since,
            before_run_id=args.cursor,
            limit=args.limit + 1,
        )
        await self.expire_overdue_runs()
        runs = await self.store.read(lambda tx: tx.list_runs(query))
        if len(runs) > args.limit:
            runs = runs[: args.limit]
            result = ListRunsResult(runs=runs, next_cursor=runs[-1].run_id)
        else:
            result = ListRunsResult(runs=runs, next_cursor=None)
        return result if budget is None else fit_runs(result, budget)

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


def _begin_attempt(tx: Transaction, run: Run, name: str, step: Step | None, now: datetime) -> CheckpointResult:
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
    tx: Transaction, run: Run, args: CheckpointInput, step: Step | None, now: datetime
) -> CheckpointResult:
    attempt, started_at = _this_attempt(step, now)
    policy = run.retry
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
    tx: Transaction, run: Run, args: CheckpointInput, step: Step | None, now: datetime
) -> CheckpointResult:
    attempt, started_at = _this_attempt(step, now)
    new = Step(
        step=args.step,
        status=StepStatus.COMPLETED,
        attempt=attempt,
        output=args.output,
        started_at=started_at,
        ended_at=now,
    )
    tx.save_step(run.run_id, new)
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
