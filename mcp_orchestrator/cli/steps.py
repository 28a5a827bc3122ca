"""Durable steps from a shell: start, checkpoint, finish, the MCP tools' runs for scripts without an agent.

A cron job or a Makefile checkpoints its work the way an agent does, so that when it is killed
(a reboot, the OOM killer, ``kill -9``) running it again skips what was done:

    RUN=$(mcp-orchestrator start nightly-backup --key "backup-$(date +%F)")
    mcp-orchestrator checkpoint "$RUN" dump --begin --exit-code   # 0: do it now, 3: done before
    pg_dump ... && mcp-orchestrator checkpoint "$RUN" dump --output '{"bytes": 1234}'

``start`` prints the run's id (the same run again for the same ``--key``); ``checkpoint --begin``
asks "was this step done?" before its side effect, and a completed step's stored output is printed
on stdout; ``finish`` ends the run. They call the same services as the MCP tools ``start_run``,
``checkpoint`` and ``finish_run``, so a run started here is one an agent can resume, and the other way
round. Notes for people go to stderr, so ``$(...)`` captures only ids and outputs.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..config import Settings
from ..models import (
    CheckpointInput,
    CheckpointResult,
    FinishRunInput,
    RunStatus,
    StartRunInput,
    StepStatus,
)
from .command import Commands, add_command, with_query
from .options import ModelOptions, Option
from .render import print_json
from .runs import RUN

ALREADY_DONE = 3
"""``checkpoint --exit-code``'s exit status for a step completed before: the script skips its work."""

START = ModelOptions(
    StartRunInput,
    Option("name", "NAME"),
    "key",
    "input",
    Option("labels", "--label"),
    Option("parent_run_id", "--parent", run=True),
    Option("timeout_s", "--timeout"),
    "retry",
)
CHECKPOINT = ModelOptions(
    CheckpointInput,
    RUN,
    Option("step", "STEP"),
    "output",
    "begin",
    "error",
    Option("retryable", "--no-retry", help="With --error: the step fails for good now, with no further attempt."),
)
FINISH = ModelOptions(FinishRunInput, RUN, "output", "error")


def add_commands(commands: Commands) -> None:
    add_command(
        commands,
        "start",
        _start,
        START,
        help="start a durable run from a script (prints its id)",
        description="Start a durable run and print its id, for a script that checkpoints its steps (see "
        "'checkpoint'). With --key, starting again (after a crash, or the next time cron runs it) prints the "
        "same run, whose completed steps are not to be redone.",
    )
    checkpoint = add_command(
        commands,
        "checkpoint",
        _checkpoint,
        CHECKPOINT,
        help="record a step of a run (--begin: was it done already?)",
        description="Record a step of a run: completed (with --output, or none), a failed attempt (--error), "
        "or with --begin, before the step's side effect, the start of an attempt. A step completed before stays "
        "as it was: its stored output is printed on stdout (a JSON string as it is, like jq -r; any other value "
        "as JSON), and with --exit-code the command exits 3 instead of 0, so a script tells 'do the work' (0) from "
        "'skip it' (3) and from an error (1).",
    )
    checkpoint.add_argument(
        "--exit-code",
        action="store_true",
        help=f"exit {ALREADY_DONE} (not 0) when the step was completed before (its stored output is printed)",
    )
    add_command(
        commands,
        "finish",
        _finish,
        FINISH,
        help="finish a run: completed (--output) or failed (--error)",
        description="Finish a run: completed, with --output as its result (or none), or failed with --error "
        "saying why. Finishing it again the same way changes nothing; a run that ended otherwise is an error.",
    )


def _start(args: argparse.Namespace, settings: Settings) -> int:
    result = with_query(settings, START, START.build(args), lambda engine, query: engine.runs.start_run(query))
    if args.json:
        return print_json(result)
    run = result.run
    if not result.created and run.status in (RunStatus.FAILED, RunStatus.CANCELLED):
        _note(
            f"run {run.run_id} (key {run.key}) is {run.status}: its steps take no checkpoints; "
            f"'mcp-orchestrator retry {run.run_id}' makes it live again from its last completed step"
        )
    elif run.status == RunStatus.COMPLETED and not result.created:
        _note(f"run {run.run_id} (key {run.key}) has completed: its steps answer from the store, nothing is redone")
    elif not result.created:
        done = sum(step.status == StepStatus.COMPLETED for step in result.steps)
        _note(f"run {run.run_id} (key {run.key}) is {run.status}, {done} step(s) completed: it goes on from there")
    print(run.run_id)
    return 0


def _checkpoint(args: argparse.Namespace, settings: Settings) -> int:
    query = CHECKPOINT.build(args)
    result = with_query(settings, CHECKPOINT, query, lambda engine, query: engine.runs.checkpoint(query))
    done = result.replayed and result.step.status == StepStatus.COMPLETED
    if args.json:
        print_json(result)
    else:
        _tell(query, result)
    return ALREADY_DONE if done and args.exit_code else 0


def _tell(query: CheckpointInput, result: CheckpointResult) -> None:
    """What the script may read on stdout (a completed step's output), and what a person should know."""
    step = result.step
    if result.replayed and step.status == StepStatus.COMPLETED:
        _note(f"step {step.step!r} was completed before (attempt {step.attempt}); its stored output stands")
        if step.output is not None:
            print(_shown(step.output))
    elif result.replayed:
        _note(f"step {step.step!r} failed for good after {step.attempt} attempt(s)")
    elif query.begin and result.previous_outcome == "unknown":
        _note(
            f"warning: attempt {step.attempt - 1} of step {step.step!r} started and never finished (killed?): "
            "check whether its effect already happened before repeating it"
        )
    elif query.error is not None:
        when = f" at {result.retry_at:%Y-%m-%dT%H:%M:%SZ}" if result.retry_at else ""
        after = f"another attempt may start{when}" if result.retry else "it failed for good"
        _note(f"attempt {step.attempt} of step {step.step!r} failed; {after}")


def _finish(args: argparse.Namespace, settings: Settings) -> int:
    result = with_query(settings, FINISH, FINISH.build(args), lambda engine, query: engine.runs.finish_run(query))
    if args.json:
        return print_json(result)
    again = " (already; nothing changed)" if result.replayed else ""
    print(f"run {result.run.run_id} {result.run.status}{again}")
    return 0


def _shown(output: Any) -> str:
    """A stored output as a script reads it: a string as it is, any other JSON value as JSON."""
    return output if isinstance(output, str) else json.dumps(output, ensure_ascii=False)


def _note(text: str) -> None:
    print(text, file=sys.stderr)
