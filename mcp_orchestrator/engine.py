"""The primitives' semantics: runs, steps and the journal.

Knows nothing of MCP, HTTP or SQL. Every primitive validates its input, then runs one function
in one store transaction that reads the rows it needs, decides, writes and journals. Where a
primitive must both record something and refuse the call (a run found past its deadline), the
transaction returns the error and the engine raises it after the commit.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from .agents.profiles import AgentsConfig
from .errors import InvalidInput, KeyConflict, OrchestratorError, RunNotFound, RunTerminal, StepFailed
from .ids import new_id
from .logs import read_log_tails
from .models import (
    LABEL_KEY_PATTERN,
    LIST_INDEX,
    AgentState,
    CancelRunInput,
    CancelRunResult,
    CheckpointInput,
    CheckpointResult,
    Event,
    FinishRunInput,
    FinishRunResult,
    ListEventsInput,
    ListEventsResult,
    ListRunsInput,
    ListRunsResult,
    RetryPolicy,
    RetryRunInput,
    RetryRunResult,
    Run,
    RunFilter,
    RunStatus,
    SendEventInput,
    SendEventResult,
    SleepInput,
    SleepResult,
    StartRunInput,
    StartRunResult,
    StatusInput,
    StatusResult,
    Step,
    StepStatus,
    Wait,
    WaitForEventInput,
    WaitForRunsInput,
    WaitForRunsResult,
    WaitResult,
    utcnow,
)
from .store.base import Store, Transaction

T = TypeVar("T")
Progress = Callable[[float, float, str], Awaitable[None]]
PROGRESS_EVERY_S = 3.0  # a blocked wait reports progress this often
WAIT_TOOLS = {"event": "wait_for_event", "sleep": "sleep", "runs": "wait_for_runs"}  # by wait kind

DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024
TREE_DEPTH, TREE_WIDTH = 5, 50  # how much of a run's tree descendants() shows


class Engine:
    """Durable runs and checkpoints over a ``Store``."""

    def __init__(
        self,
        store: Store,
        *,
        workspace: str | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        clock: Callable[[], datetime] = utcnow,
        agents: AgentsConfig | None = None,
    ) -> None:
        from .schedules import Schedules  # they build on this module
        from .subagents import Subagents

        self.store = store
        self.workspace = workspace
        self.max_payload_bytes = max_payload_bytes
        self._clock = clock
        self.subagents = Subagents(self, agents or AgentsConfig())
        self.schedules = Schedules(self)

    def now(self) -> datetime:
        return self._clock()

    # Runs.

    async def start_run(self, args: StartRunInput) -> StartRunResult:
        """Create a run, or return the one that already has ``args.key``."""
        self.check_payload("input", args.input)
        run_id = new_id()
        return await self.store.write(lambda tx: self.create_run(tx, args, run_id))

    def create_run(
        self, tx: Transaction, args: StartRunInput, run_id: str, status: RunStatus = RunStatus.RUNNING
    ) -> StartRunResult:
        """The run with ``args.key`` if there is one, else a new run in ``status``."""
        if args.key is not None and (existing := tx.get_run_by_key(args.key)) is not None:
            if existing.name != args.name:
                raise KeyConflict(
                    f"key {args.key!r} already belongs to run {existing.run_id} named {existing.name!r}, "
                    f"not {args.name!r}; use another key, or the same name to get that run back",
                    key=args.key,
                    run_id=existing.run_id,
                )
            if self._expire_if_overdue(tx, existing, self._clock()) is not None:
                existing = get_run(tx, existing.run_id)
            return StartRunResult(run=existing, created=False, steps=tx.list_steps(existing.run_id))
        if args.parent_run_id is not None and tx.get_run(args.parent_run_id) is None:
            raise InvalidInput(
                f"parent_run_id {args.parent_run_id!r} names no run; pass an existing run's id or leave it out",
                parent_run_id=args.parent_run_id,
            )
        now = self._clock()
        run = Run(
            run_id=run_id,
            name=args.name,
            key=args.key,
            status=status,
            input=args.input,
            parent_run_id=args.parent_run_id,
            labels=args.labels,
            workspace=args.workspace or self.workspace,
            retry=args.retry or RetryPolicy(),
            deadline_at=_after(now, args.timeout_s),
            created_at=now,
            updated_at=now,
        )
        tx.insert_run(run)
        tx.insert_cancel_triggers(run_id, [(trigger.event, trigger.match or {}) for trigger in args.cancel_on])
        detail = {"name": run.name, "key": run.key, "parent_run_id": run.parent_run_id}
        tx.append_journal(run_id, "run_created", now, detail={k: v for k, v in detail.items() if v})
        return StartRunResult(run=run, created=True, steps=[])

    async def finish_run(self, args: FinishRunInput) -> FinishRunResult:
        """Complete the run with ``output``, or fail it with ``error``; asked again, the first answer wins."""
        self.check_payload("output", args.output)
        self.check_payload("error", args.error)
        return _raise_or_return(await self.store.write(lambda tx: self._finish_run(tx, args)))

    def _finish_run(self, tx: Transaction, args: FinishRunInput) -> FinishRunResult | OrchestratorError:
        run = get_run(tx, args.run_id)
        target = RunStatus.FAILED if args.error is not None else RunStatus.COMPLETED
        if run.status.terminal:
            if run.status == target:
                return FinishRunResult(run=run, replayed=True)
            raise RunTerminal(run.run_id, run.status, f"it has ended and cannot be finished again as {target}")
        now = self._clock()
        if (expired := self._expire_if_overdue(tx, run, now)) is not None:
            return expired
        detail = None if args.error is None else {"error": args.error}
        self.end_runs(tx, [run.run_id], target, now, f"run_{target}", detail, output=args.output, error=args.error)
        run = get_run(tx, run.run_id)
        return FinishRunResult(run=run, replayed=False)

    async def cancel_run(self, args: CancelRunInput) -> CancelRunResult:
        """Cancel the run and every live descendant; already-ended runs stay as they are."""
        return await self.store.write(lambda tx: self._cancel_run(tx, args))

    def _cancel_run(self, tx: Transaction, args: CancelRunInput) -> CancelRunResult:
        run = get_run(tx, args.run_id)
        cancelled = self.cancel_in(tx, run, args.reason or "cancelled", self._clock())
        return CancelRunResult(run=get_run(tx, run.run_id), cancelled_run_ids=cancelled)

    def cancel_in(self, tx: Transaction, run: Run, reason: str, now: datetime) -> list[str]:
        """Cancel the run (if live) and its live descendants; returns their ids."""
        own = [] if run.status.terminal else [run.run_id]
        descendants = tx.live_descendant_ids(run.run_id)
        if own:
            why = {"reason": reason}
            self.end_runs(tx, own, RunStatus.CANCELLED, now, "run_cancelled", why, error=why)
        if descendants:
            inherited = {"reason": reason, "cancelled_with": run.run_id}
            self.end_runs(tx, descendants, RunStatus.CANCELLED, now, "run_cancelled", inherited, error=inherited)
        return own + descendants

    async def retry_run(self, args: RetryRunInput) -> RetryRunResult:
        """A failed or cancelled run becomes live again, from its last completed step."""
        return await self.store.write(lambda tx: self._retry_run(tx, args))

    def _retry_run(self, tx: Transaction, args: RetryRunInput) -> RetryRunResult:
        run = get_run(tx, args.run_id, payloads=False)
        if run.status not in (RunStatus.FAILED, RunStatus.CANCELLED):
            advice = "start a new run for new work" if run.status.terminal else "it is still live; nothing to retry"
            raise RunTerminal(run.run_id, run.status, f"only a failed or cancelled run can be retried: {advice}")
        now = self._clock()
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
        self.check_payload("output", args.output)
        self.check_payload("error", args.error)
        return _raise_or_return(await self.store.write(lambda tx: self._checkpoint(tx, args)))

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
                f"call {WAIT_TOOLS[step.kind]} with it to keep waiting",
                run_id=run.run_id,
                step=args.step,
            )
        if run.status.terminal:
            raise RunTerminal(run.run_id, run.status, f"a {run.status} run takes no new checkpoints")
        now = self._clock()
        if (expired := self._expire_if_overdue(tx, run, now)) is not None:
            return expired
        if run.status == RunStatus.QUEUED:
            tx.set_runs_status([run.run_id], RunStatus.RUNNING, now)
            tx.append_journal(run.run_id, "run_started", now)
        if args.begin:
            return self._begin_attempt(tx, run, args.step, step, now)
        if args.error is not None:
            return self._fail_attempt(tx, run, args, step, now)
        return self._complete_step(tx, run, args, step, now)

    def _begin_attempt(
        self, tx: Transaction, run: Run, name: str, step: Step | None, now: datetime
    ) -> CheckpointResult:
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
        self, tx: Transaction, run: Run, args: CheckpointInput, step: Step | None, now: datetime
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
        self, tx: Transaction, run: Run, args: CheckpointInput, step: Step | None, now: datetime
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

    # Events, waits and sleeps. A wait is a step: registered once, ended by the first matching
    # event (or its timeout, or its wake time), and from then on memoized like any completed step.

    async def send_event(self, args: SendEventInput, source: str = "tool") -> SendEventResult:
        """Store an event once (by id) and end every pending wait it satisfies."""
        (result,) = await self.send_events([args], source)
        return result

    async def send_events(self, events: list[SendEventInput], source: str = "tool") -> list[SendEventResult]:
        """Send several events in one transaction: all are stored, in order, or none is."""
        for args in events:
            self.check_payload("data", args.data)
        ids = [args.id or new_id() for args in events]
        return await self.store.write(
            lambda tx: [
                self.send_event_in(tx, args, event_id, source) for args, event_id in zip(events, ids, strict=True)
            ]
        )

    def send_event_in(self, tx: Transaction, args: SendEventInput, event_id: str, source: str) -> SendEventResult:
        if tx.has_event(event_id):
            return SendEventResult(event_id=event_id, deduplicated=True, woken_run_ids=[])
        now = self._clock()
        event = Event(event_id=event_id, name=args.name, data=args.data, source=source, received_at=now)
        seq = tx.insert_event(event)
        woken: list[str] = []
        for run_id, wait in tx.waits_for(event.name):
            # Within a run an event is consumed once, by the earliest wait it matches.
            if wait.kind == "event" and run_id not in woken and _matches(event, wait.match):
                self._receive(tx, run_id, wait.step, seq, event, now)
                woken.append(run_id)
        cancelled: list[str] = []
        for run_id, match in tx.cancel_triggers_for(event.name):
            if run_id not in cancelled and _matches(event, match):
                reason = f"event {event.name!r} ({event.event_id}) arrived"
                cancelled += self.cancel_in(tx, get_run(tx, run_id, payloads=False), reason, now)
        return SendEventResult(event_id=event_id, deduplicated=False, woken_run_ids=woken, cancelled_run_ids=cancelled)

    async def wait_for_event(self, args: WaitForEventInput, progress: Progress | None = None) -> WaitResult:
        """Wait (as step ``args.step``) for an event; blocks at most ``args.block_s``."""
        names = [args.event] if isinstance(args.event, str) else list(dict.fromkeys(args.event))
        _raise_or_return(await self.store.write(lambda tx: self._register_wait(tx, args, names)))
        step, wait = await self._block(
            args.run_id, args.step, args.block_s, progress, f"waiting for {' or '.join(names)}"
        )
        if step.status == StepStatus.WAITING:
            return WaitResult(status="waiting", timeout_at=wait.until if wait else None, step=step)
        output = step.output if isinstance(step.output, dict) else {}
        if output.get("status") == "received":
            return WaitResult(status="received", event=Event.model_validate(output["event"]), step=step)
        return WaitResult(status="timed_out", step=step)

    def _register_wait(
        self, tx: Transaction, args: WaitForEventInput, names: list[str]
    ) -> Wait | OrchestratorError | None:
        match = args.match or {}
        opened = self._open_wait(
            tx,
            args.run_id,
            lambda now: Wait(
                step=args.step,
                kind="event",
                events=names,
                match=match,
                until=_after(now, args.timeout_s),
                created_at=now,
            ),
        )
        if isinstance(opened, Wait):
            for seq, event in tx.unconsumed_events(args.run_id, names, tx.events_after(args.run_id)):
                if _matches(event, match):  # it arrived before the wait: not missed
                    self._receive(tx, args.run_id, args.step, seq, event, opened.created_at)
                    break
        return opened

    async def sleep(self, args: SleepInput, progress: Progress | None = None) -> SleepResult:
        """A durable timer step: done once its wake time has passed; blocks at most ``args.block_s``."""
        _raise_or_return(await self.store.write(lambda tx: self._register_sleep(tx, args)))
        step, wait = await self._block(args.run_id, args.step, args.block_s, progress, "sleeping")
        if step.status == StepStatus.WAITING and wait is not None and wait.until is not None:
            return SleepResult(status="sleeping", wake_at=wait.until, step=step)
        wake_at = step.output.get("wake_at") if isinstance(step.output, dict) else None
        return SleepResult(status="done", wake_at=wake_at or step.ended_at or step.started_at, step=step)

    def _register_sleep(self, tx: Transaction, args: SleepInput) -> Wait | OrchestratorError | None:
        opened = self._open_wait(
            tx,
            args.run_id,
            lambda now: Wait(
                step=args.step, kind="sleep", until=args.until or _after(now, args.seconds) or now, created_at=now
            ),
        )
        if isinstance(opened, Wait) and opened.until is not None and opened.until <= opened.created_at:
            done = {"status": "done", "wake_at": _iso(opened.until)}
            self._end_wait(tx, args.run_id, args.step, done, opened.created_at, "woke", {})
        return opened

    def _open_wait(
        self, tx: Transaction, run_id: str, build: Callable[[datetime], Wait]
    ) -> Wait | OrchestratorError | None:
        """Register the wait ``build`` makes for the run, unless its step already is that wait.

        Returns the new wait, None for an existing one, or an error to raise after the commit.
        """
        now = self._clock()
        wait = build(now)
        run = self._run_for_new_wait(tx, run_id, wait.step, wait.kind)
        if run is None:
            return None
        if (expired := self._expire_if_overdue(tx, run, now)) is not None:
            return expired
        self._start_wait(tx, run, wait)
        return wait

    def _run_for_new_wait(self, tx: Transaction, run_id: str, name: str, kind: str) -> Run | None:
        """The run, when step ``name`` is to become a new wait; None when it already is that wait."""
        run = get_run(tx, run_id, payloads=False)
        step = tx.get_step(run.run_id, name)
        if step is not None and step.kind != kind:
            raise InvalidInput(
                f"step {name!r} of run {run.run_id} is a {step.kind} step, not a {kind} wait; "
                "give this wait a step name of its own",
                run_id=run.run_id,
                step=name,
            )
        if step is not None and step.status == StepStatus.COMPLETED:
            return None  # ended: its result is memoized
        if run.status.terminal:
            what = "its wait ended unanswered" if step is not None else "it takes no new waits"
            raise RunTerminal(run.run_id, run.status, what)
        return None if step is not None else run  # pending: pick it up

    def _start_wait(self, tx: Transaction, run: Run, wait: Wait) -> None:
        tx.save_step(
            run.run_id,
            Step(step=wait.step, kind=wait.kind, status=StepStatus.WAITING, attempt=1, started_at=wait.created_at),
        )
        tx.insert_wait(run.run_id, wait)
        detail = wait.model_dump(mode="json", include={"kind", "events", "match", "until"}, exclude_defaults=True)
        tx.append_journal(run.run_id, "waiting", wait.created_at, wait.step, detail=detail)
        if run.status != RunStatus.WAITING:
            tx.set_runs_status([run.run_id], RunStatus.WAITING, wait.created_at)

    def _receive(self, tx: Transaction, run_id: str, step: str, seq: int, event: Event, now: datetime) -> None:
        tx.consume_event(run_id, seq, step)
        output = {"status": "received", "event": event.model_dump(mode="json")}
        detail = {"event_id": event.event_id, "name": event.name, "source": event.source}
        self._end_wait(tx, run_id, step, output, now, "event_received", detail)

    def _end_wait(
        self,
        tx: Transaction,
        run_id: str,
        name: str,
        output: dict[str, Any],
        now: datetime,
        kind: str,
        detail: dict[str, Any],
    ) -> None:
        tx.delete_wait(run_id, name)
        step = tx.get_step(run_id, name)
        assert step is not None, "a wait always has its step"
        done = step.model_copy(update={"status": StepStatus.COMPLETED, "output": output, "ended_at": now})
        tx.save_step(run_id, done)
        tx.append_journal(run_id, kind, now, name, detail=detail)
        run = get_run(tx, run_id, payloads=False)
        if run.status == RunStatus.WAITING and not tx.list_waits(run_id):
            tx.set_runs_status([run_id], RunStatus.RUNNING, now)

    def end_runs(
        self,
        tx: Transaction,
        run_ids: list[str],
        status: RunStatus,
        now: datetime,
        kind: str,
        detail: dict[str, Any] | None,
        *,
        output: Any = None,
        error: Any = None,
    ) -> None:
        """Every way a run ends comes here: its waits end, its journal says why, and then the
        fan-ins waiting for it are checked (so a journal reads cause before effect)."""
        for run_id in run_ids:
            _drop_waits(tx, run_id)
        tx.set_runs_status(run_ids, status, now, output=output, error=error)
        for run_id in run_ids:
            tx.append_journal(run_id, kind, now, detail=detail)
        for run_id in run_ids:
            for waiter_id, wait in tx.waits_for(run_id):
                if wait.kind == "runs" and tx.get_wait(waiter_id, wait.step) is not None:
                    self._end_fan_in_if_done(tx, waiter_id, wait, now)

    def _end_fan_in_if_done(
        self, tx: Transaction, waiter_id: str, wait: Wait, now: datetime, *, settle: bool = False
    ) -> None:
        runs = awaited_runs(tx, wait.events, settle=settle)
        if _fan_in_done(runs, wait.mode or "all"):
            ended = [run.run_id for run in runs if run.status.terminal]
            self._end_wait(
                tx, waiter_id, wait.step, {"status": "done", "ended": ended}, now, "runs_ended", {"ended": ended}
            )

    async def wait_for_runs(self, args: WaitForRunsInput, progress: Progress | None = None) -> WaitForRunsResult:
        """Fan-in: wait until all (or any) of ``args.run_ids`` have ended; blocks at most ``args.block_s``.

        With ``run_id`` and ``step`` the wait is a durable step of that run (memoized, with a durable
        timeout); without them it only watches, for at most ``block_s`` (and ``timeout_s``) seconds.
        """
        ids = list(dict.fromkeys(args.run_ids))
        message = f"waiting for {args.mode} of {len(ids)} run(s)"

        def read_runs(tx: Transaction) -> list[Run]:
            return [get_run(tx, run_id) for run_id in ids]

        if args.run_id is None or args.step is None:
            started = time.monotonic()
            limit = min(args.block_s, args.timeout_s) if args.timeout_s is not None else args.block_s

            async def check() -> tuple[bool, list[Run], float | None]:
                runs = await self.store.read(read_runs)
                return _fan_in_done(runs, args.mode), runs, None

            runs = await self._until(check, limit, progress, message)
            if _fan_in_done(runs, args.mode):
                return WaitForRunsResult(status="done", runs=runs)
            timed_out = args.timeout_s is not None and time.monotonic() - started >= args.timeout_s
            return WaitForRunsResult(status="timed_out" if timed_out else "waiting", runs=runs)

        run_id, name = args.run_id, args.step
        _raise_or_return(await self.store.write(lambda tx: self._register_fan_in(tx, args, run_id, name, ids)))
        step, wait = await self._block(run_id, name, args.block_s, progress, message)
        runs = await self.store.read(read_runs)
        if step.status == StepStatus.WAITING:
            return WaitForRunsResult(status="waiting", runs=runs, timeout_at=wait.until if wait else None, step=step)
        output = step.output if isinstance(step.output, dict) else {}
        return WaitForRunsResult(status="done" if output.get("status") == "done" else "timed_out", runs=runs, step=step)

    def _register_fan_in(
        self, tx: Transaction, args: WaitForRunsInput, run_id: str, name: str, ids: list[str]
    ) -> Wait | OrchestratorError | None:
        if run_id in ids:
            raise InvalidInput(f"run {run_id} cannot wait for itself to end; leave its own id out of run_ids")
        awaited_runs(tx, ids)  # an unknown id is named in the error
        opened = self._open_wait(
            tx,
            run_id,
            lambda now: Wait(
                step=name, kind="runs", events=ids, mode=args.mode, until=_after(now, args.timeout_s), created_at=now
            ),
        )
        if isinstance(opened, Wait):  # settled: a run ending right now either sees the wait or is seen here
            self._end_fan_in_if_done(tx, run_id, opened, opened.created_at, settle=True)
        return opened

    async def fire_due_waits(self) -> int:
        """End every wait whose timeout or wake time has passed; safe to call from any process."""
        if not await self.store.read(lambda tx: tx.due_waits(self._clock())):
            return 0

        def fire(tx: Transaction) -> int:
            now = self._clock()
            due = tx.due_waits(now)
            for run_id, wait in due:
                when = _iso(wait.until)
                if wait.kind == "sleep":  # event and runs waits time out
                    self._end_wait(tx, run_id, wait.step, {"status": "done", "wake_at": when}, now, "woke", {})
                else:
                    self._end_wait(
                        tx, run_id, wait.step, {"status": "timed_out"}, now, "wait_timed_out", {"until": when}
                    )
            return len(due)

        return await self.store.write(fire)

    async def list_events(self, args: ListEventsInput) -> ListEventsResult:
        """Events newest first, one page at a time."""
        before = None if args.cursor is None else _event_cursor(args.cursor)
        rows = await self.store.read(lambda tx: tx.list_events(args.name, args.limit + 1, before))
        cursor = str(rows[args.limit - 1][0]) if len(rows) > args.limit else None
        return ListEventsResult(events=[event for _, event in rows[: args.limit]], next_cursor=cursor)

    async def next_wake(self) -> datetime | None:
        """The earliest time a pending wait times out or a sleep ends."""
        return await self.store.read(lambda tx: tx.next_wake())

    async def _block(
        self, run_id: str, name: str, block_s: float, progress: Progress | None, message: str
    ) -> tuple[Step, Wait | None]:
        """Re-read the wait step ``name`` until it ends or ``block_s`` passes."""

        async def check() -> tuple[bool, tuple[Step, Wait | None], float | None]:
            step, wait = await self.store.read(lambda tx: (tx.get_step(run_id, name), tx.get_wait(run_id, name)))
            assert step is not None, "the wait was registered before blocking"
            if step.status != StepStatus.WAITING or wait is None:
                return True, (step, wait), None
            if wait.until is None:
                return False, (step, wait), None
            due_in = (wait.until - self._clock()).total_seconds()
            if due_in <= 0:
                await self.fire_due_waits()
                return await check()
            return False, (step, wait), due_in

        return await self._until(check, block_s, progress, message)

    async def _until(
        self,
        check: Callable[[], Awaitable[tuple[bool, T, float | None]]],
        block_s: float,
        progress: Progress | None,
        message: str,
    ) -> T:
        """Call ``check`` after every commit anywhere (or when it says something is due, in seconds)
        until it reports done or ``block_s`` passes; returns its last value."""
        started = reported = time.monotonic()
        while True:
            since = self.store.generation
            done, value, due_in = await check()
            elapsed = time.monotonic() - started
            if done or elapsed >= block_s:
                return value
            if progress is not None and time.monotonic() - reported >= PROGRESS_EVERY_S:
                reported = time.monotonic()
                await progress(elapsed, block_s, message)
            timeout = min(block_s - elapsed, PROGRESS_EVERY_S, due_in if due_in is not None else PROGRESS_EVERY_S)
            await self.store.wait_for_change(max(timeout, 0.0), since=since)

    # Reading.

    async def status(self, args: StatusInput) -> StatusResult:
        """The run with its steps, children and latest journal entries."""

        def read(tx: Transaction) -> StatusResult:
            run = get_run(tx, args.run_id)
            return StatusResult(
                run=run,
                steps=tx.list_steps(run.run_id),
                waits=tx.list_waits(run.run_id),
                children=tx.list_children(run.run_id),
                process=tx.get_agent(run.run_id),
                journal=tx.read_journal(run.run_id, args.journal_limit) if args.journal_limit else [],
            )

        result = await self.store.read(read)
        now = self._clock()
        if any(wait.until is not None and wait.until <= now for wait in result.waits):
            await self.fire_due_waits()  # so that status is right even when no server runs timers
            result = await self.store.read(read)
        if self._overdue(result.run, self._clock()):
            await self.store.write(lambda tx: self._expire_if_overdue(tx, get_run(tx, args.run_id), self._clock()))
            result = await self.store.read(read)
        if result.process is not None and result.process.log_dir is not None and args.log_lines:
            result.log_tail = read_log_tails(Path(result.process.log_dir), args.log_lines)
        return result

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

    async def list_runs(self, args: ListRunsInput) -> ListRunsResult:
        """Runs newest first, filtered, one page at a time."""
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
            return ListRunsResult(runs=runs, next_cursor=runs[-1].run_id)
        return ListRunsResult(runs=runs, next_cursor=None)

    # Deadlines: enforced whenever a run is written or read, so no background process is needed
    # for a timed-out run to show as failed.

    async def expire_overdue_runs(self) -> list[str]:
        """Fail every live run whose deadline has passed; returns their ids."""
        now = self._clock()
        if not await self.store.read(lambda tx: tx.overdue_run_ids(now)):
            return []

        def expire(tx: Transaction) -> list[str]:
            now = self._clock()
            expired = []
            for run_id in tx.overdue_run_ids(now):
                if self._expire_if_overdue(tx, get_run(tx, run_id), now) is not None:
                    expired.append(run_id)
            return expired

        return await self.store.write(expire)

    @staticmethod
    def _overdue(run: Run, now: datetime) -> bool:
        return not run.status.terminal and run.deadline_at is not None and now >= run.deadline_at

    def _expire_if_overdue(self, tx: Transaction, run: Run, now: datetime) -> OrchestratorError | None:
        if not self._overdue(run, now):
            return None
        deadline = run.model_dump(mode="json", include={"deadline_at"})["deadline_at"]
        error = {"type": "timeout", "message": f"the run did not finish by its deadline, {deadline}"}
        self.end_runs(tx, [run.run_id], RunStatus.FAILED, now, "run_timed_out", {"deadline_at": deadline}, error=error)
        return RunTerminal(run.run_id, RunStatus.FAILED, f"it timed out at its deadline, {deadline}")

    # Limits.

    def check_payload(self, field: str, value: Any) -> None:
        """Refuse a value that is not plain JSON or is over the payload limit."""
        if value is None:
            return
        try:
            encoded = json.dumps(value, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
        except (ValueError, TypeError, RecursionError) as exc:
            raise InvalidInput(f"{field} is not plain JSON ({exc}); NaN and Infinity are not allowed") from exc
        size = len(encoded.encode())
        if size > self.max_payload_bytes:
            raise InvalidInput(
                f"{field} is {size} bytes, over the limit of {self.max_payload_bytes} bytes; store large data "
                "in a file and record its path instead",
                field=field,
                size=size,
            )


def _fan_in_done(runs: list[Run], mode: str) -> bool:
    ended = sum(run.status.terminal for run in runs)
    return ended == len(runs) or (mode == "any" and ended > 0)


def _after(now: datetime, seconds: float | None) -> datetime | None:
    return None if not seconds else now + timedelta(seconds=seconds)


def _drop_waits(tx: Transaction, run_id: str) -> None:
    """A run that ends waits for nothing more; its wait steps stay as they were."""
    for wait in tx.list_waits(run_id):
        tx.delete_wait(run_id, wait.step)


def _matches(event: Event, match: dict[str, Any]) -> bool:
    """Every dotted path of ``match`` (e.g. 'data.pr') leads to an equal value in the event.

    Total: a wait stored before its match was checked (an odd path, a value too deep to compare)
    matches nothing, so it can never make another caller's send_event fail."""
    document = event.model_dump(mode="json")
    try:
        return all(_lookup(document, path) == (True, expected) for path, expected in match.items())
    except (RecursionError, TypeError, ValueError, AttributeError):
        return False


def _lookup(document: Any, path: Any) -> tuple[bool, Any]:
    """(True, the value at the dotted ``path``), or (False, None) when the path leads nowhere."""
    if not isinstance(path, str):
        return False, None
    value = document
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and LIST_INDEX.fullmatch(part) and int(part) < len(value):
            value = value[int(part)]
        else:
            return False, None
    return True, value


def _event_cursor(cursor: str) -> int:
    """The event sequence number a list_events cursor names: a 64-bit integer in both stores."""
    if not re.fullmatch(r"[0-9]{1,19}", cursor) or int(cursor) >= 2**63:
        raise InvalidInput(
            f"cursor: {cursor[:40]!r} is not a next_cursor a listing printed; pass next_cursor as it was "
            "given, or leave cursor out for the newest events",
            cursor=cursor,
        )
    return int(cursor)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def get_run(tx: Transaction, run_id: str, *, payloads: bool = True) -> Run:
    run = tx.get_run(run_id, payloads=payloads)
    if run is None:
        raise RunNotFound(run_id)
    return run


def awaited_runs(tx: Transaction, run_ids: list[str], *, settle: bool = False) -> list[Run]:
    runs = tx.peek_runs(run_ids, settle=settle)
    for run_id, run in zip(run_ids, runs, strict=True):
        if run is None:
            raise RunNotFound(run_id)
    return [run for run in runs if run is not None]


def _this_attempt(step: Step | None, now: datetime) -> tuple[int, datetime]:
    """The attempt an outcome belongs to: the started one, else a new one that began just now."""
    if step is None:
        return 1, now
    if step.status == StepStatus.STARTED:
        return step.attempt, step.started_at
    return step.attempt + 1, now


def _raise_or_return(outcome: T | OrchestratorError) -> T:
    if isinstance(outcome, OrchestratorError):
        raise outcome
    return outcome


def short_json(value: Any, limit: int = 200) -> str:
    """A value as text for a message, cut to ``limit`` characters."""
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _as_list(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else value


def _parse_label(label: str) -> tuple[str, str | None]:
    key, sep, value = label.partition("=")
    if not re.fullmatch(LABEL_KEY_PATTERN, key):
        raise InvalidInput(f"label filter {label!r} must be 'key=value' or 'key', with a key like 'repo' or 'team.x'")
    return key, value if sep else None
