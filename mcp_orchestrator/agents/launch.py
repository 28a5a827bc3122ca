"""Starting and stopping sub-agent processes: the operating-system half of the supervisor.

``Launcher.launch`` writes what the runner needs (argv, environment, stdin, log paths) into the
run's directory and starts the runner in a new session, so that it and the agent outlive the
server that launched them. The runner (``runner.py``) starts the agent in a process group of its
own, records its start, heartbeat and exit in the store, and kills the group when told to.

A runner is forked by the launcher: a process of the runner's own code (``runner.py --launcher``)
that imported the engine once. A new interpreter would start the agent as quickly, but would then
import the engine (half a second of CPU or more each time): through a limit of 8 on two cores,
eight runners importing at once delay their neighbours' exits and starts by seconds
(``benchmarks/subagents.py``). While the launcher imports, or when it cannot be started, a runner
is a new interpreter of its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..config import ENV_CONFIG, ENV_DB, ENV_RUN_ID, Settings
from ..logs import log_path
from ..models import Agent
from ..profiles import Launch, launch_argv, launch_env, render

ENV_ATTEMPT = "MCP_ORCHESTRATOR_ATTEMPT"
RUNNER = [sys.executable, "-m", "mcp_orchestrator.runner"]
LAUNCHER_FLAG = "--launcher"  # the runner's module as the launcher (see the module docstring)
LAUNCHER_IDLE_S = 300.0  # an idle launcher ends after this (it holds the engine's memory); the next launch starts one
FORKS = hasattr(os, "fork")  # elsewhere every runner is an interpreter of its own
LAUNCHER_ANSWER_S = 10.0  # a fork answers in milliseconds; a launcher silent this long is stopped
LAUNCHER_RETRY_S = 60.0  # after a launcher that ended before it was ready (it cannot import, say), none for this long


def orchestrator_server(settings: Settings, run_id: str) -> tuple[list[str], dict[str, str]]:
    """The command (and environment) that serves this orchestrator's store over stdio to a sub-agent."""
    env = {ENV_DB: settings.db, ENV_RUN_ID: run_id}
    if settings.config_file is not None:
        env[ENV_CONFIG] = str(settings.config_file)
    return [sys.executable, "-m", "mcp_orchestrator", "serve"], env


class Launcher:
    """Starts the runners of claimed sub-agents: forked by the launcher process once it is ready, else
    (while it imports, or when it cannot be started) each a new interpreter. The launcher starts with
    the first launch and ends after ``LAUNCHER_IDLE_S`` without one."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._launcher: subprocess.Popen[bytes] | None = None
        self._ready = False  # the launcher said it imported the engine
        self._used_at = 0.0  # monotonic time of the last launch
        self._retry_at = 0.0  # monotonic time before which no launcher is started
        self._runners: list[subprocess.Popen[bytes]] = []  # started as interpreters: reaped here

    def launch(self, item: Launch) -> None:
        """Start the runner of a claimed sub-agent; returns once it runs (it reports by itself).
        OSError when it cannot be started."""
        spec = write_spec(item, self.settings)
        self._used_at = time.monotonic()
        launcher = self._ready_launcher()
        if launcher is None or not _fork_runner(launcher, spec):
            self._runners.append(start_runner(spec))

    def collect(self) -> None:
        """Reap runners that exited (no zombie lingers, none counts as alive); end an idle launcher."""
        self._runners = [runner for runner in self._runners if runner.poll() is None]
        if self._launcher is not None and time.monotonic() - self._used_at > LAUNCHER_IDLE_S:
            self.close()

    def close(self) -> None:
        """End the launcher: it ends at the end of its input (reaped by ``collect``); its runners live
        on, in sessions of their own."""
        launcher, self._launcher, self._ready = self._launcher, None, False
        if launcher is None:
            return
        for pipe in (launcher.stdin, launcher.stdout):
            with contextlib.suppress(OSError):
                if pipe is not None:
                    pipe.close()
        self._runners.append(launcher)

    def _ready_launcher(self) -> subprocess.Popen[bytes] | None:
        """The launcher once it is ready; None until then (started here when it is not running)."""
        if not FORKS:
            return None
        if self._launcher is None or self._launcher.poll() is not None:
            if self._launcher is not None and not self._ready:  # it failed to start: not again at every launch
                self._retry_at = time.monotonic() + LAUNCHER_RETRY_S
            self.close()  # one that ended (killed, say) is reaped
            if time.monotonic() < self._retry_at:
                return None
            with contextlib.suppress(OSError):  # none: runners start as interpreters
                self._launcher = subprocess.Popen(
                    [*RUNNER, LAUNCHER_FLAG], stdin=subprocess.PIPE, stdout=subprocess.PIPE
                )
            return None
        if not self._ready:
            self._ready = _answer(self._launcher, 0) == {"ready": True}
        return self._launcher if self._ready else None


def _fork_runner(launcher: subprocess.Popen[bytes], spec: Path) -> bool:
    """Have the launcher fork the runner of ``spec``; False when it is gone before reading the request
    (the runner is to be started otherwise). OSError when it cannot fork, or ended or hung after reading
    the request: whether it forked is then unknown, so the attempt fails (and is retried); a runner it
    did fork finds its attempt gone at its first report, and stops."""
    assert launcher.stdin is not None
    try:
        launcher.stdin.write(json.dumps(str(spec)).encode() + b"\n")
        launcher.stdin.flush()
    except OSError:
        launcher.kill()
        return False
    answer = _answer(launcher, LAUNCHER_ANSWER_S)
    if answer is None or not ("pid" in answer or "error" in answer):
        launcher.kill()
        raise OSError("the launcher ended or hung before answering")
    if "error" in answer:
        raise OSError(answer.get("errno") or 0, answer["error"])
    return True


def _answer(launcher: subprocess.Popen[bytes], timeout_s: float) -> dict[str, Any] | None:
    """The launcher's next answer (a JSON object a line), waited for up to ``timeout_s``; None without one."""
    assert launcher.stdout is not None
    ready, _, _ = select.select([launcher.stdout], [], [], timeout_s)
    try:
        answer = json.loads(launcher.stdout.readline() or "null") if ready else None
    except (OSError, ValueError):
        return None
    return answer if isinstance(answer, dict) else None


def start_runner(spec: Path) -> subprocess.Popen[bytes]:
    """Start the runner of ``spec`` as a new interpreter, in a new session."""
    run_dir = spec.parent
    with (run_dir / "runner.log").open("ab") as runner_log:
        return subprocess.Popen(
            [*RUNNER, str(spec)],
            cwd=run_dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=runner_log,
            start_new_session=True,  # its own session: a signal to the server's group never reaches it
        )


def write_spec(item: Launch, settings: Settings) -> Path:
    """Write what the runner of a claimed sub-agent needs into its run's directory; returns the spec's path."""
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
    return _write_private(run_dir / f"attempt-{agent.attempt}.json", spec)


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
    psutil tells a zombie on every platform (reading /proc would be Linux-only); imported here, as the
    runner, which imports this module, has no use for it."""
    import psutil

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
