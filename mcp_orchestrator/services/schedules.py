"""Schedules: recurring or delayed actions, fired by the supervisor exactly once per due time.

Each firing is recorded by (schedule, due time) in the same transaction that makes its effect (the
spawned run, the sent event), so a crash between the two is impossible and a second process
firing the same due time finds the record and does nothing. Due times come from croniter (cron,
in an IANA time zone), from an anchor and an interval (every_s), or from one instant (at).

Daylight saving time: a cron time that does not exist on a spring-forward day fires at the first
minute after the gap (croniter's rule); on a fall-back day, a time that occurs twice fires once,
at its first occurrence, when the expression names its hours, and in both hours when it runs
every hour (`*` in the hour field), since those are an hour apart in real time.
"""

from __future__ import annotations

import builtins
import math
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ValidationError

from .. import transitions
from ..errors import InvalidInput, OrchestratorError, invalid_input_from
from ..ids import new_id
from ..models import (
    Firing,
    ListSchedulesInput,
    ListSchedulesResult,
    Run,
    Schedule,
    ScheduleInput,
    ScheduleResult,
    SendEventAction,
    SendEventInput,
    SpawnAction,
    SpawnSubagentInput,
    UnscheduleInput,
    UnscheduleResult,
)
from ..store.base import Transaction
from .context import Context
from .spawns import Spawns

UPCOMING = 3  # due times shown ahead
CATCH_UP_MAX = 100  # catch_up="all" fires at most this many missed due times
PAST_AT_S = 60.0  # an `at` this far in the past still fires (clocks differ); further back is refused
FIRE_BATCH = 200  # schedules fired per transaction


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: 'America' names a directory of zones
        raise InvalidInput(
            f"timezone: {name!r} is not an IANA time zone; use a name like 'UTC', 'Europe/Paris' or 'America/New_York'",
            timezone=name,
        ) from None


def check_cron(expression: str, timezone: str, now: datetime) -> None:
    """Refuse an expression croniter cannot read, or one that names no date at all (e.g. '0 0 31 2 *')."""
    from croniter import croniter  # here and below: imported by what reads cron, not by every process's start

    readable = len(expression.split()) == 5 and croniter.is_valid(expression)
    if (problem := _step_problem(expression) if readable else _cron_problem(expression)) is not None:
        raise InvalidInput(
            f"cron: {expression!r} {problem}; the five fields are minute (0-59), hour (0-23), "
            "day-of-month (1-31), month (1-12) and day-of-week (0-7, Sunday 0 or 7), e.g. '0 9 * * 1-5' for weekdays "
            "at 09:00",
            cron=expression,
        )
    if _next_cron(expression, now.astimezone(zone(timezone))) is None:
        raise InvalidInput(
            f"cron: {expression!r} never fires: no date in the coming years matches it (February has no 30th "
            "or 31st, April no 31st); choose days the chosen months have, e.g. '0 0 28 2 *'",
            cron=expression,
        )


_CRON_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day-of-month", 1, 31), ("month", 1, 12), ("day-of-week", 0, 7))


def _cron_problem(expression: str) -> str:
    """What is wrong with a cron expression croniter refused, as precisely as can be told: the number of
    fields, or the first field with a number out of its range."""
    fields = expression.split()
    if len(fields) != len(_CRON_FIELDS):
        return f"has {len(fields)} field(s), not five"
    for text, (name, low, high) in zip(fields, _CRON_FIELDS, strict=True):
        for number in re.findall(r"(?<![/\w])\d+", text):  # a value or a range's bound, not a /step
            if not low <= int(number) <= high:
                return f"has {name} {int(number)}, out of range: {name} goes from {low} to {high}"
    return "is not a cron expression: a field is a number, a range (1-5), a list (1,3), a step (*/15) or *"


def _step_problem(expression: str) -> str | None:
    """A step croniter takes but that does not step (``*/61`` names minute 0 alone: hourly, not what was
    meant): a field's step goes from 1 to the span of its values."""
    for text, (name, low, high) in zip(expression.split(), _CRON_FIELDS, strict=True):
        for step in re.findall(r"/(\d+)", text):
            if not 1 <= int(step) <= high - low:
                return f"has the {name} step {int(step)}, out of range: {name} steps go from 1 to {high - low}"
    return None


def _next_cron(expression: str, after: datetime) -> datetime | None:
    """The next time ``expression`` names after ``after``, or None when croniter finds none
    (it gives up after searching a bounded number of years)."""
    from croniter import CroniterError, croniter

    try:
        due: datetime = croniter(expression, after).get_next(datetime)
    except (CroniterError, OverflowError):
        return None
    return due


def due_times(schedule: Schedule, after: datetime) -> Iterator[datetime]:
    """The schedule's due times strictly after ``after``, in order, in UTC."""
    if schedule.at is not None:
        if schedule.at > after:
            yield schedule.at.astimezone(UTC)
        return
    if schedule.every_s is not None:
        step = timedelta(seconds=schedule.every_s)
        count = max(math.floor((after - schedule.anchor_at) / step) + 1, 1)
        while True:
            yield schedule.anchor_at + count * step
            count += 1
    assert schedule.cron is not None
    from croniter import CroniterError, croniter

    hourly = schedule.cron.split()[1] == "*"
    times = croniter(schedule.cron, after.astimezone(zone(schedule.timezone)))
    while True:
        try:
            due: datetime = times.get_next(datetime)
        except (CroniterError, OverflowError):
            return  # no date left (a schedule stored before its cron was checked): it never fires again
        if due.fold == 1 and not hourly:
            continue  # the second occurrence of a wall-clock time on a fall-back day
        yield due.astimezone(UTC)


def upcoming(schedule: Schedule, after: datetime, count: int = UPCOMING) -> list[datetime]:
    times = due_times(schedule, after)
    return [due for due, _ in zip(times, range(count), strict=False)]


class Schedules:
    """Creating, listing and firing schedules (see the module docstring)."""

    def __init__(self, context: Context, spawns: Spawns) -> None:
        self.context = context
        self.store = context.store
        self.spawns = spawns

    async def schedule(self, args: ScheduleInput) -> ScheduleResult:
        """Create or update the schedule ``args.name``; its action is checked now, not when it fires."""
        self._check(args)
        return await self.store.write(lambda tx: self._upsert(tx, args))

    def _check(self, args: ScheduleInput) -> None:
        zone(args.timezone)
        if args.cron is not None:
            check_cron(args.cron, args.timezone, self.context.now())
        if args.at is not None and args.at < self.context.now() - timedelta(seconds=PAST_AT_S):
            raise InvalidInput(f"at: {args.at.isoformat()} is in the past; give a future time", at=args.at.isoformat())
        if isinstance(args.action, SpawnAction):
            spawn = _spawn_args(args.action).model_copy(update={"parent_run_id": None})  # checked when stored
            self.spawns.prepare(spawn, None, "check")
        else:
            self.context.check_payload("data", args.action.data)

    def _upsert(self, tx: Transaction, args: ScheduleInput) -> ScheduleResult:
        parent_run_id = args.action.parent_run_id if isinstance(args.action, SpawnAction) else None
        if parent_run_id is not None and tx.get_run(parent_run_id) is None:
            raise InvalidInput(f"parent_run_id {parent_run_id!r} names no run; pass an existing run's id")
        now = self.context.now()
        tx.lock(transitions.schedule_lock(args.name))  # a new name is not a row yet: two creators take turns
        existing = tx.get_schedule(args.name)
        timing = args.model_dump(include={"cron", "every_s", "at", "timezone"})
        same_timing = existing is not None and existing.model_dump(include=set(timing)) == timing
        schedule = Schedule(
            **args.model_dump(exclude={"action"}),
            action=args.action,
            anchor_at=existing.anchor_at if existing is not None and same_timing else now,
            created_at=existing.created_at if existing is not None else now,
            updated_at=now,
            last=existing.last if existing is not None else None,
            firings=existing.firings if existing is not None else 0,
            missed=existing.missed if existing is not None else 0,
        )
        keep_due = existing is not None and same_timing and existing.enabled and existing.next_due is not None
        if keep_due and existing is not None:
            schedule.next_due = existing.next_due
        elif args.at is not None:
            schedule.next_due = None if tx.has_firing(args.name, args.at) else args.at.astimezone(UTC)
        else:
            schedule.next_due = next(due_times(schedule, now), None)
        tx.save_schedule(schedule)
        ahead = self._ahead(schedule)
        return ScheduleResult(
            schedule=schedule.model_copy(update={"upcoming": ahead}), created=existing is None, next_due=ahead
        )

    def _ahead(self, schedule: Schedule) -> list[datetime]:
        if schedule.next_due is None or not schedule.enabled:
            return []
        return [schedule.next_due, *upcoming(schedule, schedule.next_due, UPCOMING - 1)]

    async def list(self, args: ListSchedulesInput) -> ListSchedulesResult:
        schedules = await self.store.read(lambda tx: tx.list_schedules(args.enabled))
        return ListSchedulesResult(
            schedules=[schedule.model_copy(update={"upcoming": self._ahead(schedule)}) for schedule in schedules]
        )

    async def unschedule(self, args: UnscheduleInput) -> UnscheduleResult:
        def remove(tx: Transaction) -> UnscheduleResult:
            schedule = self._get(tx, args.name)
            tx.delete_schedule(args.name)
            return UnscheduleResult(schedule=schedule)

        return await self.store.write(remove)

    async def set_enabled(self, name: str, enabled: bool) -> Schedule:
        """Pause or resume; a resumed schedule fires from the next due time on (nothing missed is made up)."""

        def change(tx: Transaction) -> Schedule:
            schedule = self._get(tx, name)
            if schedule.enabled == enabled:
                return schedule
            now = self.context.now()
            update: dict[str, object] = {"enabled": enabled, "updated_at": now}
            if enabled and schedule.next_due is not None and schedule.next_due <= now:
                update["next_due"] = next(due_times(schedule, now), None)
            changed = schedule.model_copy(update=update)
            tx.save_schedule(changed)
            return changed.model_copy(update={"upcoming": self._ahead(changed)})

        return await self.store.write(change)

    async def history(self, name: str, limit: int = 20) -> builtins.list[Firing]:  # list: the method above
        return await self.store.read(lambda tx: tx.list_firings(name, limit))

    @staticmethod
    def _get(tx: Transaction, name: str) -> Schedule:
        schedule = tx.get_schedule(name)
        if schedule is None:
            known = ", ".join(s.name for s in tx.list_schedules(None)[:20]) or "none"
            raise InvalidInput(f"no schedule named {name!r} (schedules: {known})", name=name)
        return schedule

    # Firing: the supervisor's duty.

    async def next_due(self) -> datetime | None:
        return await self.store.read(lambda tx: tx.next_schedule_due())

    async def fire_due(self, grace_s: float) -> int:
        """Fire every due time that has come; returns how many firings were recorded.

        A due time more than ``grace_s`` late counts as missed during downtime and follows the
        schedule's catch_up policy; later ones fire (late) as they are.
        """
        fired = 0
        while await self.store.read(lambda tx: tx.due_schedules(self.context.now(), 1)):
            count = await self.store.write(lambda tx: self._fire_batch(tx, grace_s))
            fired += count
            if count == 0:
                break
        return fired

    def _fire_batch(self, tx: Transaction, grace_s: float) -> int:
        now = self.context.now()
        fired = 0
        for schedule in tx.due_schedules(now, FIRE_BATCH):
            dues, missed = _to_fire(schedule, now, grace_s)
            for due in dues:
                if not tx.has_firing(schedule.name, due):
                    schedule = self._fire(tx, schedule, due, now)
                    fired += 1
            following = next(due_times(schedule, max(now, dues[-1] if dues else now)), None)
            tx.save_schedule(schedule.model_copy(update={"next_due": following, "missed": schedule.missed + missed}))
        return fired

    def _fire(self, tx: Transaction, schedule: Schedule, due: datetime, now: datetime) -> Schedule:
        action = schedule.action
        try:
            if isinstance(action, SendEventAction):
                firing = self._send(tx, schedule, action, due, now)
            else:
                firing = self._spawn(tx, schedule, action, due, now)
        except OrchestratorError as exc:  # e.g. the cwd was removed since: recorded, the schedule goes on
            firing = Firing(due_at=due, fired_at=now, outcome="failed", detail=f"{exc.code}: {exc.message}")
        except ValidationError as exc:  # an action stored under older input rules: recorded the same way
            error = invalid_input_from(exc, "action")
            firing = Firing(due_at=due, fired_at=now, outcome="failed", detail=f"{error.code}: {error.message}")
        tx.insert_firing(schedule.name, firing)
        return schedule.model_copy(update={"last": firing, "firings": schedule.firings + 1})

    def _send(
        self, tx: Transaction, schedule: Schedule, action: SendEventAction, due: datetime, now: datetime
    ) -> Firing:
        event_id = f"schedule:{schedule.name}:{transitions.iso(due)}"
        event = SendEventInput(name=action.name, data=action.data, id=event_id)
        transitions.send_event(tx, now, event, event_id, "schedule")
        return Firing(due_at=due, fired_at=now, outcome="sent", event_id=event_id)

    def _spawn(self, tx: Transaction, schedule: Schedule, action: SpawnAction, due: datetime, now: datetime) -> Firing:
        """Spawn the firing's run. With overlap="cancel_previous" the previous run is cancelled only once
        the new one is written, in the same transaction: a spawn that cannot be made leaves it running."""
        previous = _previous_run(tx, schedule)
        live = previous if previous is not None and not previous.status.terminal else None
        if live is not None and schedule.overlap == "skip":
            detail = f"the previous firing's run {live.run_id} is still {live.status}"
            return Firing(due_at=due, fired_at=now, outcome="skipped", run_id=live.run_id, detail=detail)
        args = _spawn_args(action)
        key = (
            f"schedule:{schedule.name}:{transitions.iso(due)}"
            if args.key is None
            else f"{args.key}:{transitions.iso(due)}"
        )
        labels = {**args.labels, "schedule": schedule.name[:200]}
        args = args.model_copy(update={"key": key, "labels": labels, "name": args.name or f"schedule:{schedule.name}"})
        parent = tx.get_run(args.parent_run_id) if args.parent_run_id else None
        prepared = self.spawns.prepare(args, parent, new_id())  # raises before anything is written
        spawned = transitions.queue_agent(tx, now, *prepared)
        if live is not None and schedule.overlap == "cancel_previous" and live.run_id != spawned.run.run_id:
            reason = f"schedule {schedule.name!r} fired again ({transitions.iso(due)}) with overlap=cancel_previous"
            transitions.cancel(tx, now, live, reason)
        tx.append_journal(
            spawned.run.run_id, "scheduled", now, detail={"schedule": schedule.name, "due_at": transitions.iso(due)}
        )
        return Firing(due_at=due, fired_at=now, outcome="spawned", run_id=spawned.run.run_id)


def _previous_run(tx: Transaction, schedule: Schedule) -> Run | None:
    """The run of the latest firing that has one: a failed firing (no run) must not hide a live run
    from the overlap policy."""
    recent = (
        [schedule.last] if schedule.last is not None and schedule.last.run_id else tx.list_firings(schedule.name, 20)
    )
    run_id = next((firing.run_id for firing in recent if firing.run_id), None)
    return tx.get_run(run_id, payloads=False) if run_id else None


def _to_fire(schedule: Schedule, now: datetime, grace_s: float) -> tuple[list[datetime], int]:
    """The due times to fire now, and how many missed ones catch_up skips."""
    assert schedule.next_due is not None
    dues = [schedule.next_due]
    for due in due_times(schedule, schedule.next_due):
        if due > now or len(dues) > 10_000:
            break
        dues.append(due)
    late = [due for due in dues if (now - due).total_seconds() > grace_s]
    on_time = dues[len(late) :]
    if schedule.catch_up == "all":
        kept = late[-CATCH_UP_MAX:]
    elif schedule.catch_up == "latest":
        kept = late[-1:]
    else:
        kept = []
    return kept + on_time, len(late) - len(kept)


def _spawn_args(action: SpawnAction) -> SpawnSubagentInput:
    return SpawnSubagentInput.model_validate(action.model_dump(exclude={"type"}))
