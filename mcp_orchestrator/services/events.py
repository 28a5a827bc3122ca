"""Events and the waits they end: send_event, wait_for_event, sleep and wait_for_runs (fan-in).

A wait is a step of its run: registered once in a transaction, ended by the first matching event
(or its timeout, or its wake time, or the runs it awaits ending), and from then on memoized like
any completed step. A caller blocks only as long as it asks to (``block_s``), re-reading the wait
after every commit anywhere, so a wait never holds a process.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

from .. import transitions
from ..errors import InvalidInput, OrchestratorError, raise_or_return
from ..ids import new_id
from ..models import (
    Event,
    ListEventsInput,
    ListEventsResult,
    Run,
    SendEventInput,
    SendEventResult,
    SleepInput,
    SleepResult,
    Step,
    StepStatus,
    Wait,
    WaitForEventInput,
    WaitForRunsInput,
    WaitForRunsResult,
    WaitResult,
)
from ..store.base import Transaction
from ..transitions import after, get_run
from .context import Context, Progress

T = TypeVar("T")


class Events:
    """Events, waits, sleeps and fan-ins (see the module docstring)."""

    def __init__(self, context: Context) -> None:
        self.context = context
        self.store = context.store

    async def send_event(self, args: SendEventInput, source: str = "tool") -> SendEventResult:
        """Store an event once (by id) and end every pending wait it satisfies."""
        (result,) = await self.send_events([args], source)
        return result

    async def send_events(self, events: list[SendEventInput], source: str = "tool") -> list[SendEventResult]:
        """Send several events in one transaction: all are stored, in order, or none is."""
        for args in events:
            self.context.check_payload("data", args.data)
        ids = [args.id or new_id() for args in events]
        return await self.store.write(
            lambda tx: [
                transitions.send_event(tx, self.context.now(), args, event_id, source)
                for args, event_id in zip(events, ids, strict=True)
            ]
        )

    async def wait_for_event(self, args: WaitForEventInput, progress: Progress | None = None) -> WaitResult:
        """Wait (as step ``args.step``) for an event; blocks at most ``args.block_s``."""
        names = [args.event] if isinstance(args.event, str) else list(dict.fromkeys(args.event))
        raise_or_return(await self.store.write(lambda tx: self._register_wait(tx, args, names)))
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
        now, match = self.context.now(), args.match or {}
        wait = Wait(
            step=args.step, kind="event", events=names, match=match, until=after(now, args.timeout_s), created_at=now
        )
        opened = transitions.open_wait(tx, args.run_id, wait)
        if isinstance(opened, Wait):
            # An event being sent on one of these names takes the same lock: it sees this wait, or
            # this wait sees it below.
            tx.lock(*map(transitions.event_lock, names))
            for seq, event in tx.unconsumed_events(args.run_id, names, tx.events_after(args.run_id)):
                if transitions.matches(event, match):  # it arrived before the wait: not missed
                    transitions.receive(tx, now, args.run_id, args.step, seq, event)
                    break
        return opened

    async def sleep(self, args: SleepInput, progress: Progress | None = None) -> SleepResult:
        """A durable timer step: done once its wake time has passed; blocks at most ``args.block_s``."""
        raise_or_return(await self.store.write(lambda tx: self._register_sleep(tx, args)))
        step, wait = await self._block(args.run_id, args.step, args.block_s, progress, "sleeping")
        if step.status == StepStatus.WAITING and wait is not None and wait.until is not None:
            return SleepResult(status="sleeping", wake_at=wait.until, step=step)
        wake_at = step.output.get("wake_at") if isinstance(step.output, dict) else None
        return SleepResult(status="done", wake_at=wake_at or step.ended_at or step.started_at, step=step)

    def _register_sleep(self, tx: Transaction, args: SleepInput) -> Wait | OrchestratorError | None:
        now = self.context.now()
        until = args.until or after(now, args.seconds) or now
        opened = transitions.open_wait(tx, args.run_id, Wait(step=args.step, kind="sleep", until=until, created_at=now))
        if isinstance(opened, Wait) and opened.until is not None and opened.until <= opened.created_at:
            done = {"status": "done", "wake_at": transitions.iso(opened.until)}
            transitions.end_wait(tx, now, args.run_id, args.step, done, "woke", {})
        return opened

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
                return transitions.fan_in_done(runs, args.mode), runs, None

            runs = await self._until(check, limit, progress, message)
            if transitions.fan_in_done(runs, args.mode):
                return WaitForRunsResult(status="done", runs=runs)
            timed_out = args.timeout_s is not None and time.monotonic() - started >= args.timeout_s
            return WaitForRunsResult(status="timed_out" if timed_out else "waiting", runs=runs)

        run_id, name = args.run_id, args.step
        raise_or_return(await self.store.write(lambda tx: self._register_fan_in(tx, args, run_id, name, ids)))
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
        transitions.awaited_runs(tx, ids)  # an unknown id is named in the error
        now = self.context.now()
        wait = Wait(
            step=name, kind="runs", run_ids=ids, mode=args.mode, until=after(now, args.timeout_s), created_at=now
        )
        opened = transitions.open_wait(tx, run_id, wait)
        if isinstance(opened, Wait):  # settled: a run ending right now either sees the wait or is seen here
            transitions.settle_fan_in(tx, opened.created_at, run_id, opened, settle=True)
        return opened

    async def fire_due_waits(self) -> int:
        """End every wait whose timeout or wake time has passed; safe to call from any process."""
        if not await self.store.read(lambda tx: tx.due_waits(self.context.now())):
            return 0
        return await self.store.write(lambda tx: transitions.fire_due_waits(tx, self.context.now()))

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
            due_in = (wait.until - self.context.now()).total_seconds()
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
        """See ``Context.until``: shared with the other services that block."""
        return await self.context.until(check, block_s, progress, message)


def _event_cursor(cursor: str) -> int:
    """The event sequence number a list_events cursor names: a 64-bit integer in both stores."""
    if not re.fullmatch(r"[0-9]{1,19}", cursor) or int(cursor) >= 2**63:
        raise InvalidInput(
            f"cursor: {cursor[:40]!r} is not a next_cursor a listing printed; pass next_cursor as it was "
            "given, or leave cursor out for the newest events",
            cursor=cursor,
        )
    return int(cursor)
