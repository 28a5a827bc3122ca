"""How the console script starts: ``token`` and ``--version`` without the command line's imports, a command
with its own module's imports alone, ``serve`` on a terminal saying what it waits for, ``spawn --command``
implying the command profile."""

from __future__ import annotations

import argparse
import json
import os
import pty
import subprocess
import sys
from importlib import import_module
from pathlib import Path

import pytest

from mcp_orchestrator.cli import COMMAND_GROUPS

from .support import cli, server_env

SCRIPT = Path(sys.executable).with_name("mcp-orchestrator")
HINT = "It is waiting for an MCP client to send JSON-RPC messages on stdin"
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
# What the full command line imports and these two must not: the MCP SDK, Starlette, the engine, the models.
HEAVY = ("mcp", "starlette", "mcp_orchestrator.cli", "mcp_orchestrator.models", "mcp_orchestrator.runtime")


@pytest.mark.processes
def test_token_and_version_answer_without_the_command_line(private_state_dir: Path) -> None:
    probe = (
        "import sys\nfrom mcp_orchestrator.console import main\n"
        "assert main(['token']) == 0 and main(['--version']) == 0\n"
        f"print(sorted(m for m in sys.modules if any(m == h or m.startswith(h + '.') for h in {HEAVY!r})))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=server_env(), check=True)
    token, version, imported = done.stdout.splitlines()
    assert imported == "[]"
    assert token == (private_state_dir / "token").read_text().strip() and len(token) >= 32
    assert version.startswith("mcp-orchestrator ")
    script = subprocess.run([str(SCRIPT), "--version"], capture_output=True, text=True, check=True)
    assert script.stdout == version + "\n"
    full = cli(private_state_dir / "store.db", "token")  # with --db: the whole command line, the same token
    assert full.stdout == token + "\n"


def test_each_command_module_adds_the_commands_listed_for_it() -> None:
    for group, names in COMMAND_GROUPS.items():
        commands = argparse.ArgumentParser().add_subparsers()
        import_module(f"mcp_orchestrator.cli.{group}").add_commands(commands)
        assert tuple(commands.choices) == names, group


@pytest.mark.processes
def test_a_command_imports_its_own_module_and_the_services_it_calls(tmp_path: Path) -> None:
    probe = (
        "import json, sys\nfrom mcp_orchestrator.cli import main\n"
        f"assert main(['runs', '--db', {str(tmp_path / 's.db')!r}]) == 0\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=server_env(), check=True)
    imported = set(json.loads(done.stdout.splitlines()[-1]))
    assert {group for group in COMMAND_GROUPS if f"mcp_orchestrator.cli.{group}" in imported} == {"runs"}
    assert "mcp" not in imported  # no MCP SDK for a command that reads the store
    assert not imported & {"mcp_orchestrator.services.subagents", "mcp_orchestrator.services.schedules"}


@pytest.mark.processes
def test_a_bad_token_file_is_reported_as_every_error(private_state_dir: Path) -> None:
    private_state_dir.mkdir(parents=True)
    (private_state_dir / "token").write_text("short\n")
    done = subprocess.run([str(SCRIPT), "token"], capture_output=True, text=True, env=server_env())
    assert done.returncode == 1 and done.stdout == ""
    told = (
        f"config_error: the token file {private_state_dir / 'token'} holds no usable token; delete it to get a new one"
    )
    assert done.stderr == told + "\n"


@pytest.mark.processes
def test_help_is_whole(tmp_path: Path) -> None:
    top = cli(tmp_path / "s.db", "--help").stdout
    for command in ("token", "start", "checkpoint", "finish", "serve", "runs"):
        assert f"\n    {command} " in top or f"\n    {command}\n" in top
    assert "bearer token" in cli(tmp_path / "s.db", "token", "--help").stdout


def _serve(db: Path, stdin: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(SCRIPT), "serve", "--db", str(db)],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=server_env(),
    )


@pytest.mark.processes
def test_serve_on_a_terminal_says_what_it_waits_for_and_serves(tmp_path: Path) -> None:
    terminal, stdin = pty.openpty()
    with _serve(tmp_path / "store.db", stdin) as server:
        os.close(stdin)
        try:
            assert server.stdout is not None and server.stderr is not None
            os.write(terminal, json.dumps(INITIALIZE).encode() + b"\n")
            answer = json.loads(server.stdout.readline())
            assert answer["id"] == 1 and answer["result"]["serverInfo"]["name"]
            os.write(terminal, b"\x04")  # Ctrl-D: end of input, the server stops
            assert server.wait(timeout=30) == 0
            told = server.stderr.read().decode()
        finally:
            server.kill()  # nothing once it has exited
            os.close(terminal)
    assert HINT in told
    assert "mcp-orchestrator install claude-code" in told and "serve --http" in told and "dashboard" in told


@pytest.mark.processes
def test_serve_started_by_a_client_says_nothing_of_it(tmp_path: Path) -> None:
    with _serve(tmp_path / "store.db", subprocess.PIPE) as server:
        out, err = server.communicate(json.dumps(INITIALIZE).encode() + b"\n", timeout=60)
    assert json.loads(out.splitlines()[0])["id"] == 1
    assert HINT.encode() not in err


def _spawn(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # --db first: everything after --command is the argv.
    return subprocess.run(
        [str(SCRIPT), "spawn", "--db", str(db), "--json", *args], capture_output=True, text=True, env=server_env()
    )


@pytest.mark.processes
def test_spawn_with_a_command_needs_no_agent(tmp_path: Path) -> None:
    spawned = _spawn(tmp_path / "store.db", "count the files", "--command", "/bin/true", "--flag")
    assert spawned.returncode == 0, spawned.stderr
    process = json.loads(spawned.stdout)["process"]
    assert process["profile"] == "command" and process["command"] == ["/bin/true", "--flag"]
    other = _spawn(tmp_path / "store.db", "count the files", "--agent", "claude", "--command", "/bin/true")
    assert other.returncode == 1 and "command is for agent='command' only" in other.stderr
