"""Schedules without waiting for real time: due times (cron, time zones, DST), firing, catch-up, overlap."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from mcp_orchestrator.errors import InvalidInput
from mcp_orchestrator.models import (
    CancelRunInput,
    ListEventsInput,
    ListSchedulesInput,
    RunStatus,
    Schedule,
    ScheduleInput,
    StatusInput,
    UnscheduleInput,
)
from mcp_orchestrator.runtime import Engine
from mcp_orchestrator.services.schedules import upcoming

from .support import Clock, open_store

pytestmark = pytest.mark.anyio

TICK = {"type": "send_event", "name": "tick", "data": {"n": 1}}


def cron_schedule(cron: str, timezone: str) -> Schedule:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return Schedule(name="s", cron=cron, timezone=timezone, action=TICK, anchor_at=now, created_at=now, updated_at=now)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_cron_follows_the_time_zone_across_daylight_saving_changes() -> None:
    daily = cron_schedule("0 9 * * *", "Europe/Paris")
    assert upcoming(daily, utc("2026-03-28T00:00:00"), 2) == [utc("2026-03-28T08:00:00"), utc("2026-03-29T07:00:00")]
    assert upcoming(daily, utc("2026-10-24T12:00:00"), 2) == [utc("2026-10-25T08:00:00"), utc("2026-10-26T08:00:00")]
    # 02:30 does not exist on 29 March in Paris: it fires at 03:00, once.
    night = cron_schedule("30 2 * * *", "Europe/Paris")
    assert upcoming(night, utc("2026-03-28T12:00:00"), 2) == [utc("2026-03-29T01:00:00"), utc("2026-03-30T00:30:00")]
    # 02:30 happens twice on 25 October: a daily job fires once, an hourly one in both hours.
    assert upcoming(night, utc("2026-10-24T12:00:00"), 2) == [utc("2026-10-25T00:30:00"), utc("2026-10-26T01:30:00")]
    hourly = cron_schedule("30 * * * *", "Europe/Paris")
    assert upcoming(hourly, utc("2026-10-25T00:00:00"), 3) == [
        utc("2026-10-25T00:30:00"),
        utc("2026-10-25T01:30:00"),
        utc("2026-10-25T02:30:00"),
    ]
    weekdays = cron_schedule("0 9 * * 1-5", "America/New_York")
    assert upcoming(weekdays, utc("2026-11-27T15:00:00"), 2) == [utc("2026-11-30T14:00:00"), utc("2026-12-01T14:00:00")]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def engine(db: str, clock: Clock, tmp_path: Path) -> AsyncIterator[Engine]:
    async with open_store(db) as store:
        yield Engine(store, workspace=str(tmp_path), clock=clock)


async def schedule(engine: Engine, **fields: Any) -> Schedule:
    return (await engine.schedules.schedule(ScheduleInput.model_validate(fields))).schedule


async def ticks(engine: Engine) -> list[str]:
    events = (await engine.events.list_events(ListEventsInput(name="tick", limit=200))).events
    return sorted(event.event_id for event in events)


async def test_each_due_time_fires_once_and_the_schedule_moves_on(engine: Engine, clock: Clock) -> None:
    created = await engine.schedules.schedule(ScheduleInput(name="beat", every_s=10, action=TICK))
    assert created.created and created.next_due[:2] == [
        clock() + timedelta(seconds=10),
        clock() + timedelta(seconds=20),
    ]
    assert await engine.schedules.fire_due(grace_s=30) == 0
    clock.advance(10)
    assert await engine.schedules.fire_due(grace_s=30) == 1
    assert await engine.schedules.fire_due(grace_s=30) == 0  # the same due time never fires twice
    assert await ticks(engine) == ["schedule:beat:2026-01-01T00:00:10Z"]
    (listed,) = (await engine.schedules.list(ListSchedulesInput())).schedules
    assert listed.last is not None and listed.last.outcome == "sent" and listed.firings == 1
    assert listed.upcoming[0] == clock() + timedelta(seconds=10)

    updated = await engine.schedules.schedule(ScheduleInput(name="beat", every_s=10, action=TICK, catch_up="all"))
    assert not updated.created and updated.schedule.firings == 1  # an update keeps its history and its rhythm
    assert updated.schedule.next_due == clock() + timedelta(seconds=10)


@pytest.mark.parametrize(("catch_up", "fired", "missed"), [("skip", 1, 59), ("latest", 2, 58), ("all", 60, 0)])
async def test_catch_up_after_downtime(engine: Engine, clock: Clock, catch_up: str, fired: int, missed: int) -> None:
    await schedule(engine, name="minutely", every_s=60, action=TICK, catch_up=catch_up)
    clock.advance(3600 + 1)  # an hour with no orchestrator running
    assert await engine.schedules.fire_due(grace_s=30) == fired
    (listed,) = (await engine.schedules.list(ListSchedulesInput())).schedules
    assert listed.missed == missed and listed.firings == fired
    assert listed.next_due == datetime(2026, 1, 1, 1, 1, tzinfo=UTC)  # the next one after now
    assert (await ticks(engine))[-1] == "schedule:minutely:2026-01-01T01:00:00Z"  # the on-time one always fires


async def test_a_one_shot_fires_once(engine: Engine, clock: Clock) -> None:
    at = clock() + timedelta(hours=2)
    await schedule(engine, name="check-deploy", at=at.isoformat(), action=TICK)
    clock.advance(7200)
    assert await engine.schedules.fire_due(grace_s=30) == 1
    again = await schedule(engine, name="check-deploy", at=at.isoformat(), action=TICK)
    assert again.next_due is None and again.upcoming == []  # fired: scheduling it again does not re-arm it
    clock.advance(60)
    assert await engine.schedules.fire_due(grace_s=30) == 0


async def test_overlap_policies_for_spawns(engine: Engine, clock: Clock) -> None:
    spawn = {"type": "spawn_subagent", "prompt": "triage", "agent": "command", "command": ["sleep", "60"]}
    runs: dict[str, list[str]] = {}
    for overlap in ("skip", "allow", "cancel_previous"):
        await schedule(engine, name=overlap, every_s=60, action=spawn, overlap=overlap)
    for _ in range(2):
        clock.advance(60)
        await engine.schedules.fire_due(grace_s=30)
        for listed in (await engine.schedules.list(ListSchedulesInput())).schedules:
            assert listed.last is not None
            runs.setdefault(listed.name, []).append(listed.last.run_id or "")

    assert runs["skip"][0] == runs["skip"][1]  # the second firing saw the first run live: skipped
    skipped = (await engine.schedules.history("skip"))[0]
    assert skipped.outcome == "skipped" and "still queued" in (skipped.detail or "")
    assert len(set(runs["allow"])) == 2
    first, second = runs["cancel_previous"]
    assert (await engine.runs.status(StatusInput(run_id=first))).run.status == RunStatus.CANCELLED
    fired = await engine.runs.status(StatusInput(run_id=second))
    assert fired.run.status == RunStatus.QUEUED and fired.run.labels == {"schedule": "cancel_previous"}
    assert fired.run.key == "schedule:cancel_previous:2026-01-01T00:02:00Z"

    await engine.runs.cancel_run(CancelRunInput(run_id=runs["skip"][0]))
    clock.advance(60)
    await engine.schedules.fire_due(grace_s=30)
    assert (await engine.schedules.history("skip"))[0].outcome == "spawned"  # no longer overlapping


async def test_pause_resume_and_remove(engine: Engine, clock: Clock) -> None:
    await schedule(engine, name="beat", every_s=10, action=TICK)
    paused = await engine.schedules.set_enabled("beat", False)
    assert not paused.enabled and paused.upcoming == []
    clock.advance(100)
    assert await engine.schedules.fire_due(grace_s=30) == 0
    resumed = await engine.schedules.set_enabled("beat", True)
    assert resumed.next_due == clock() + timedelta(seconds=10)  # from now on; nothing made up
    removed = await engine.schedules.unschedule(UnscheduleInput(name="beat"))
    assert removed.schedule.name == "beat"
    assert (await engine.schedules.list(ListSchedulesInput())).schedules == []
    with pytest.raises(InvalidInput, match="no schedule named 'beat'"):
        await engine.schedules.unschedule(UnscheduleInput(name="beat"))


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"cron": "61 * * * *"}, "has minute 61, out of range: minute goes from 0 to 59"),
        ({"cron": "0 9 * * * *"}, "has 6 field\\(s\\), not five"),
        ({"cron": "0 9 * * *", "timezone": "Mars/Olympus"}, "not an IANA time zone"),
        ({"at": "2020-01-01T00:00:00Z"}, "is in the past"),
        ({"every_s": 10, "action": {"type": "spawn_subagent", "prompt": "x", "agent": "gpt"}}, "unknown agent"),
        ({"every_s": 10, "action": {"type": "spawn_subagent", "prompt": "x", "agent": "command"}}, "command=\\["),
        ({"every_s": 10, "action": {"type": "spawn_subagent", "prompt": "x", "cwd": "/no/dir"}}, "not an existing dir"),
    ],
)
async def test_bad_schedules_are_refused_by_the_engine(engine: Engine, fields: dict[str, Any], problem: str) -> None:
    args = ScheduleInput.model_validate({"name": "bad", "action": TICK, **fields})
    with pytest.raises(InvalidInput, match=problem):
        await engine.schedules.schedule(args)
    assert (await engine.schedules.list(ListSchedulesInput())).schedules == []


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({}, "give exactly one of cron, every_s or at (got none)"),
        ({"cron": "* * * * *", "every_s": 5}, "got cron, every_s"),
        ({"every_s": 0.5}, "greater than or equal to 1"),
        ({"every_s": 5, "action": {"type": "run_shell", "cmd": "ls"}}, "does not match any of the expected tags"),
        ({"every_s": 5, "action": {"type": "send_event"}}, "name"),
        ({"at": "2030-01-01T00:00:00"}, "needs a time zone offset"),
    ],
)
def test_bad_schedule_input_is_named(fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(problem)):
        ScheduleInput.model_validate({"name": "bad", "action": TICK, **fields})
