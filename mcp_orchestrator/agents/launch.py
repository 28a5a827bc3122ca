"""Starting and stopping sub-agent processes: the operating-system half of the supervisor.

``launch`` writes what the runner needs (argv, environment, stdin, log paths) into the run's
directory and starts the runner in a new session, so that it and the agent outlive the server
that launched them. The runner (``runner.py``) starts the agent in a process group of its
own, records its start, heartbeat and exit in the store, and kills the group when told to.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from ..config import ENV_CONFIG, ENV_DB, ENV_RUN_ID, Settings
from ..logs import log_path
from ..models import Agent
from ..profiles import Launch, launch_argv, launch_env, render

ENV_ATTEMPT = "MCP_ORCHESTRATOR_ATTEMPT"


def orchestrator_server(settings: Settings, run_id: str) -> tuple[list[str], dict[str, str]]:
    """The command (and environment) that serves this orchestrator's store over stdio to a sub-agent."""
    env = {ENV_DB: settings.db, ENV_RUN_ID: run_id}
    if settings.config_file is not None:
        env[ENV_CONFIG] = str(settings.config_file)
    return [sys.executable, "-m", "mcp_orchestrator", "serve"], env


def launch(item: Launch, settings: Settings) -> subprocess.Popen[bytes]:
    """Start the runner of a claimed sub-agent; returns at once (the runner reports by itself)."""
    agent, profile = item.agent, item.profile
    run_dir = settings.runs_dir / agent.run_id
    run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    command, server_env = orchestrator_server(settings, agent.run_id)
    mcp_config = _write_private(
        run_dir / "mcp.json",
        {"mcpServers": {"orchestrator": {"command": command[0], "args": command[1:], "env": server_env}}},
    )
    opencode_config = _write_private(
        run_dir / "opencode.json",
        {"mcp": {"orchestrator": {"type": "local", "command": command, "environment": server_env, "enabled": True}}},
    )
    values = {
        "prompt": item.prompt,
        "task": agent.prompt,
        "run_id": agent.run_id,
        "attempt": str(agent.attempt),
        "session_id": agent.session_id or "",
        "mcp_config": str(mcp_config),
        "opencode_config": str(opencode_config),
        "cwd": agent.cwd,
        "db": settings.db,
    }
    spec = {
        "run_id": agent.run_id,
        "attempt": agent.attempt,
        "argv": [*launch_argv(profile, agent.command, values, item.use_session), *_caps(item)],
        "env": {
            **server_env,
            ENV_ATTEMPT: str(agent.attempt),
            # A permission request may wait for a person up to approvals.wait_s: the harness's MCP
            # tool timeout (Claude Code's, in milliseconds) stays above it. The profile may set its own.
            "MCP_TOOL_TIMEOUT": str(int((settings.agents.approvals.wait_s + 60) * 1000)),
            **launch_env(profile, values),
        },
        "cwd": agent.cwd,
        "stdin": None if profile.stdin is None else render(profile.stdin, values),
        "input": profile.input,
        "stdout": str(log_path(run_dir, "stdout")),
        "stderr": str(log_path(run_dir, "stderr")),
        "output": profile.output,
        "profile": agent.profile,
        "db": settings.db,
        "node": settings.node,
        "config": None if settings.config_file is None else str(settings.config_file),
    }
    spec_path = _write_private(run_dir / f"attempt-{agent.attempt}.json", spec)
    with (run_dir / "runner.log").open("ab") as runner_log:
        return subprocess.Popen(
            [sys.executable, "-m", "mcp_orchestrator.runner", str(spec_path)],
            cwd=run_dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=runner_log,
            start_new_session=True,  # its own session: a signal to the server's group never reaches it
        )


def _caps(item: Launch) -> list[str]:
    """The harness's own options capping this attempt's spending and turns, where the profile names them."""
    caps = []
    if item.profile.budget_flag and item.budget_usd is not None:
        caps += [item.profile.budget_flag, f"{max(item.budget_usd, 0.0):.6f}"]
    if item.profile.turns_flag and item.max_turns is not None:
        caps += [item.profile.turns_flag, str(max(item.max_turns, 1))]
    return caps


def _write_private(path: Path, document: Any) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump(document, file, indent=2)
    return path


def runner_alive(agent: Agent) -> bool:
    """Whether the sub-agent's runner process (on this host) still exists."""
    return agent.pid is not None and process_alive(agent.pid)


def process_alive(pid: int) -> bool:
    """Whether a process exists on this host; a zombie (exited, not yet reaped) does not count.
    psutil tells a zombie on every platform (reading /proc would be Linux-only)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # another user's process: it exists
        return True


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_group(pgid: int, grace_s: float) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left after ``grace_s`` seconds."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and group_alive(pgid):
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
