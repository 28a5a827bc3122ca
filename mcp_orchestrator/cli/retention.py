"""Removing what ended long ago, on demand: gc (the supervisor does it hourly)."""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta

from ..config import Settings
from ..errors import InvalidInput
from ..models import CollectPreview, CollectResult
from .command import Commands, add_command, with_engine
from .render import print_json, print_table, when

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
        "[retention] days (default 30). It first shows what it would remove (the counts, runs counted up to "
        "10000, and the first and last three of the runs counted, by end) and asks; --yes removes without asking "
        "(needed where nobody can answer: a script, a pipe), --dry-run only shows; --json goes with either.",
    )
    # No input model: the age is the config's [retention] days, which the command checks itself.
    gc.add_argument("--older-than", type=float, metavar="DAYS", help="age in days (default: the config's)")
    gc.add_argument("-y", "--yes", action="store_true", help="remove without asking")
    gc.add_argument("-n", "--dry-run", action="store_true", help="only show what would be removed")


def _gc(args: argparse.Namespace, settings: Settings) -> int:
    from ..services.retention import collect, cutoff_for, preview

    days = settings.agents.retention_days if args.older_than is None else args.older_than
    if not 0 <= days <= MAX_AGE_DAYS:  # NaN fails too
        raise InvalidInput(f"--older-than {days:g}: give an age from 0 to {MAX_AGE_DAYS} days")
    if args.dry_run and args.yes:
        raise InvalidInput("give --dry-run (only show) or --yes (remove without asking), not both")
    if args.json and not (args.dry_run or args.yes):
        raise InvalidInput("--json goes with --dry-run (what would go, as JSON) or --yes (what went): it never asks")
    if args.yes:
        removed = with_engine(settings, lambda engine: collect(engine, cutoff_for(engine, timedelta(days=days))))
        return print_json(removed) if args.json else _print_removed(removed)
    shown = with_engine(settings, lambda engine: preview(engine, cutoff_for(engine, timedelta(days=days))))
    if args.dry_run:
        return print_json(shown) if args.json else _print_preview(shown)
    if not shown.runs and not shown.events and not shown.firings:
        print(f"nothing ended before {when(shown.before)}: nothing to remove")
        return 0
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise InvalidInput(
            f"gc would remove {_counts(shown)} and nobody is at a terminal to confirm it; pass --yes to remove "
            "them, or --dry-run to see what they are"
        )
    _print_preview(shown)
    if not _confirmed("remove them? [y/N] "):
        print("nothing removed")
        return 0
    # The cutoff shown, not a later one: nothing goes that ended after what the person saw.
    return _print_removed(with_engine(settings, lambda engine: collect(engine, shown.before)))


def _confirmed(prompt: str) -> bool:
    """Whether the person answered yes; end of input (Ctrl-D) is no."""
    try:
        answer = input(prompt)
    except EOFError:
        print()  # the terminal's line ends where Ctrl-D left it
        return False
    return answer.strip().lower() in ("y", "yes")


def _print_removed(removed: CollectResult) -> int:
    print(
        f"removed {removed.runs} run(s), {removed.events} event(s) and {removed.firings} schedule firing(s) "
        f"older than {when(removed.before)}"
    )
    return 0


def _counts(shown: CollectPreview) -> str:
    runs = f"{'more than ' if shown.runs_more else ''}{shown.runs} run(s)"
    return f"{runs}, {shown.events} event(s) and {shown.firings} schedule firing(s) older than {when(shown.before)}"


def _print_preview(shown: CollectPreview) -> int:
    """What gc would remove: the counts, then the first and last runs to go (of those counted)."""
    print(f"would remove {_counts(shown)}")
    if shown.oldest:
        print()
        print_table(
            ["RUN", "NAME", "STATUS", "ENDED"],
            [[r.run_id, r.name, r.status, when(r.ended_at)] for r in shown.oldest + shown.newest],
        )
        if shown.runs_more:
            print(
                f"(the first {len(shown.oldest)} by end, and the last {len(shown.newest)} of the first {shown.runs} "
                "counted; the ones after them go too)"
            )
        elif shown.runs > len(shown.oldest) + len(shown.newest):
            print(f"(the first {len(shown.oldest)} and the last {len(shown.newest)} of them, by end)")
    return 0
