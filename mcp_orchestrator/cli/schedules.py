"""Schedules from a shell: list them; add, pause, resume or remove one."""

from __future__ import annotations

import argparse

from ..config import Settings
from ..models import ListSchedulesInput, ScheduleInput, UnscheduleInput
from ..views import schedule_timing
from .command import Commands, add_command, with_engine
from .options import ModelOptions, Option
from .render import print_json, print_table, when

SCHEDULE = ModelOptions(
    ScheduleInput,
    Option("name", "NAME"),
    "cron",
    Option("every_s", "--every"),
    "at",
    "timezone",
    Option(
        "action",
        help='What each firing does: {"type": "spawn_subagent", "prompt": ...} with any of the fields '
        '\'mcp-orchestrator spawn\' takes (agent, cwd, timeout_s, labels ...), or {"type": "send_event", '
        '"name": ..., "data": ...}.',
    ),
    "overlap",
    "catch_up",
    Option("enabled", "--paused", help="Create it paused: nothing fires until 'schedules resume'."),
)
NAMED = ModelOptions(UnscheduleInput, Option("name", "NAME"))


def add_commands(commands: Commands) -> None:
    schedules = add_command(
        commands,
        "schedules",
        _list,
        help="list schedules; add, pause, resume or remove one",
        description="Without a subcommand, list schedules with their last firing and next due times. "
        "The lease holder (any running server, or 'mcp-orchestrator supervise') fires them.",
    )
    steer = schedules.add_subparsers(dest="schedule_command", metavar="SUBCOMMAND")
    add_command(
        steer,
        "add",
        _add,
        SCHEDULE,
        help="create or update a schedule",
        description="Create or update (by name) a schedule. Exactly one of --cron, --every, --at.",
    )
    for verb, handler, text in (
        ("pause", _pause_or_resume, "stop firing until resumed"),
        ("resume", _pause_or_resume, "fire again from the next due time"),
        ("remove", _remove, "remove it and its firing history"),
    ):
        add_command(steer, verb, handler, NAMED, help=text, description=f"{verb.title()}: {text}.")


def _list(args: argparse.Namespace, settings: Settings) -> int:
    listed = with_engine(settings, lambda engine: engine.schedules.list(ListSchedulesInput()))
    if args.json:
        return print_json(listed)
    print_table(
        ["SCHEDULE", "WHEN", "ACTION", "STATE", "LAST FIRED", "OUTCOME", "NEXT DUE"],
        [
            [
                s.name,
                schedule_timing(s, terminal=True),
                s.action.type,
                "enabled" if s.enabled else "paused",
                when(s.last.fired_at) if s.last else "",
                f"{s.last.outcome} {s.last.run_id or s.last.event_id or ''}".strip() if s.last else "",
                when(s.upcoming[0]) if s.upcoming else "",
            ]
            for s in listed.schedules
        ],
        empty="no schedules",
    )
    return 0


def _add(args: argparse.Namespace, settings: Settings) -> int:
    query = SCHEDULE.build(args)
    added = with_engine(settings, lambda engine: engine.schedules.schedule(query))
    if args.json:
        return print_json(added)
    due = ", ".join(when(due) for due in added.next_due) or "nothing (paused or done)"
    print(f"{'created' if added.created else 'updated'} schedule {query.name}; next due: {due}")
    return 0


def _pause_or_resume(args: argparse.Namespace, settings: Settings) -> int:
    name, resume = NAMED.build(args).name, args.schedule_command == "resume"
    changed = with_engine(settings, lambda engine: engine.schedules.set_enabled(name, resume))
    if args.json:
        return print_json(changed)
    print(f"schedule {name} {'resumed' if changed.enabled else 'paused'}")
    return 0


def _remove(args: argparse.Namespace, settings: Settings) -> int:
    query = NAMED.build(args)
    removed = with_engine(settings, lambda engine: engine.schedules.unschedule(query))
    if args.json:
        return print_json(removed)
    print(f"removed schedule {query.name}")
    return 0
