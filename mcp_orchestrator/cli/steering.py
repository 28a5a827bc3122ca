"""Steering sub-agents from a shell: tell one something while it works, set or raise a run's budget."""

from __future__ import annotations

import argparse
import sys

from ..config import Settings
from ..errors import InvalidInput
from ..models import SendMessageInput, SendMessageResult, SetBudgetInput, SetBudgetResult, StatusInput
from ..runtime import Engine
from ..views import budget_words, paused_at_budget
from .command import Commands, add_command, with_query
from .options import ModelOptions, Option
from .render import print_json
from .runs import RUN

MESSAGE = ModelOptions(SendMessageInput, RUN, Option("text", "TEXT", note="'-' reads it from stdin."))
BUDGET = ModelOptions(
    SetBudgetInput,
    RUN,
    Option(
        "max_budget_usd",
        "--usd",
        help="US dollars the run and all its descendants may spend together; once spent, its sub-agents pause "
        "until it is raised.",
    ),
    Option("max_turns", "--turns", help="Model turns the run's own sub-agent may take, over all its attempts."),
)


def add_commands(commands: Commands) -> None:
    add_command(
        commands,
        "message",
        _message,
        MESSAGE,
        help="tell a sub-agent something while it works",
        description="Send a message to a sub-agent: a correction, a hint, a change of plan. It is kept until it "
        "reaches the agent: a running Claude Code agent gets it within seconds; other harnesses, and an agent "
        "that is waiting, paused or queued, get it in their prompt when they next start or resume (or when they "
        "read their messages). A message to a run that ends first is dropped. Prints when it will arrive.",
    )
    add_command(
        commands,
        "budget",
        _budget,
        BUDGET,
        help="set or raise what a run (and its descendants) may spend",
        description="Set a run's budget: --usd for the run and all its descendants together, --turns for its own "
        "sub-agent's model turns (a limit not given stays as it was). A tree that has spent its budget pauses "
        "(its runs wait, they do not fail); a higher budget lets every paused run of the tree that now has some "
        "left go on where it stopped. Prints the budget, what was spent and which runs went on.",
    )


def _message(args: argparse.Namespace, settings: Settings) -> int:
    text = sys.stdin.read() if args.text == "-" else args.text

    async def send(engine: Engine, query: SendMessageInput) -> SendMessageResult:
        # Refusals in a person's words (the service's name the tools a model would use instead).
        found = await engine.runs.status(
            StatusInput(run_id=query.run_id, journal_limit=0, log_lines=0, activity_limit=0)
        )
        run_id = found.run.run_id
        if found.process is None:
            raise InvalidInput(
                f"run {run_id} is not a sub-agent: messages go to sub-agents (started with 'mcp-orchestrator "
                "spawn', by an agent or by a schedule), whose processes the orchestrator runs"
            )
        if found.run.status.terminal:
            raise InvalidInput(
                f"run {run_id} has ended ({found.run.status}): nobody would read the message; "
                f"'mcp-orchestrator retry {run_id}' makes it live again"
            )
        return await engine.messages.send(query, source="cli")

    result = with_query(settings, MESSAGE, MESSAGE.build(args, text=text), send)
    if args.json:
        return print_json(result)
    message = result.message
    delivery = result.delivery.replace(" (read_messages)", "")  # the agent's tool: a name for models, not people
    print(f"message {message.message_id} queued for run {message.run_id}: it reaches the agent {delivery}")
    return 0


def _budget(args: argparse.Namespace, settings: Settings) -> int:
    if args.max_budget_usd is None and args.max_turns is None:
        raise InvalidInput("give --usd DOLLARS, --turns N or both: the run's new limits")

    async def set_budget(engine: Engine, query: SetBudgetInput) -> tuple[SetBudgetResult, bool]:
        result = await engine.budgets.set_budget(query)
        found = await engine.runs.status(
            StatusInput(run_id=query.run_id, journal_limit=0, log_lines=0, activity_limit=0)
        )
        return result, paused_at_budget(found.run, found.waits)

    result, still_paused = with_query(settings, BUDGET, BUDGET.build(args), set_budget)
    if args.json:
        return print_json(result)
    run = result.run
    print(f"run {run.run_id}: {budget_words(run)}")
    if result.resumed_run_ids:
        print(f"went on: {len(result.resumed_run_ids)} run(s) paused at a budget: {', '.join(result.resumed_run_ids)}")
    elif still_paused:
        print(f"run {run.run_id} stays paused: it is still over a budget (this one, or an ancestor's); raise that")
    else:
        print("no run of its tree was paused at a budget")
    return 0
