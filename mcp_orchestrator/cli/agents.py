"""Sub-agents from a shell: spawn one, read its log, see the profiles and limits."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

from ..config import Settings
from ..errors import InvalidInput
from ..models import ACTIVE_AGENT_STATES, SpawnSubagentInput, StatusInput
from ..runtime import Engine, open_engine
from ..views import ACTIVITY_PAGE, activity_line
from .command import Commands, add_command, with_query
from .options import ModelOptions, Option
from .render import print_json, print_table
from .runs import RUN

SPAWN = ModelOptions(
    SpawnSubagentInput,
    Option("prompt", "PROMPT", note="'-' reads it from stdin."),
    "agent",
    "name",
    "key",
    Option("parent_run_id", "--parent", run=True),
    Option("cwd", help="Directory the sub-agent works in (default: the current directory)."),
    Option("timeout_s", "--timeout"),
    "max_attempts",
    Option("labels", "--label"),
    "concurrency_key",
    "concurrency_limit",
    "worktree",
    Option(
        "command",
        rest=True,
        help="The argv the 'command' profile runs, exactly as given (no shell; braces such as {prompt} are not "
        "placeholders here); the prompt arrives on its stdin. Implies --agent command.",
        note="Last on the command line: every argument after it is the argv.",
    ),
)
LOG = ModelOptions(StatusInput, RUN)
RESUME = ModelOptions(StatusInput, RUN)
ACTIVITY_HOLD_S = 5.0  # --activity --follow prints a tool call once it has finished, or once it has run this long
ACTIVITY_GRACE_S = 40.0  # after the run ended, how long --follow waits for its process's last entries


def add_commands(commands: Commands) -> None:
    add_command(
        commands,
        "spawn",
        _spawn,
        SPAWN,
        help="start a background sub-agent on a task",
        description="Queue a background sub-agent (a child run); the supervisor (any running server, or "
        "'mcp-orchestrator supervise') starts its process within the limits. Prints the new run.",
    )
    logs = add_command(
        commands,
        "logs",
        _logs,
        LOG,
        help="print a sub-agent's log or activity (--follow to keep printing)",
        description="Print the log of a sub-agent's process: stdout, or stderr with --stderr (which also "
        "marks where each attempt started); or with --activity its activity timeline, one line an entry: the "
        "time, the attempt, the kind (turn, text, tool, permission, pause, budget, message, result, silent), "
        "what happened, and for a tool call whether it failed and how long it took. With --follow, keep "
        "printing until the run ends (a tool call is printed once it has finished, or after a few seconds).",
        json=False,
    )
    logs.add_argument("--stderr", action="store_true", help="the stderr log instead of stdout")
    logs.add_argument(
        "--activity", action="store_true", help="the activity timeline (what the agent did) instead of a log file"
    )
    logs.add_argument("--tail", type=int, help="only the last N lines (with --activity: entries)")
    logs.add_argument(
        "--json", action="store_true", help="with --activity: one JSON object an entry (JSON lines), for scripts"
    )
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until the run ends")
    logs.add_argument(
        "--raw",
        action="store_true",
        help="print the log's bytes as they are, terminal escape sequences included (by default control "
        "characters but newline and tab are shown as \\u escapes such as \\u001b, so a log cannot clear "
        "the screen, set the title or write the clipboard)",
    )
    add_command(
        commands,
        "resume",
        _resume,
        RESUME,
        help="resume a sub-agent paused at a usage limit now",
        description="End a sub-agent's pause at a usage limit now (when you know the limit is over, say after "
        "switching plans), and let every sub-agent its account held start again. Prints the run.",
    )
    add_command(
        commands,
        "agents",
        _agents,
        help="list the agent profiles and limits",
        description="List the agent profiles (built in, and from the config file) and the sub-agent limits.",
    )


def _spawn(args: argparse.Namespace, settings: Settings) -> int:
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    agent = args.agent or ("command" if args.command else None)  # an argv is what the 'command' profile runs
    query = SPAWN.build(args, prompt=prompt, cwd=args.cwd or os.getcwd(), agent=agent)
    result = with_query(settings, SPAWN, query, lambda engine, query: engine.subagents.spawn(query))
    if args.json:
        return print_json(result)
    verb = "queued" if result.created else "already exists:"
    print(f"{verb} {result.run.run_id} ({result.process.profile}, {result.run.status}) in {result.process.cwd}")
    return 0


def _resume(args: argparse.Namespace, settings: Settings) -> int:
    query = RESUME.build(args)
    run = with_query(settings, RESUME, query, lambda engine, query: engine.subagents.resume_paused(query.run_id))
    if args.json:
        return print_json(run)
    print(f"resumed {run.run_id} ({run.status}): it starts again within a moment")
    return 0


def _logs(args: argparse.Namespace, settings: Settings) -> int:
    """The log as it is, then (with --follow) what is added until the run ends."""
    from ..logs import log_path, tail_lines

    if args.tail is not None and args.tail < 0:
        raise InvalidInput(f"--tail {args.tail}: give a number of lines, 0 or more")
    if args.activity:
        return _activity(args, settings)
    if args.json:
        raise InvalidInput("--json goes with --activity (entries are data); a log file is printed as it is")
    built = LOG.build(args, journal_limit=0, log_lines=0)
    found = with_query(settings, LOG, built, lambda engine, query: engine.runs.status(query))
    query = built.model_copy(update={"run_id": found.run.run_id})  # resolved once: --follow reads it again
    if found.process is None or found.process.log_dir is None:
        what = "is not a sub-agent" if found.process is None else "has no log yet (its process has not started)"
        if found.process is None or not args.follow:
            raise InvalidInput(f"run {found.run.run_id} {what}")
    log_dir = Path(found.process.log_dir) if found.process.log_dir else settings.runs_dir / found.run.run_id
    path = log_path(log_dir, "stderr" if args.stderr else "stdout")
    if args.tail is not None:
        _write_log(("\n".join(tail_lines(path, args.tail)) + "\n").encode(), raw=args.raw)
        position = path.stat().st_size if path.exists() else 0
    else:
        position = _copy_from(path, 0, raw=args.raw)
    if not args.follow:
        return 0

    async def follow() -> None:
        nonlocal position
        async with open_engine(settings) as engine:
            while True:
                ended = (await engine.runs.status(query)).run.status.terminal
                position = _copy_from(path, position, raw=args.raw)
                if ended:
                    return
                await engine.store.wait_for_change(0.5)

    asyncio.run(follow())
    return 0


def _activity(args: argparse.Namespace, settings: Settings) -> int:
    """The activity timeline as it is, then (with --follow) each entry as it comes, until the run ends."""
    if args.stderr or args.raw:
        raise InvalidInput("--activity prints the activity timeline; --stderr and --raw are for the log files")
    built = LOG.build(args, journal_limit=0, log_lines=0, activity_limit=0)

    async def show() -> None:
        async with open_engine(settings) as engine:
            query = await LOG.resolved(built, engine.runs.resolve)
            found = await engine.runs.status(query)
            if found.process is None:
                raise InvalidInput(f"run {found.run.run_id} is not a sub-agent: only sub-agents have activity")
            entries = await engine.runs.activity(query.run_id, ACTIVITY_PAGE)
            if args.tail is None and found.process.activity_dropped and not args.json:
                dropped, kept = found.process.activity_dropped, engine.subagents.config.activity_max
                print(f"({dropped} earlier entries were dropped: the store keeps a run's latest {kept})")
            shown = entries if args.tail is None else entries[-args.tail :] if args.tail else []
            if not args.follow:
                for entry in shown:
                    print(entry.model_dump_json() if args.json else activity_line(entry, terminal=True))
                if not entries and not args.json:
                    print("no activity yet")
                return
            after = shown[0].seq - 1 if shown else entries[-1].seq if entries else -1
            await _follow_activity(engine, query, after, as_json=args.json)

    asyncio.run(show())
    return 0


async def _follow_activity(engine: Engine, query: StatusInput, after: int, *, as_json: bool = False) -> None:
    """Print the run's entries after ``after`` in order as they come; a tool call still running holds the
    ones behind it until it finishes (its entry is updated in place) or ACTIVITY_HOLD_S pass. Ends once the
    run has ended and its process has exited (or ACTIVITY_GRACE_S after the run ended), all printed."""
    held: dict[int, float] = {}  # a running tool call's entry -> when it was first seen
    ended_at: float | None = None
    while True:
        found = await engine.runs.status(query)  # before the entries: nothing written before the end is missed
        now = time.monotonic()
        if found.run.status.terminal and ended_at is None:
            ended_at = now
        gone = found.process is None or found.process.state not in ACTIVE_AGENT_STATES
        done = ended_at is not None and (gone or now - ended_at > ACTIVITY_GRACE_S)
        for entry in await engine.runs.activity(query.run_id, ACTIVITY_PAGE, after=after):
            running = entry.kind == "tool" and entry.failed is None
            if running and not done and now - held.setdefault(entry.seq, now) < ACTIVITY_HOLD_S:
                break
            print(entry.model_dump_json() if as_json else activity_line(entry, terminal=True))
            held.pop(entry.seq, None)
            after = entry.seq
        sys.stdout.flush()
        if done:
            return
        await engine.store.wait_for_change(0.5)


def _copy_from(path: Path, position: int, raw: bool = False) -> int:
    """Print what the file holds past ``position``; returns the new position."""
    try:
        with path.open("rb") as file:
            file.seek(position)
            data = file.read()
    except FileNotFoundError:
        return position
    _write_log(data, raw)
    return position + len(data)


def _write_log(data: bytes, raw: bool) -> None:
    """Log bytes as text through ``printable`` (sys.stdout), or with --raw as they are."""
    sys.stdout.flush()
    if raw:
        sys.stdout.buffer.write(data)
    else:
        sys.stdout.write(data.decode(errors="replace"))
    sys.stdout.flush()


def _agents(args: argparse.Namespace, settings: Settings) -> int:
    config = settings.agents
    if args.json:
        return print_json(config)
    source = settings.config_file or "none (built-in profiles only)"
    print(f"config file: {source}")
    per_node = "" if config.node_max_concurrent is None else f", {config.node_max_concurrent} per node"
    print(f"default agent: {config.default_agent}; at most {config.max_concurrent} sub-agents at once{per_node}")
    print(f"this node: {settings.node}\n")
    print_table(
        ["PROFILE", "COMMAND", "RESUME", "TIMEOUT", "ATTEMPTS", "LIMIT"],
        [
            [
                name if profile.enabled else f"{name} (disabled)",
                " ".join([*profile.command, *profile.extra_args]) or "(command given at spawn)",
                "yes" if profile.resume else "",
                f"{profile.timeout_s:g}s" if profile.timeout_s else "",
                profile.max_attempts,
                profile.max_concurrent or "",
            ]
            for name, profile in sorted(config.profiles.items())
        ],
    )
    return 0
