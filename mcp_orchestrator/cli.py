"""The terminal face: serve the MCP server, and see and steer runs from a shell.

Every command parses its arguments, calls the engine and renders: a table for people, JSON with
``--json`` for scripts. Errors print ``code: message`` on stderr and exit 1 (2 for usage errors).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import re
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any, TextIO

from pydantic import BaseModel, ValidationError

from . import __version__
from .config import (
    ENV_CONFIG,
    ENV_DB,
    ENV_MAX_PAYLOAD,
    ENV_NODE,
    ENV_SYNCHRONOUS,
    ENV_WEBHOOK_SECRET,
    Settings,
    default_config_path,
    default_db_path,
)
from .errors import ConfigError, InternalError, InvalidInput, OrchestratorError, invalid_input_from
from .models import (
    Agent,
    CancelRunInput,
    ListEventsInput,
    ListRunsInput,
    ListSchedulesInput,
    RetryRunInput,
    Run,
    ScheduleInput,
    SendEventInput,
    SpawnSubagentInput,
    StatusInput,
    StatusResult,
    UnscheduleInput,
)
from .runtime import Engine, open_engine
from .views import brief, process_facts, schedule_timing, when

DESCRIPTION = f"""\
Durable orchestration for coding agents, served over MCP.

Runs, their checkpointed steps and their journal live in one store that every mcp-orchestrator
process sharing it uses: MCP servers started by Claude Code or OpenCode, the HTTP server, and these
commands. The store is a SQLite file (one machine), or a PostgreSQL database given as a
postgresql://user:password@host:port/database URL (several machines, each a node).

environment:
  {ENV_DB}   store location (default: {default_db_path()})
  {ENV_MAX_PAYLOAD}   largest JSON input/output/error, bytes (default 1048576)
  {ENV_SYNCHRONOUS}   full (default: survives power loss) or normal
  {ENV_WEBHOOK_SECRET}   secret for HMAC-signed POST /events (GitHub webhooks)
  {ENV_CONFIG}   agent profiles and limits (default: {default_config_path()})
  {ENV_NODE}   this node's name among those sharing a PostgreSQL store (default: the host name)
  CLAUDE_PROJECT_DIR   workspace recorded on new runs (default: the current directory)
"""


def main(argv: Sequence[str] | None = None) -> int:
    with _printable_std_streams():
        parser = _parser()
        args = parser.parse_args(argv)
        if not getattr(args, "command", None):
            parser.print_help()
            return 2
        try:
            settings = Settings.load(db=args.db, config=args.config)
            return args.handler(args, settings)
        except KeyboardInterrupt:
            return 130
        except BrokenPipeError:  # the reader went away (| head): stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
        except Exception as exc:  # every failure becomes `code: message`, never a traceback
            error = _as_orchestrator_error(exc, args.command)
            print(f"{error.code}: {error.message}", file=sys.stderr)
            return 1


def _as_orchestrator_error(exc: Exception, command: str) -> OrchestratorError:
    """The one mapping of what a command raised to the error it prints."""
    if isinstance(exc, OrchestratorError):
        return exc
    if isinstance(exc, ValidationError):
        return invalid_input_from(exc, "options")
    if isinstance(exc, ValueError | OverflowError | RecursionError):
        return InvalidInput(f"{exc}; check the values given ('mcp-orchestrator {command} --help' describes them)")
    if isinstance(exc, OSError):  # a file of the state directory, a log, the store's directory ...
        where = f" ({exc.filename})" if exc.filename else ""
        return ConfigError(f"{command}: {exc.strerror or exc}{where}; check that path and its permissions")
    return InternalError(
        f"{command} failed with {type(exc).__name__}: {exc}; this is a bug, please report it with the command line"
    )


# Stored text (run names, outputs, errors, event data, logs) reaches a terminal: every control
# character but newline and tab, C1 controls, bidirectional overrides and lone surrogates are
# shown as \u escapes (ESC as \u001b), so none can clear the screen, set the window title, write the clipboard
# (OSC 52) or reorder what is shown. The escape is valid inside JSON strings, so --json stays JSON.
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def printable(text: str) -> str:
    """``text`` safe for a terminal: each control character made visible as a ``\\u`` escape (ESC as ``\\u001b``)."""
    return _UNPRINTABLE.sub(lambda found: f"\\u{ord(found.group()):04x}", text)


class _PrintableStream:
    """A text stream that passes everything written through ``printable``."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(printable(text))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def _printable_std_streams() -> Iterator[None]:
    """Every print of every command goes through ``printable``: the one place output is made safe."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _PrintableStream(sys.stdout), _PrintableStream(sys.stderr)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mcp-orchestrator", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"mcp-orchestrator {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", metavar="PATH|URL", help=f"SQLite file or postgresql:// URL (overrides {ENV_DB})")
    common.add_argument("--config", metavar="FILE", help=f"agent profiles and limits, TOML (overrides {ENV_CONFIG})")
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--json", action="store_true", help="print JSON for scripts instead of a table")
    paging = argparse.ArgumentParser(add_help=False)
    paging.add_argument("--limit", type=int, default=20, help="page size (default 20, at most 200)")
    paging.add_argument("--cursor", help="the next_cursor printed by the previous page")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        parents=[common],
        help="run the MCP server (stdio, or streamable HTTP with --http)",
        description="Run the MCP server. Without --http it speaks MCP over stdin/stdout, as Claude Code "
        "and OpenCode start it. With --http it serves streamable HTTP at http://HOST:PORT/mcp and a "
        "health check at /healthz; port 0 picks a free port, and the address is printed on stderr.",
    )
    serve.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="serve over HTTP on this address (default host 127.0.0.1; e.g. --http 8765 or --http 127.0.0.1:8765)",
    )
    serve.add_argument(
        "--no-token",
        action="store_true",
        help="with --http on a loopback address: accept requests without the bearer token (for local "
        "tools that cannot send one, such as the MCP conformance suite); anyone on this machine can then call it",
    )
    serve.set_defaults(handler=_serve)

    runs = commands.add_parser(
        "runs",
        parents=[common, output, paging],
        help="list runs, newest first",
        description="List runs, newest first, with filters.",
    )
    runs.add_argument("--status", action="append", help="only this status (repeatable)")
    runs.add_argument("--name", help="only runs with exactly this name")
    runs.add_argument("--parent", dest="parent_run_id", help="only children of this run")
    runs.add_argument("--label", action="append", help="'key=value' or 'key' (repeatable: all must match)")
    runs.add_argument("--workspace", help="only runs of this project directory ('.' for the current one)")
    runs.add_argument("--since", help="only runs created at or after this ISO 8601 time")
    runs.set_defaults(handler=_runs)

    status = commands.add_parser(
        "status",
        parents=[common, output],
        help="show one run: steps, children, journal",
        description="Show one run with its steps, children and latest journal entries.",
    )
    status.add_argument("run_id", metavar="RUN")
    status.add_argument("--journal", type=int, default=20, help="how many journal entries (default 20)")
    status.set_defaults(handler=_status)

    send = commands.add_parser(
        "send-event",
        parents=[common, output],
        help="send an event (wakes runs waiting for it)",
        description="Send an event. Runs waiting for its name (and whose match it meets) wake up; runs that "
        "wait for it later still get it. With --id, sending the same event twice stores it once.",
    )
    send.add_argument("name", metavar="NAME")
    send.add_argument("--data", default="null", help="the event's data as JSON, e.g. '{\"pr\": 42}'")
    send.add_argument("--id", help="deduplication id")
    send.set_defaults(handler=_send_event)

    events = commands.add_parser(
        "events",
        parents=[common, output, paging],
        help="list recent events, newest first",
        description="List recent events, newest first.",
    )
    events.add_argument("--name", help="only events with this name")
    events.set_defaults(handler=_events)

    token = commands.add_parser(
        "token",
        parents=[common],
        help="print the HTTP server's bearer token",
        description="Print the bearer token that every HTTP request but /healthz needs (created on first use, "
        'readable by you alone), e.g. for Claude Code: --header "Authorization: Bearer $(mcp-orchestrator token)".',
    )
    token.set_defaults(handler=_token)

    cancel = commands.add_parser(
        "cancel",
        parents=[common, output],
        help="cancel a run and its live descendants",
        description="Cancel a run and every live run under it. Runs that already ended stay as they are.",
    )
    cancel.add_argument("run_id", metavar="RUN")
    cancel.add_argument("--reason", help="why, recorded in the journal")
    cancel.set_defaults(handler=_cancel)

    retry = commands.add_parser(
        "retry",
        parents=[common, output],
        help="make a failed or cancelled run live again",
        description="Retry a failed or cancelled run from its last completed step: completed steps stay, steps "
        "that failed for good get new attempts, unanswered waits start over; a sub-agent is started again.",
    )
    retry.add_argument("run_id", metavar="RUN")
    retry.add_argument("--reason", help="why, recorded in the journal")
    retry.set_defaults(handler=_retry)

    spawn = commands.add_parser(
        "spawn",
        parents=[common, output],
        help="start a background sub-agent on a task",
        description="Queue a background sub-agent (a child run); the supervisor (any running server, or "
        "'mcp-orchestrator supervise') starts its process within the limits. Prints the new run.",
    )
    spawn.add_argument("prompt", metavar="PROMPT", help="the task ('-' reads it from stdin)")
    spawn.add_argument("--agent", help="agent profile: claude, opencode, command or one from the config file")
    spawn.add_argument("--name", help="the run's name")
    spawn.add_argument("--key", help="idempotency key: the same key returns the same sub-agent")
    spawn.add_argument("--parent", dest="parent_run_id", help="the parent run")
    spawn.add_argument("--cwd", help="where the agent works (default: the current directory)")
    spawn.add_argument("--timeout", dest="timeout_s", type=float, help="kill an attempt after this many seconds")
    spawn.add_argument("--max-attempts", type=int, help="attempts before the run fails")
    spawn.add_argument("--label", action="append", help="'key=value' (repeatable)")
    spawn.add_argument("--concurrency-key", help="at most --concurrency-limit sub-agents with this key at once")
    spawn.add_argument("--concurrency-limit", type=int, help="the limit of --concurrency-key (default 1)")
    spawn.add_argument("--worktree", action="store_true", help="work in a new git worktree on its own branch")
    spawn.add_argument(
        "--command", dest="agent_command", nargs=argparse.REMAINDER, help="for --agent command: the argv, last"
    )
    spawn.set_defaults(handler=_spawn)

    logs = commands.add_parser(
        "logs",
        parents=[common],
        help="print a sub-agent's log (--follow to keep printing)",
        description="Print the log of a sub-agent's process: stdout, or stderr with --stderr (which also "
        "marks where each attempt started). With --follow, keep printing until the run ends.",
    )
    logs.add_argument("run_id", metavar="RUN")
    logs.add_argument("--stderr", action="store_true", help="the stderr log instead of stdout")
    logs.add_argument("--tail", type=int, help="only the last N lines")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until the run ends")
    logs.add_argument(
        "--raw",
        action="store_true",
        help="print the log's bytes as they are, terminal escape sequences included (by default control "
        "characters but newline and tab are shown as \\u escapes such as \\u001b, so a log cannot clear "
        "the screen, set the title or write the clipboard)",
    )
    logs.set_defaults(handler=_logs)

    supervise = commands.add_parser(
        "supervise",
        parents=[common],
        help="run the background duties without serving MCP",
        description="Fire timers and supervise sub-agents (start queued ones, retry, reap) until interrupted. "
        "Every 'serve' does this too. One process per store holds the supervisor lease (schedules, retention, "
        "traces) and one per node the node's lease (starting and reaping that node's sub-agents); the others "
        "stand by and take over when a holder stops renewing.",
    )
    supervise.set_defaults(handler=_supervise)

    schedules = commands.add_parser(
        "schedules",
        parents=[common, output],
        help="list schedules; add, pause, resume or remove one",
        description="Without a subcommand, list schedules with their last firing and next due times. "
        "The lease holder (any running server, or 'mcp-orchestrator supervise') fires them.",
    )
    schedules.set_defaults(handler=_schedules, schedule_command=None)
    steer = schedules.add_subparsers(dest="schedule_command", metavar="SUBCOMMAND")
    add = steer.add_parser(
        "add",
        parents=[common, output],
        help="create or update a schedule",
        description="Create or update (by name) a schedule. Exactly one of --cron, --every, --at.",
    )
    add.add_argument("name", metavar="NAME")
    add.add_argument("--cron", help="five-field cron, e.g. '0 9 * * 1-5'")
    add.add_argument("--every", dest="every_s", type=float, help="every this many seconds")
    add.add_argument("--at", help="once, at this ISO 8601 time with offset")
    add.add_argument("--timezone", help="IANA time zone for --cron (default UTC)")
    add.add_argument(
        "--action",
        required=True,
        help='JSON: {"type": "send_event", "name": ..., "data": ...} or {"type": "spawn_subagent", "prompt": ...}',
    )
    add.add_argument("--overlap", choices=["skip", "allow", "cancel_previous"], help="for spawns (default skip)")
    add.add_argument("--catch-up", choices=["skip", "latest", "all"], help="missed due times (default skip)")
    add.add_argument("--paused", action="store_true", help="create it paused")
    for verb, text in (("pause", "stop firing until resumed"), ("resume", "fire again from the next due time"),
                       ("remove", "remove it and its firing history")):  # fmt: skip
        one = steer.add_parser(verb, parents=[common, output], help=text, description=f"{verb.title()}: {text}.")
        one.add_argument("name", metavar="NAME")

    gc = commands.add_parser(
        "gc",
        parents=[common, output],
        help="remove runs, events and firings that ended long ago",
        description="Remove completed, failed and cancelled runs that ended more than --older-than days ago "
        "(with their steps, journal and waits; not while a descendant is live), events older than that and "
        "than every live run, and old schedule firings. The supervisor does this hourly with the config's "
        "[retention] days (default 30).",
    )
    gc.add_argument("--older-than", type=float, metavar="DAYS", help="age in days (default: the config's)")
    gc.set_defaults(handler=_gc)

    agents = commands.add_parser(
        "agents",
        parents=[common, output],
        help="list the agent profiles and limits",
        description="List the agent profiles (built in, and from the config file) and the sub-agent limits.",
    )
    agents.set_defaults(handler=_agents)
    return parser


# Commands.


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    if args.http is None:
        asyncio.run(_serve_stdio(settings))
        return 0
    host, port = _parse_address(args.http)
    if args.no_token and not _is_loopback(host):
        raise ConfigError(f"--no-token serves without authentication: only on a loopback address, not {host}")
    asyncio.run(_serve_http(settings, host, port, token_required=not args.no_token))
    return 0


async def _serve_stdio(settings: Settings) -> None:
    from .server import build_server, lend
    from .stdio import line_limit, serve_stdio

    async with open_engine(settings) as engine:  # a bad store fails here, before MCP starts
        server = build_server(settings, engine_scope=lend(engine))
        await serve_stdio(server, line_limit(settings.max_payload_bytes))  # answers even unreadable requests


async def _serve_http(settings: Settings, host: str, port: int, token_required: bool = True) -> None:
    import uvicorn

    from .web import build_app
    from .web.auth import load_or_create_token
    from .web.limits import MAX_HEADER_BYTES

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    if not _is_loopback(host):
        print(
            f"warning: serving on {host}, reachable from other machines: requests are authenticated by the token, "
            "but the traffic is plain HTTP, readable (token included) by anyone on the network path; "
            f"clients must use Host {f'[{host}]' if ':' in host else host}:{sock.getsockname()[1]} exactly",
            file=sys.stderr,
        )
    token = load_or_create_token(settings.token_file) if token_required else None
    async with open_engine(settings) as engine:  # a bad store fails here, with its own message
        app = build_app(settings, engine, token, host=host, port=sock.getsockname()[1])
        config = uvicorn.Config(
            app,
            log_level="warning",
            http="h11",  # a pure-Python parser whose header limit we set
            h11_max_incomplete_event_size=MAX_HEADER_BYTES,  # request line + headers, else 400
        )
        server = uvicorn.Server(config)
        serving = asyncio.ensure_future(server.serve(sockets=[sock]))
        while not server.started and not serving.done():
            await asyncio.sleep(0.01)
        if server.started:
            shown = f"[{host}]" if family == socket.AF_INET6 else host
            url = f"http://{shown}:{sock.getsockname()[1]}/mcp"
            access = (
                f"requests need the bearer token in {settings.token_file} ('mcp-orchestrator token')"
                if token is not None
                else "no token needed (--no-token)"
            )
            print(
                f"mcp-orchestrator {__version__}: MCP at {url}, store {settings.db}; {access}",
                file=sys.stderr,
                flush=True,
            )
        await serving


def _runs(args: argparse.Namespace, settings: Settings) -> int:
    fields = {
        "status": args.status,
        "name": args.name,
        "parent_run_id": args.parent_run_id,
        "label": args.label,
        "workspace": settings.workspace if args.workspace == "." else args.workspace,
        "since": args.since,
        "limit": args.limit,
        "cursor": args.cursor,
    }
    query = _validated(ListRunsInput, {k: v for k, v in fields.items() if v is not None})
    result = _with_engine(settings, lambda engine: engine.runs.list_runs(query))
    if args.json:
        return _print_json(result)
    _print_table(
        ["RUN", "NAME", "STATUS", "CREATED", "UPDATED", "WORKSPACE"],
        [
            [r.run_id, r.name, r.status, _when(r.created_at), _when(r.updated_at), r.workspace or ""]
            for r in result.runs
        ],
    )
    if result.next_cursor:
        print(f"\nmore: --cursor {result.next_cursor}")
    return 0


def _status(args: argparse.Namespace, settings: Settings) -> int:
    query = _validated(StatusInput, {"run_id": args.run_id, "journal_limit": args.journal})

    async def status_and_tree(engine: Engine) -> tuple[StatusResult, list[tuple[int, Run]]]:
        result = await engine.runs.status(query)
        return result, [] if args.json else await engine.runs.descendants(result.children)

    result, tree = _with_engine(settings, status_and_tree)
    if args.json:
        return _print_json(result)
    _print_run(result.run)
    if result.process is not None:
        _print_process(result.process, result.log_tail)
    print()
    _print_table(
        ["STEP", "STATUS", "ATTEMPT", "ENDED", "OUTPUT / ERROR"],
        [
            [
                s.step,
                s.status,
                s.attempt,
                _when(s.ended_at),
                _brief(s.error if s.error is not None else s.output),
            ]
            for s in result.steps
        ],
        empty="no steps yet",
    )
    if result.waits:
        print()
        _print_table(
            ["WAIT", "KIND", "FOR", "MATCH", "UNTIL"],
            [
                [w.step, w.kind, " | ".join(w.events), _brief(w.match) if w.match else "", _when(w.until)]
                for w in result.waits
            ],
        )
    if tree:
        print()
        _print_table(
            ["CHILDREN", "NAME", "STATUS", "ENDED"],
            [
                ["  " * depth + ("└ " if depth else "") + c.run_id, c.name, c.status, _when(c.ended_at)]
                for depth, c in tree
            ],
        )
    if result.journal:
        print()
        _print_table(
            ["SEQ", "AT", "EVENT", "STEP", "DETAIL"],
            [[j.seq, _when(j.at), j.kind, j.step or "", _brief(j.detail or "")] for j in result.journal],
        )
    return 0


def _send_event(args: argparse.Namespace, settings: Settings) -> int:
    data = _json_option("--data", args.data)
    query = _validated(SendEventInput, {"name": args.name, "data": data, "id": args.id})
    result = _with_engine(settings, lambda engine: engine.events.send_event(query, source="cli"))
    if args.json:
        return _print_json(result)
    if result.deduplicated:
        print(f"event {result.event_id} was already stored; nothing new")
    else:
        woken = ", ".join(result.woken_run_ids) or "no waiting run"
        print(f"event {result.event_id} stored; woke {woken}")
    return 0


def _events(args: argparse.Namespace, settings: Settings) -> int:
    fields = {"name": args.name, "limit": args.limit, "cursor": args.cursor}
    query = _validated(ListEventsInput, {k: v for k, v in fields.items() if v is not None})
    result = _with_engine(settings, lambda engine: engine.events.list_events(query))
    if args.json:
        return _print_json(result)
    _print_table(
        ["EVENT", "NAME", "SOURCE", "RECEIVED", "DATA"],
        [[e.event_id, e.name, e.source, _when(e.received_at), _brief(e.data)] for e in result.events],
        empty="no events",
    )
    if result.next_cursor:
        print(f"\nmore: --cursor {result.next_cursor}")
    return 0


def _token(args: argparse.Namespace, settings: Settings) -> int:
    from .web.auth import load_or_create_token

    print(load_or_create_token(settings.token_file))
    return 0


def _cancel(args: argparse.Namespace, settings: Settings) -> int:
    query = _validated(CancelRunInput, {"run_id": args.run_id, "reason": args.reason})
    result = _with_engine(settings, lambda engine: engine.runs.cancel_run(query))
    if args.json:
        return _print_json(result)
    if result.cancelled_run_ids:
        print(f"cancelled {len(result.cancelled_run_ids)} run(s): {', '.join(result.cancelled_run_ids)}")
    else:
        print(f"nothing to cancel: run {result.run.run_id} is {result.run.status} and has no live descendants")
    return 0


def _retry(args: argparse.Namespace, settings: Settings) -> int:
    query = _validated(RetryRunInput, {"run_id": args.run_id, "reason": args.reason})
    result = _with_engine(settings, lambda engine: engine.runs.retry_run(query))
    if args.json:
        return _print_json(result)
    reset = f"; steps starting over: {', '.join(result.reset_steps)}" if result.reset_steps else ""
    print(f"run {result.run.run_id} is {result.run.status} again{reset}")
    return 0


def _spawn(args: argparse.Namespace, settings: Settings) -> int:
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    fields = {
        "prompt": prompt,
        "agent": args.agent,
        "name": args.name,
        "key": args.key,
        "parent_run_id": args.parent_run_id,
        "cwd": args.cwd or os.getcwd(),
        "timeout_s": args.timeout_s,
        "max_attempts": args.max_attempts,
        "labels": dict(_parse_labels(args.label or [])),
        "concurrency_key": args.concurrency_key,
        "concurrency_limit": args.concurrency_limit,
        "worktree": args.worktree,
        "command": args.agent_command or None,
    }
    query = _validated(SpawnSubagentInput, {k: v for k, v in fields.items() if v is not None})
    result = _with_engine(settings, lambda engine: engine.subagents.spawn(query))
    if args.json:
        return _print_json(result)
    verb = "queued" if result.created else "already exists:"
    print(f"{verb} {result.run.run_id} ({result.process.profile}, {result.run.status}) in {result.process.cwd}")
    return 0


def _parse_labels(labels: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for label in labels:
        key, sep, value = label.partition("=")
        if not sep:
            raise InvalidInput(f"--label {label!r}: expected key=value")
        pairs.append((key, value))
    return pairs


def _logs(args: argparse.Namespace, settings: Settings) -> int:
    from .logs import log_path, tail_lines

    query = _validated(StatusInput, {"run_id": args.run_id, "journal_limit": 0, "log_lines": 0})
    status: StatusResult = _with_engine(settings, lambda engine: engine.runs.status(query))
    if status.process is None or status.process.log_dir is None:
        what = "is not a sub-agent" if status.process is None else "has no log yet (its process has not started)"
        if status.process is None or not args.follow:
            raise InvalidInput(f"run {args.run_id} {what}")
    log_dir = Path(status.process.log_dir) if status.process.log_dir else settings.runs_dir / status.run.run_id
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


def _supervise(args: argparse.Namespace, settings: Settings) -> int:
    from .supervisor import Supervisor, run_timers

    async def run() -> None:
        async with open_engine(settings) as engine:
            supervisor = Supervisor(engine, settings)
            print(f"mcp-orchestrator {__version__}: supervising the store {settings.db}", file=sys.stderr, flush=True)
            duties = asyncio.gather(run_timers(engine), supervisor.run())
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):  # stop cleanly: the lease is given up at once
                loop.add_signal_handler(signum, duties.cancel)
            with contextlib.suppress(asyncio.CancelledError):
                await duties

    asyncio.run(run())
    return 0


def _schedules(args: argparse.Namespace, settings: Settings) -> int:
    command = args.schedule_command
    if command == "add":
        action = _json_option("--action", args.action)
        fields = {
            "name": args.name,
            "cron": args.cron,
            "every_s": args.every_s,
            "at": args.at,
            "timezone": args.timezone,
            "action": action,
            "overlap": args.overlap,
            "catch_up": args.catch_up,
            "enabled": not args.paused,
        }
        query = _validated(ScheduleInput, {k: v for k, v in fields.items() if v is not None})
        added = _with_engine(settings, lambda engine: engine.schedules.schedule(query))
        if args.json:
            return _print_json(added)
        due = ", ".join(_when(when) for when in added.next_due) or "nothing (paused or done)"
        print(f"{'created' if added.created else 'updated'} schedule {args.name}; next due: {due}")
        return 0
    if command in ("pause", "resume"):
        changed = _with_engine(settings, lambda engine: engine.schedules.set_enabled(args.name, command == "resume"))
        if args.json:
            print(changed.model_dump_json(indent=2))
            return 0
        print(f"schedule {args.name} {'resumed' if changed.enabled else 'paused'}")
        return 0
    if command == "remove":
        removed = _with_engine(settings, lambda engine: engine.schedules.unschedule(UnscheduleInput(name=args.name)))
        if args.json:
            return _print_json(removed)
        print(f"removed schedule {args.name}")
        return 0
    listed = _with_engine(settings, lambda engine: engine.schedules.list(ListSchedulesInput()))
    if args.json:
        return _print_json(listed)
    _print_table(
        ["SCHEDULE", "WHEN", "ACTION", "STATE", "LAST FIRED", "OUTCOME", "NEXT DUE"],
        [
            [
                s.name,
                schedule_timing(s, terminal=True),
                s.action.type,
                "enabled" if s.enabled else "paused",
                _when(s.last.fired_at) if s.last else "",
                f"{s.last.outcome} {s.last.run_id or s.last.event_id or ''}".strip() if s.last else "",
                _when(s.upcoming[0]) if s.upcoming else "",
            ]
            for s in listed.schedules
        ],
        empty="no schedules",
    )
    return 0


MAX_AGE_DAYS = 36_500  # a century: older than anything stored, and a date that exists


def _gc(args: argparse.Namespace, settings: Settings) -> int:
    from .services.retention import collect

    days = settings.agents.retention_days if args.older_than is None else args.older_than
    if not 0 <= days <= MAX_AGE_DAYS:  # NaN fails too
        raise InvalidInput(f"--older-than {days:g}: give an age from 0 to {MAX_AGE_DAYS} days")
    removed = _with_engine(settings, lambda engine: collect(engine, timedelta(days=days)))
    if args.json:
        return _print_json(removed)
    print(
        f"removed {removed.runs} run(s), {removed.events} event(s) and {removed.firings} schedule firing(s) "
        f"older than {_when(removed.before)}"
    )
    return 0


def _agents(args: argparse.Namespace, settings: Settings) -> int:
    config = settings.agents
    if args.json:
        print(config.model_dump_json(indent=2))
        return 0
    source = settings.config_file or "none (built-in profiles only)"
    print(f"config file: {source}")
    per_node = "" if config.node_max_concurrent is None else f", {config.node_max_concurrent} per node"
    print(f"default agent: {config.default_agent}; at most {config.max_concurrent} sub-agents at once{per_node}")
    print(f"this node: {settings.node}\n")
    _print_table(
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


# Helpers.


def _with_engine(settings: Settings, call: Callable[[Engine], Awaitable[Any]]) -> Any:
    async def run() -> Any:
        async with open_engine(settings) as engine:
            return await call(engine)

    return asyncio.run(run())


def _json_option(flag: str, text: str) -> Any:
    """An option's JSON value, or an error naming the option and what to change."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{flag} is not JSON ({exc.msg} at position {exc.pos}): {text!r:.200}") from None
    except RecursionError:
        raise InvalidInput(f"{flag} nests arrays and objects too deep to read; flatten it") from None
    except ValueError as exc:  # an integer of more than 4300 digits
        raise InvalidInput(f"{flag} cannot be read ({exc}); send a shorter number, or a string") from None


def _validated(model: type[BaseModel], values: dict[str, Any]) -> Any:
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise invalid_input_from(exc, "options") from exc


def _parse_address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = "", value
    host = host.strip("[]") or "127.0.0.1"
    try:
        number = int(port)
    except ValueError:
        raise ConfigError(f"--http {value!r}: expected HOST:PORT or PORT, e.g. 127.0.0.1:8765") from None
    if not 0 <= number <= 65535:
        raise ConfigError(f"--http {value!r}: the port must be 0 to 65535")
    return host, number


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _print_json(result: BaseModel) -> int:
    print(result.model_dump_json(indent=2))
    return 0


def _print_run(run: Run) -> None:
    rows = [
        ("run", run.run_id),
        ("name", run.name),
        ("status", run.status),
        ("key", run.key or ""),
        ("parent", run.parent_run_id or ""),
        ("workspace", run.workspace or ""),
        ("labels", ", ".join(f"{k}={v}" for k, v in run.labels.items())),
        ("created", _when(run.created_at)),
        ("updated", _when(run.updated_at)),
        ("ended", _when(run.ended_at)),
        ("deadline", _when(run.deadline_at)),
        ("output", _brief(run.output) if run.output is not None else ""),
        ("error", _brief(run.error) if run.error is not None else ""),
    ]
    for label, value in rows:
        if value:
            print(f"{label + ':':<11}{value}")


def _print_process(process: Agent, log_tail: dict[str, list[str]]) -> None:
    print(f"{'process:':<11}{', '.join(process_facts(process, terminal=True))}")
    print(f"{'cwd:':<11}{process.cwd}")
    if process.worktree:
        print(f"{'worktree:':<11}{process.worktree} (branch {process.branch})")
    for stream, lines in log_tail.items():
        if lines:
            print(f"\n{stream} (last {len(lines)} lines; 'mcp-orchestrator logs {process.run_id}'):")
            for line in lines:
                print(f"  {line}")


def _print_table(headers: list[str], rows: list[list[Any]], empty: str = "no runs") -> None:
    if not rows:
        print(empty)
        return
    cells = [[_one_line(str(cell)) for cell in row] for row in rows]
    widths = [max(len(headers[i]), *(len(row[i]) for row in cells)) for i in range(len(headers))]
    for row in [headers, *cells]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _one_line(text: str) -> str:
    """A table cell stays on its row: a stored newline or tab cannot forge another."""
    return text.replace("\n", "\\n").replace("\t", "\\t")


_when = partial(when, terminal=True)  # the terminal's way: UTC times end in Z
_brief = partial(brief, terminal=True)  # and a missing value reads null


if __name__ == "__main__":
    sys.exit(main())
