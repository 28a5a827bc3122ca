"""Connecting a client to this installation in one command: ``install claude-code`` and ``install opencode``.

The stdio server is registered by the absolute path of this installation's Python, so it starts
whatever is on the client's PATH; with ``--http URL`` the client connects to a running ``serve --http``
with the bearer token in its header. Claude Code's own ``claude mcp add-json`` registers it when
``claude`` is on PATH (any scope); otherwise the project's ``.mcp.json`` is written. OpenCode's
``opencode.json`` (the project's, or the user's global one) is written directly; a remote entry turns
OpenCode's OAuth detection off, since the server takes a static bearer token (with it on, a rejected token
makes OpenCode probe the server for OAuth metadata and client registration, then fail without a reason).
Existing files keep every other entry.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..config import ENV_CONFIG, ENV_DB, Settings
from ..errors import ConfigError
from ..store import absolute_location
from .command import Commands, add_command

NAME = "orchestrator"  # the server's name in the client: its tools are mcp__orchestrator__*
CLAUDE_TIMEOUT_S = 60.0


def add_commands(commands: Commands) -> None:
    install = commands.add_parser(
        "install",
        help="connect Claude Code or OpenCode to this installation",
        description="Register this installation's MCP server with a client: over stdio by this installation's "
        "absolute path (nothing needs to be on PATH), or with --http URL to a running 'mcp-orchestrator serve "
        "--http' with the bearer token in the Authorization header. --db and --config given here (or their "
        "environment variables) are passed on to the server.",
    )
    clients = install.add_subparsers(dest="client", metavar="CLIENT", required=True)
    claude = add_command(
        clients,
        "claude-code",
        _claude_code,
        json=False,
        help="register with Claude Code (claude mcp add-json, or the project's .mcp.json)",
        description="Register the server with Claude Code: with 'claude mcp add-json' when 'claude' is on PATH, "
        "else (--scope project only) by writing .mcp.json in the current directory. Check with 'claude mcp list'.",
    )
    claude.add_argument(
        "--scope",
        choices=["local", "project", "user"],
        default="local",
        help="local: you, in this project (default); project: everyone, in .mcp.json; user: you, in every project",
    )
    opencode = add_command(
        clients,
        "opencode",
        _opencode,
        json=False,
        help="register with OpenCode (its opencode.json)",
        description="Register the server with OpenCode by writing its config: opencode.json in the current "
        "directory (--scope project), or the user's global one (--scope user): $XDG_CONFIG_HOME/opencode/"
        "opencode.json, by default ~/.config/opencode/opencode.json on every platform, where OpenCode reads it. "
        "Check with 'opencode mcp list'.",
    )
    opencode.add_argument("--scope", choices=["project", "user"], default="project", help="default: project")
    for client in (claude, opencode):
        client.add_argument(
            "--http",
            metavar="URL",
            help="connect to a running 'mcp-orchestrator serve --http' at URL, e.g. http://127.0.0.1:8765/mcp",
        )


def _claude_code(args: argparse.Namespace, settings: Settings) -> int:
    entry = _claude_entry(args, settings)
    claude = shutil.which("claude")
    if claude is not None:
        command = [claude, "mcp", "add-json", NAME, json.dumps(entry), "--scope", args.scope]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=CLAUDE_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ConfigError(f"'claude mcp add-json' could not run: {exc}") from exc
        if done.returncode != 0:
            said = " ".join((done.stderr or done.stdout).split())[:500]
            raise ConfigError(f"'claude mcp add-json' failed (exit {done.returncode}): {said}")
        print(f"registered '{NAME}' with Claude Code ({args.scope} scope): {_what(entry)}; check: claude mcp list")
        return 0
    if args.scope != "project":
        raise ConfigError(
            f"'claude' is not on PATH, so the {args.scope} scope (kept in Claude Code's own settings) cannot be "
            "written; install Claude Code, or use --scope project to write .mcp.json in this directory"
        )
    path = Path.cwd() / ".mcp.json"
    _merge(path, ["mcpServers", NAME], entry)
    print(f"wrote '{NAME}' into {path}: {_what(entry)}; Claude Code asks once to trust it")
    return 0


def _opencode(args: argparse.Namespace, settings: Settings) -> int:
    if args.http:
        entry: dict[str, Any] = {
            "type": "remote",
            "url": _url(args.http),
            "headers": _headers(settings),
            "oauth": False,
        }
    else:
        command, env = _server(args, settings)
        entry = {"type": "local", "command": command, **({"environment": env} if env else {})}
    entry["enabled"] = True
    path = (Path.cwd() if args.scope == "project" else _opencode_config_dir()) / "opencode.json"
    _merge(path, ["mcp", NAME], entry)
    print(f"wrote '{NAME}' into {path}: {_what(entry)}; check: opencode mcp list")
    return 0


def _opencode_config_dir() -> Path:
    """OpenCode's global config directory: the XDG one on every platform (not macOS's Application Support)."""
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "opencode"


def _claude_entry(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    if args.http:
        return {"type": "http", "url": _url(args.http), "headers": _headers(settings)}
    command, env = _server(args, settings)
    return {"type": "stdio", "command": command[0], "args": command[1:], **({"env": env} if env else {})}


def _server(args: argparse.Namespace, settings: Settings) -> tuple[list[str], dict[str, str]]:
    """This installation's stdio server, by absolute path, and the store and config it was told to use."""
    env = {}
    if args.db or os.environ.get(ENV_DB):
        env[ENV_DB] = absolute_location(settings.db)  # the client starts it in another directory
    if settings.config_file is not None and (args.config or os.environ.get(ENV_CONFIG)):
        env[ENV_CONFIG] = str(settings.config_file.absolute())
    return [str(Path(sys.executable).absolute()), "-m", "mcp_orchestrator", "serve"], env


def _headers(settings: Settings) -> dict[str, str]:
    from ..tokens import load_or_create_token

    return {"Authorization": f"Bearer {load_or_create_token(settings.token_file)}"}


def _url(url: str) -> str:
    if not url.startswith(("http://", "https://")) or " " in url:
        raise ConfigError(f"--http {url!r}: give the server's MCP URL, e.g. http://127.0.0.1:8765/mcp")
    return url


def _what(entry: dict[str, Any]) -> str:
    """The entry in words, without its token."""
    if "url" in entry:
        return f"{entry['url']} with the bearer token"
    command = entry["command"] if isinstance(entry["command"], list) else [entry["command"], *entry["args"]]
    return " ".join(command)


def _merge(path: Path, keys: list[str], entry: dict[str, Any]) -> None:
    """Put ``entry`` at ``keys`` in the JSON file at ``path`` (created if absent), keeping everything else;
    written owner-only when it holds a token."""
    try:
        document = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"cannot read {path} ({exc}); fix or move it, then run this again") from exc
    if not isinstance(document, dict):
        raise ConfigError(f"{path} does not hold a JSON object; fix or move it, then run this again")
    here = document
    for key in keys[:-1]:
        here = here.setdefault(key, {})
        if not isinstance(here, dict):
            raise ConfigError(f"{path}: '{key}' is not a JSON object; fix it, then run this again")
    here[keys[-1]] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = "headers" in entry
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    with os.fdopen(fd, "w") as file:
        json.dump(document, file, indent=2)
        file.write("\n")
    if secret:
        path.chmod(0o600)
