"""Seeing and steering runs: runs, status, cancel, retry."""

from __future__ import annotations

import argparse

from ..config import Settings
from ..models import (
    Agent,
    CancelRunInput,
    ListRunsInput,
    Message,
    RetryRunInput,
    Run,
    StatusInput,
    StatusResult,
    Wait,
)
from ..runtime import Engine
from ..views import activity_line, budget_words, paused_at_budget, process_facts, spent, usage_words, whole
from .command import Commands, add_command, with_query
from .options import ModelOptions, Option
from .render import brief, on_terminal, print_fields, print_json, print_table, when

RUN = Option(
    "run_id",
    "RUN",
    help="The run: its id, its key, or the start of its id (at least 4 characters, any case).",
    run=True,
)
LIST_RUNS = ModelOptions(
    ListRunsInput,
    "status",
    "name",
    Option(
        "parent_run_id", "--parent", help="Only children of this run (its id, key or the start of its id).", run=True
    ),
    "label",
    Option("workspace", note="'.' for the current one."),
    "since",
    "limit",
    "cursor",
)
STATUS = ModelOptions(
    StatusInput,
    RUN,
    Option("journal_limit", "--journal", default=20),
    Option("activity_limit", "--activity", default=10),
)
CANCEL = ModelOptions(CancelRunInput, RUN, "reason")
RETRY = ModelOptions(RetryRunInput, RUN, "reason")


def add_commands(commands: Commands) -> None:
    add_command(
        commands,
        "runs",
        _runs,
        LIST_RUNS,
        help="list runs, newest first",
        description="List runs, newest first, with filters.",
    )
    add_command(
        commands,
        "status",
        _status,
        STATUS,
        help="show one run: steps, children, cost, activity, journal",
        description="Show one run with its steps, children and latest journal entries, what it and its "
        "descendants spent against its budget, and for a sub-agent its process, latest activity and the messages "
        "queued for it.",
    )
    add_command(
        commands,
        "cancel",
        _cancel,
        CANCEL,
        help="cancel a run and its live descendants",
        description="Cancel a run and every live run under it. Runs that already ended stay as they are.",
    )
    add_command(
        commands,
        "retry",
        _retry,
        RETRY,
        help="make a failed or cancelled run live again",
        description="Retry a failed or cancelled run from its last completed step: completed steps stay, steps "
        "that failed for good get new attempts, unanswered waits start over; a sub-agent is started again.",
    )


def _runs(args: argparse.Namespace, settings: Settings) -> int:
    query = LIST_RUNS.build(args, workspace=settings.workspace if args.workspace == "." else args.workspace)
    result = with_query(settings, LIST_RUNS, query, lambda engine, query: engine.runs.list_runs(query))
    if args.json:
        return print_json(result)
    tree = grouped(result.runs)
    print_table(
        ["RUN", "NAME", "STATUS", "COST", "CREATED", "UPDATED", *_parent_column(), "WORKSPACE"],
        [
            [
                _tree_cell(depth, r.run_id),
                r.name,
                r.status,
                spent(r.tree_usage),
                when(r.created_at),
                when(r.updated_at),
                *_parent_cell(r),
                r.workspace or "",
            ]
            for depth, r in tree
        ],
        next_cursor=result.next_cursor,
        drop=("WORKSPACE", "UPDATED", "COST"),
    )
    return 0


def _tree_cell(depth: int, run_id: str) -> str:
    """A run's id in a tree: indented under its parent on a terminal; piped, the id alone (a script's
    first field is always the id), the rows still in the tree's order."""
    return "  " * depth + ("└ " if depth else "") + run_id if on_terminal() else run_id


def _parent_column() -> list[str]:
    """Piped, a table of runs says each one's parent in a column, where a terminal draws the tree."""
    return [] if on_terminal() else ["PARENT"]


def _parent_cell(run: Run) -> list[str]:
    return [] if on_terminal() else [run.parent_run_id or "-"]


def grouped(runs: list[Run]) -> list[tuple[int, Run]]:
    """The page's runs as (depth, run): each after its parent when the page holds the parent (children
    oldest first, as they were started), else where it falls, newest first."""
    on_page = {run.run_id for run in runs}
    children: dict[str, list[Run]] = {}
    for run in runs:
        if run.parent_run_id in on_page:
            children.setdefault(run.parent_run_id, []).append(run)
    tree: list[tuple[int, Run]] = []

    def add(run: Run, depth: int) -> None:
        tree.append((depth, run))
        for child in reversed(children.get(run.run_id, [])):
            add(child, depth + 1)

    for run in runs:
        if run.parent_run_id not in on_page:
            add(run, 0)
    return tree


def _status(args: argparse.Namespace, settings: Settings) -> int:
    async def status_and_tree(
        engine: Engine, query: StatusInput
    ) -> tuple[StatusResult, list[tuple[int, Run]], float | None]:
        result = await engine.runs.status(query)
        silent = engine.subagents.silent_for(result.process, engine.now()) if result.process else None
        return result, [] if args.json else await engine.runs.descendants(result.children), silent

    result, tree, silent = with_query(settings, STATUS, STATUS.build(args), status_and_tree)
    if args.json:
        return print_json(result)
    _print_run(result.run, paused_at_budget(result.run, result.waits), sub_agent=result.process is not None)
    if result.process is not None:
        _print_process(result.process, result.log_tail, silent)
        _print_activity(result)
        _print_messages(result.messages)
    print()
    print_table(
        ["STEP", "STATUS", "ATTEMPT", "ENDED", "OUTPUT / ERROR"],
        [
            [s.step, s.status, s.attempt, when(s.ended_at), brief(s.error if s.error is not None else s.output)]
            for s in result.steps
        ],
        empty="no steps yet",
    )
    if result.waits:
        print()
        print_table(
            ["WAIT", "KIND", "FOR", "MATCH", "UNTIL"],
            [
                [w.step, w.kind, _waits_for(w, result.run), brief(w.match) if w.match else "", when(w.until)]
                for w in result.waits
            ],
        )
    if tree:
        print()
        print_table(
            ["CHILDREN", "NAME", "STATUS", "COST", *_parent_column(), "ENDED"],
            [
                [_tree_cell(depth, c.run_id), c.name, c.status, spent(c.tree_usage), *_parent_cell(c), when(c.ended_at)]
                for depth, c in tree
            ],
        )
    if result.journal:
        print()
        print_table(
            ["SEQ", "AT", "EVENT", "STEP", "DETAIL"],
            [[j.seq, when(j.at), j.kind, j.step or "", brief(j.detail or "")] for j in result.journal],
        )
    return 0


def _print_run(run: Run, paused: bool = False, *, sub_agent: bool = False) -> None:
    """The run's fields; a sub-agent's input shown as its prompt (its task), any other run's as it is."""
    budget = budget_words(run)
    prompt = run.input.get("prompt") if sub_agent and isinstance(run.input, dict) else None
    tree = run.tree_usage is not None and run.tree_usage != run.usage
    if paused:
        budget += f" (paused: raise it with 'mcp-orchestrator budget {run.run_id} --usd DOLLARS')"
    print_fields(
        [
            ("run", run.run_id),
            ("name", run.name),
            ("status", run.status),
            ("key", run.key or ""),
            ("parent", run.parent_run_id or ""),
            ("workspace", run.workspace or ""),
            ("labels", ", ".join(f"{k}={v}" for k, v in run.labels.items())),
            ("created", when(run.created_at)),
            ("updated", when(run.updated_at)),
            ("ended", when(run.ended_at)),
            ("deadline", when(run.deadline_at)),
            ("prompt", brief(" ".join(prompt.split()), 200) if isinstance(prompt, str) else ""),
            ("input", brief(run.input, 200) if run.input is not None and not isinstance(prompt, str) else ""),
            ("cost", spent(run.tree_usage or run.usage) + (" (with its descendants)" if tree else "")),
            ("output", brief(run.output) if run.output is not None else ""),
            ("error", whole(run.error) if run.error is not None else ""),  # whole: it says why
            ("usage", usage_words(run.usage)),
            ("tree", usage_words(run.tree_usage) + " (with its descendants)" if tree else ""),
            ("budget", budget),
        ]
    )


def _waits_for(wait: Wait, run: Run) -> str:
    if wait.kind == "budget":
        return f"a higher budget ('mcp-orchestrator budget {run.run_id} --usd DOLLARS')"
    return " | ".join(wait.watched)


def _print_process(process: Agent, log_tail: dict[str, list[str]], silent_s: float | None = None) -> None:
    print_fields(
        [
            ("process", ", ".join(process_facts(process, terminal=True, silent_s=silent_s))),
            ("cwd", process.cwd),
            ("worktree", f"{process.worktree} (branch {process.branch})" if process.worktree else ""),
        ]
    )
    for stream, lines in log_tail.items():
        if lines:
            print(f"\n{stream} (last {len(lines)} lines; 'mcp-orchestrator logs {process.run_id}'):")
            for line in lines:
                print(f"  {line}")


def _print_activity(result: StatusResult) -> None:
    """The sub-agent's latest activity, oldest first."""
    if not result.activity:
        return
    run_id = result.run.run_id
    print(f"\nactivity (latest {len(result.activity)}; 'mcp-orchestrator logs {run_id} --activity' for all):")
    for entry in result.activity:
        print(f"  {activity_line(entry, terminal=True)}")


def _print_messages(messages: list[Message]) -> None:
    if messages:
        print(f"\nmessages queued for it ({len(messages)}, not delivered yet):")
        for message in messages:
            print(f"  {when(message.queued_at)}  ({message.source})  {brief(' '.join(message.text.split()), 200)}")


def _cancel(args: argparse.Namespace, settings: Settings) -> int:
    result = with_query(settings, CANCEL, CANCEL.build(args), lambda engine, query: engine.runs.cancel_run(query))
    if args.json:
        return print_json(result)
    if result.cancelled_run_ids:
        print(f"cancelled {len(result.cancelled_run_ids)} run(s): {', '.join(result.cancelled_run_ids)}")
    else:
        print(f"nothing to cancel: run {result.run.run_id} is {result.run.status} and has no live descendants")
    return 0


def _retry(args: argparse.Namespace, settings: Settings) -> int:
    result = with_query(settings, RETRY, RETRY.build(args), lambda engine, query: engine.runs.retry_run(query))
    if args.json:
        return print_json(result)
    reset = f"; steps starting over: {', '.join(result.reset_steps)}" if result.reset_steps else ""
    print(f"run {result.run.run_id} is {result.run.status} again{reset}")
    return 0
