"""Schedule tools: recurring or delayed spawns and events, fired by the supervisor."""

from __future__ import annotations

from mcp.types import ToolAnnotations

from ..models import (
    ListSchedulesInput,
    ListSchedulesResult,
    ScheduleInput,
    ScheduleResult,
    UnscheduleInput,
    UnscheduleResult,
)
from ..runtime import Engine
from ._base import READS, SAFE_WRITE, engine_tool


@engine_tool(ScheduleInput, ScheduleResult, title="Schedule recurring or delayed work", annotations=SAFE_WRITE)
async def schedule(engine: Engine, args: ScheduleInput) -> ScheduleResult:
    """Create or update (by name) a schedule that fires whether or not any session is open.

    Use it for recurring agent work ("weekdays at 9:00 Paris time, triage new issues") or a delayed
    check ("in two hours, look at the deploy"). Give exactly one timing: `cron` (five fields, in
    `timezone`), `every_s`, or `at` (a one-shot time). Each due time fires exactly once, even with
    several orchestrator processes. The action runs at each firing: spawn_subagent with its
    arguments (the runs are labelled schedule=<name>), or send_event (id "schedule:<name>:<due>").
    `overlap` decides what a spawn does while the previous firing's run is still live; `catch_up`
    what happens to due times missed while no orchestrator ran.

    Returns the `schedule`, `created` and `next_due` (the next few due times, UTC).

    Example: schedule(name="triage", cron="0 9 * * 1-5", timezone="Europe/Paris",
    action={"type": "spawn_subagent", "prompt": "Triage the new issues of this repository."})
    """
    return await engine.schedules.schedule(args)


@engine_tool(ListSchedulesInput, ListSchedulesResult, title="List schedules", annotations=READS)
async def list_schedules(engine: Engine, args: ListSchedulesInput) -> ListSchedulesResult:
    """List schedules by name, each with its last firing (time, outcome, run or event) and upcoming
    due times. Use it before creating a schedule (names are unique) or to check what fired.

    Example: list_schedules(enabled=true) -> {"schedules": [{"name": "triage", "cron": "0 9 * * 1-5",
    "last": {"outcome": "spawned", "run_id": "01K..."}, "upcoming": ["2026-11-25T08:00:00Z", ...]}]}
    """
    return await engine.schedules.list(args)


@engine_tool(
    UnscheduleInput,
    UnscheduleResult,
    title="Remove a schedule",
    annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False),
)
async def unschedule(engine: Engine, args: UnscheduleInput) -> UnscheduleResult:
    """Remove a schedule and its firing history; runs it already spawned are not touched (cancel_run
    them if needed). To pause instead, schedule it again with enabled=false. Returns the schedule
    as it was.

    Example: unschedule(name="triage") -> {"schedule": {"name": "triage", ...}}
    """
    return await engine.schedules.unschedule(args)
