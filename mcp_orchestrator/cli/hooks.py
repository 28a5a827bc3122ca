"""Claude Code hooks: ``hook session-start`` tells a new session what unfinished work its workspace has.

Claude Code runs the command at every session start (startup, resume, /clear, compaction) with the
hook's input on stdin (``cwd``, ``session_id``, ``source``), and adds the ``additionalContext`` of what it
prints to the model's context. The workspace is the one runs record: ``CLAUDE_PROJECT_DIR``, else the
input's ``cwd``. A hook must never stand in a session's way: with nothing to say it prints nothing, and
any failure exits 0 with one line on stderr, which Claude Code shows only in its debug or verbose output.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from ..config import ENV_DB, Settings
from ..store import sqlite_path
from .command import Commands, add_command, with_engine

MAX_INPUT_BYTES = 1024 * 1024  # Claude Code's hook input is a few hundred bytes
NOTE_MAX = 500  # characters of the one line on stderr that says why there is no summary


def add_commands(commands: Commands) -> None:
    hook = commands.add_parser(
        "hook",
        help="Claude Code hooks (the plugin runs them)",
        description="Commands that Claude Code runs as hooks; the Claude Code plugin in clients/claude-code/plugin "
        "registers them. Each reads Claude Code's hook input (JSON) on stdin.",
    )
    events = hook.add_subparsers(dest="hook_event", metavar="EVENT", required=True)
    add_command(
        events,
        "session-start",
        _session_start,
        json=False,
        help="print this workspace's unfinished work for a new session's context",
        description="Read Claude Code's SessionStart hook input on stdin and print, as the hook's "
        "additionalContext, a summary of the workspace's unfinished work: runs running, queued, waiting (and for "
        "what), paused, or failed in the last 24 hours, with their ids, names and keys, and the sub-agents' "
        "permission requests waiting for a decision; at most 15 lines. The workspace is CLAUDE_PROJECT_DIR, else "
        "the input's cwd, else the current directory. Prints nothing when there is nothing (or no store yet), and "
        "always exits 0: a failure is one line on stderr.",
    )


def _session_start(args: argparse.Namespace, settings: Settings) -> int:
    try:
        facts = _hook_input()
        workspace = os.environ.get("CLAUDE_PROJECT_DIR") or _text(facts.get("cwd")) or settings.workspace
        if not _store_exists(settings.db):
            return 0  # nothing was ever recorded here: nothing to say, and no store to create
        from ..summary import unfinished_work

        summary: str = with_engine(settings, lambda engine: unfinished_work(engine, workspace))
    except Exception as exc:  # never a traceback, never an exit code Claude Code would report
        said = " ".join(f"{type(exc).__name__}: {exc}".split())
        print(f"mcp-orchestrator hook session-start: no summary ({said[:NOTE_MAX]})", file=sys.stderr)
        return 0
    if summary:
        output = {"hookSpecificOutput": {"hookEventName": "SessionStart", "additionalContext": summary}}
        print(json.dumps(output))
    return 0


def _hook_input() -> dict[str, Any]:
    """The hook's input object; none (a person trying the command at a terminal, or no input) is {}."""
    if sys.stdin is None or sys.stdin.isatty():
        return {}
    raw = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
    if len(raw) > MAX_INPUT_BYTES:
        raise ValueError(f"the hook input on stdin is over {MAX_INPUT_BYTES} bytes; Claude Code sends a small object")
    if not raw.strip():
        return {}
    try:
        facts = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError("the hook input on stdin is not UTF-8; Claude Code sends a JSON object") from None
    except ValueError as exc:
        raise ValueError(f"the hook input on stdin is not JSON ({exc}); Claude Code sends a JSON object") from None
    if not isinstance(facts, dict):
        raise ValueError("the hook input on stdin is not a JSON object; Claude Code sends one")
    return facts


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _store_exists(db: str) -> bool:
    """Whether there is a store to read: a PostgreSQL URL, or a SQLite file that exists (opening a missing one
    would create it)."""
    path = sqlite_path(db)
    if path is None:
        return True
    if path.exists() and not path.is_file():
        raise ValueError(f"the store {path} is not a file; point {ENV_DB} or --db at the SQLite file")
    return path.exists()
