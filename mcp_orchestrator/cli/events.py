"""Events from a shell: send one, list recent ones."""

from __future__ import annotations

import argparse

from ..config import Settings
from ..models import ListEventsInput, SendEventInput
from .command import Commands, add_command, with_engine
from .options import ModelOptions, Option
from .render import brief, print_json, print_table, when

SEND_EVENT = ModelOptions(SendEventInput, Option("name", "NAME"), "data", "id")
LIST_EVENTS = ModelOptions(ListEventsInput, "name", "limit", "cursor")


def add_commands(commands: Commands) -> None:
    add_command(
        commands,
        "send-event",
        _send_event,
        SEND_EVENT,
        help="send an event (wakes runs waiting for it)",
        description="Send an event. Runs waiting for its name (and whose match it meets) wake up; runs that "
        "wait for it later still get it. With --id, sending the same event twice stores it once.",
    )
    add_command(
        commands,
        "events",
        _events,
        LIST_EVENTS,
        help="list recent events, newest first",
        description="List recent events, newest first.",
    )


def _send_event(args: argparse.Namespace, settings: Settings) -> int:
    query = SEND_EVENT.build(args)
    result = with_engine(settings, lambda engine: engine.events.send_event(query, source="cli"))
    if args.json:
        return print_json(result)
    if result.deduplicated:
        print(f"event {result.event_id} was already stored; nothing new")
    else:
        woken = ", ".join(result.woken_run_ids) or "no waiting run"
        print(f"event {result.event_id} stored; woke {woken}")
    return 0


def _events(args: argparse.Namespace, settings: Settings) -> int:
    query = LIST_EVENTS.build(args)
    result = with_engine(settings, lambda engine: engine.events.list_events(query))
    if args.json:
        return print_json(result)
    print_table(
        ["EVENT", "NAME", "SOURCE", "RECEIVED", "DATA"],
        [[e.event_id, e.name, e.source, when(e.received_at), brief(e.data)] for e in result.events],
        empty="no events",
        next_cursor=result.next_cursor,
    )
    return 0
