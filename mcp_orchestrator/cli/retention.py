"""Removing what ended long ago, on demand: gc (the supervisor does it hourly)."""

from __future__ import annotations

import argparse
from datetime import timedelta

from ..config import Settings
from ..errors import InvalidInput
from .command import Commands, add_command, with_engine
from .render import print_json, when

MAX_AGE_DAYS = 36_500  # a century: older than anything stored, and a date that exists


def add_commands(commands: Commands) -> None:
    gc = add_command(
        commands,
        "gc",
        _gc,
        help="remove runs, events and firings that ended long ago",
        description="Remove completed, failed and cancelled runs that ended more than --older-than days ago "
        "(with their steps, journal and waits; not while a descendant is live), events older than that and "
        "than every live run, and old schedule firings. The supervisor does this hourly with the config's "
        "[retention] days (default 30).",
    )
    # No input model: the age is the config's [retention] days, which the command checks itself.
    gc.add_argument("--older-than", type=float, metavar="DAYS", help="age in days (default: the config's)")


def _gc(args: argparse.Namespace, settings: Settings) -> int:
    from ..services.retention import collect

    days = settings.agents.retention_days if args.older_than is None else args.older_than
    if not 0 <= days <= MAX_AGE_DAYS:  # NaN fails too
        raise InvalidInput(f"--older-than {days:g}: give an age from 0 to {MAX_AGE_DAYS} days")
    removed = with_engine(settings, lambda engine: collect(engine, timedelta(days=days)))
    if args.json:
        return print_json(removed)
    print(
        f"removed {removed.runs} run(s), {removed.events} event(s) and {removed.firings} schedule firing(s) "
        f"older than {when(removed.before)}"
    )
    return 0
