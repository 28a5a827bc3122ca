"""The terminal face: serve the MCP server, and see and steer runs from a shell.

Every command parses its arguments, calls the engine and renders: a table for people, JSON with
``--json`` for scripts. Its options come from the same input models as the MCP tools (``options``),
so they validate alike. Errors print ``code: message`` on stderr and exit 1 (2 for usage errors).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib import import_module
from typing import TYPE_CHECKING

from pydantic import ValidationError

from .. import __version__
from ..config import (
    ENV_CONFIG,
    ENV_DB,
    ENV_MAX_PAYLOAD,
    ENV_NODE,
    ENV_SYNCHRONOUS,
    ENV_WEBHOOK_SECRET,
    Settings,
)
from ..errors import ConfigError, InternalError, InvalidInput, OrchestratorError, invalid_input_from
from ..exits import EXIT_INTERRUPTED, unwritable
from ..paths import default_config_path, default_db_path
from .render import configure, printable_std_streams
from .wording import SHELL_TERMS

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

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

# Each module of this package that adds commands (``add_commands``), with the commands it adds, in the order
# of `--help`. A command line names its command first: only that command's module is imported and its parser
# built (a server starts without the others' imports); --help, a mistake or a command not listed builds them all.
COMMAND_GROUPS = {
    "serve": ("serve", "supervise", "token"),
    "install": ("install",),
    "service": ("service",),
    "hooks": ("hook",),
    "runs": ("runs", "status", "cancel", "retry"),
    "steps": ("start", "checkpoint", "finish"),
    "events": ("send-event", "events"),
    "agents": ("spawn", "logs", "resume", "agents"),
    "steering": ("message", "budget"),
    "approvals": ("approvals", "approve", "deny"),
    "schedules": ("schedules",),
    "retention": ("gc",),
}


def main(argv: Sequence[str] | None = None) -> int:
    with printable_std_streams():
        try:
            try:
                code = _command(argv)
            finally:  # --help and usage errors exit through here too: their output is flushed while caught
                sys.stdout.flush()
        except OSError as exc:  # the reader went away (| head), or the disk is full
            return unwritable(exc)
        except KeyboardInterrupt:  # Ctrl-C while the parser is built, before a command runs
            return EXIT_INTERRUPTED
        return code


def _command(argv: Sequence[str] | None) -> int:
    args_given = sys.argv[1:] if argv is None else argv
    parser = _parser(args_given[0] if args_given else None)
    args = parser.parse_args(args_given)
    if not getattr(args, "command_name", None):
        parser.print_help()
        return 2
    configure(no_color=getattr(args, "no_color", False), environ=os.environ)
    try:
        settings = Settings.load(db=args.db, config=args.config)
        return int(args.handler(args, settings))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        raise
    except Exception as exc:  # every failure becomes `code: message`, never a traceback
        error = _as_orchestrator_error(exc, args.command_name)
        print(f"{error.code}: {error.worded(SHELL_TERMS)}", file=sys.stderr)
        return 1


class _Parser(argparse.ArgumentParser):
    """argparse drops a failed write of its help or usage (and exits 0 after ``--help >/dev/full``); here it
    fails as any output does (``exits.unwritable``: 141 for a reader gone, else 1 saying why). Its
    subcommands' parsers are of this class too."""

    def _print_message(self, message: str, file: SupportsWrite[str] | None = None) -> None:
        if message:
            (file or sys.stderr).write(message)


def _parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line: the commands of ``command``'s module when ``COMMAND_GROUPS`` lists it, else all."""
    parser = _Parser(
        prog="mcp-orchestrator", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"mcp-orchestrator {__version__}")
    # Not dest="command": that is a field of spawn_subagent (the argv of --agent command).
    commands = parser.add_subparsers(dest="command_name", metavar="COMMAND")
    groups = [group for group, names in COMMAND_GROUPS.items() if command in names] or COMMAND_GROUPS
    for group in groups:
        import_module(f"{__name__}.{group}").add_commands(commands)
    return parser


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
