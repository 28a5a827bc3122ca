"""The real Claude Code as a client of the MCP tasks extension: run interactively (in a pseudo-terminal) it
declares ``io.modelcontextprotocol/tasks``, takes spawn_subagent's task into the background, polls it with
tasks/get and, once the sub-agent's run has ended, hands its result to the model as a task notification.
While the sub-agent waits for a permission decision, the task asks for it as a form elicitation: Claude Code
shows its dialog in the terminal, and the person's answer comes back with tasks/update.
In print mode (``-p``) it declares nothing, and the same call answers at once as before. The server is the
stdio one Claude Code starts from ``--mcp-config``; the sub-agent is the fake agent; only the model is
stood in for."""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import sqlite3
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pyte
import pytest
from mcp import Client, StdioServerParameters

from .claude_code import DUMMY_API_KEY, claude_binary, claude_env, run_claude
from .model_standin import JSON, Standin, Turn, text, tool_use
from .subagent_helpers import write_config
from .support import call, eventually, query, server_env, server_pids

pytestmark = [pytest.mark.anyio, pytest.mark.processes]

SPAWN = "mcp__orchestrator__spawn_subagent"
OUTPUT = "the sub-agent says 4711"
NOTIFICATION = "<task-notification>"
LINES, COLUMNS = 40, 120
RIGHT, ENTER = "\x1b[C", "\r"
# Claude Code binds a dialog's keys just after drawing it: a key typed at once may go to the old handler.
SETTLE_S = 0.25


def serve_args(tmp_path: Path, db: Path) -> list[str]:
    """Our stdio server on the test's store, whose 'fake' profile runs tests/fake_agent.py."""
    return ["-m", "mcp_orchestrator", "serve", "--db", str(db), "--config", str(write_config(tmp_path))]


def mcp_config(tmp_path: Path, db: Path, state: Path) -> Path:
    """An MCP config naming our stdio server."""
    server = {
        "command": sys.executable,
        "args": serve_args(tmp_path, db),
        "env": {"XDG_STATE_HOME": str(state.parent)},  # the sub-agents' logs stay in the test's directory
    }
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps({"mcpServers": {"orchestrator": server}}))
    return path


def spawn_fake(workdir: Path) -> Turn:
    """The model starts the fake sub-agent, which checkpoints and finishes with OUTPUT."""
    task = {"steps": ["one"], "output": OUTPUT}
    return tool_use(SPAWN, {"agent": "fake", "prompt": json.dumps(task), "cwd": str(workdir)})


def answer(body: JSON) -> Turn:
    return text("the sub-agent is done" if NOTIFICATION in last_user_text(body) else "waiting for the sub-agent")


def last_user_text(body: JSON) -> str:
    users = [message for message in body.get("messages", []) if message.get("role") == "user"]
    content = users[-1]["content"] if users else ""
    if isinstance(content, str):
        return content
    return "".join(block.get("text", "") for block in content if isinstance(block, dict))


def task_rows(db: Path) -> list[dict[str, Any]]:
    return [json.loads(doc) for (doc,) in query(db, "SELECT doc FROM tasks ORDER BY task_id")] if db.exists() else []


def after_runs_ended(db: Path, turn: Turn, timeout: float = 30) -> Turn:
    """``turn``, once every run in the store has ended (polled: a scripted turn runs in the stand-in's thread)."""
    deadline = time.monotonic() + timeout
    while query(db, "SELECT status FROM runs WHERE status NOT IN ('completed', 'failed', 'cancelled')"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the sub-agent's run did not end within {timeout} s")
        time.sleep(0.05)
    return turn


def spawned_runs(db: Path) -> list[str]:
    """The runs the store's tasks are about; none while the server is still creating the store."""
    try:
        return [run_id for (run_id,) in query(db, "SELECT run_id FROM tasks")] if db.exists() else []
    except sqlite3.OperationalError:  # the schema is not there yet
        return []


async def until_drawn(screen: Screen, *parts: str, timeout: float = 10) -> None:
    """Wait until Claude Code's terminal shows every part; if it does not, say what it shows."""
    wanted = [re.sub(r"\s+", "", part) for part in parts]
    try:
        await eventually(lambda: all(part in screen.shown() for part in wanted), timeout=timeout)
    except AssertionError:
        raise AssertionError(f"{parts} not shown; the terminal shows: {screen.shown()!r}") from None


async def press(screen: Screen, key: str, then: str = "") -> None:
    """Type ``key`` into the dialog on screen and wait until the terminal shows ``then``."""
    await anyio.sleep(SETTLE_S)
    screen.type(key)
    await until_drawn(screen, then)


def trusted_config_dir(config_dir: Path, workdir: Path) -> Path:
    """Claude Code's first-run dialogs answered in advance: onboarding, theme, the folder trusted, the API
    key approved (its last 20 characters), so that the prompt on the command line is submitted at once."""
    config_dir.mkdir(parents=True, exist_ok=True)
    answered = {
        "hasCompletedOnboarding": True,
        "theme": "dark",
        "projects": {str(workdir): {"hasTrustDialogAccepted": True, "hasCompletedProjectOnboarding": True}},
        "customApiKeyResponses": {"approved": [DUMMY_API_KEY[-20:]], "rejected": []},
    }
    (config_dir / ".claude.json").write_text(json.dumps(answered))
    return config_dir


class Screen:
    """Claude Code's terminal, emulated: its renderer redraws only the cells that change, so what it wrote
    is no guide to what shows; ``type`` sends it keys."""

    def __init__(self, controller: int) -> None:
        self.controller = controller
        self.terminal = pyte.Screen(COLUMNS, LINES)
        self.stream = pyte.ByteStream(self.terminal)
        self.lock = threading.Lock()

    def feed(self, data: bytes) -> None:
        with self.lock:
            self.stream.feed(data)

    def shown(self) -> str:
        """The screen's text without whitespace: Ink wraps long lines, so only the characters' order is
        stable."""
        with self.lock:
            return re.sub(r"\s+", "", "".join(self.terminal.display))

    def type(self, keys: str) -> None:
        os.write(self.controller, keys.encode())


@contextmanager
def interactive_claude(args: list[str], cwd: Path, env: dict[str, str]) -> Iterator[Screen]:
    """`claude ARGS` in a pseudo-terminal (its entrypoint is then "cli", not "sdk-cli"); yields its screen
    (kept drained so that it never blocks on the terminal), killed with its children after."""
    controller, terminal = os.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", LINES, COLUMNS, 0, 0))
    command = [str(claude_binary()), *args]
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdin=terminal, stdout=terminal, stderr=terminal, start_new_session=True
    )
    os.close(terminal)
    screen = Screen(controller)

    def drain() -> None:
        while True:
            try:
                data = os.read(controller, 65536)
            except OSError:  # the terminal closed: Claude Code exited
                return
            if not data:
                return
            screen.feed(data)

    reader = threading.Thread(target=drain, name="claude-pty", daemon=True)
    reader.start()
    try:
        yield screen
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # Claude Code and the stdio server it started
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        reader.join(10)
        os.close(controller)


def interactive_session(tmp_path: Path, private_state_dir: Path) -> tuple[Path, Path, Path, list[str]]:
    """The store, the working directory, a trusted config dir, and the arguments of an interactive
    session whose first prompt is submitted at once, with our server the only one."""
    db, workdir = tmp_path / "store.db", tmp_path / "work"
    workdir.mkdir()
    config_dir = trusted_config_dir(tmp_path / "claude-config", workdir)
    args = ["--mcp-config", str(mcp_config(tmp_path, db, private_state_dir)), "--strict-mcp-config"]
    args += ["--allowedTools", SPAWN, "--", "start a sub-agent"]  # the prompt, submitted at once
    return db, workdir, config_dir, args


async def test_interactive_claude_code_polls_the_spawn_as_a_task_and_hands_its_result_to_the_model(
    tmp_path: Path, private_state_dir: Path
) -> None:
    db, workdir, config_dir, args = interactive_session(tmp_path, private_state_dir)
    with Standin([spawn_fake(workdir), *[answer] * 5]) as standin:
        env = claude_env(standin, config_dir, TERM="xterm-256color")
        with interactive_claude(args, workdir, env) as screen:

            def notified() -> JSON | None:
                told = [r.body for r in standin.scripted_requests if NOTIFICATION in last_user_text(r.body)]
                return told[0] if told else None

            try:
                notice = last_user_text(await eventually(notified, timeout=60, interval=0.1))
            except AssertionError:
                raise AssertionError(f"no task notification; the terminal shows: {screen.shown()!r}") from None
        first = standin.tool_results(standin.scripted_requests[1])
    # The spawn was answered with a task (the call declared the extension) and polled with tasks/get until
    # the sub-agent's run ended: only tasks/get marks a task completed.
    (task,) = task_rows(db)
    assert (task["tool"], task["status"]) == ("spawn_subagent", "completed"), task
    # The model was told at once that the call went to the background, not the run's result...
    assert len(first) == 1 and not first[0].is_error
    assert f"started server-side task {task['task_id']}" in first[0].text
    assert "moved to the background" in first[0].text and '"run_id"' not in first[0].text
    # ...and then the result, as the tool itself answers it: the run, completed with the agent's output.
    assert f"MCP task {task['task_id']} (orchestrator/spawn_subagent) completed" in notice
    assert "<status>completed</status>" in notice and f'"run_id":"{task["run_id"]}"' in notice
    assert f'"output":{{"output":"{OUTPUT}","attempt":1}}' in notice and '"status":"completed"' in notice
    await eventually(lambda: not server_pids(db))  # the stdio server ended with Claude Code


async def test_in_print_mode_claude_code_declares_no_tasks_and_the_spawn_answers_at_once(
    tmp_path: Path, private_state_dir: Path
) -> None:
    db, workdir = tmp_path / "store.db", tmp_path / "work"
    workdir.mkdir()
    args = ["--mcp-config", str(mcp_config(tmp_path, db, private_state_dir)), "--strict-mcp-config"]
    # The model's next turn waits for the sub-agent's run to end, so that nothing outlives the test.
    with Standin([spawn_fake(workdir), lambda body: after_runs_ended(db, text("spawned"))]) as standin:
        done = run_claude(
            standin, tmp_path / "claude-config", workdir, "start a sub-agent", *args, "--allowedTools", SPAWN
        )
        assert done.result["subtype"] == "success", done.stderr[-2000:]
        (spawned,) = standin.tool_results(standin.scripted_requests[1])
    assert task_rows(db) == []  # `-p` is entrypoint "sdk-cli": the extension is stripped from its requests
    answered = json.loads(spawned.text)
    assert answered["run"]["run_id"] and answered["process"]["profile"] == "fake"


async def test_interactive_claude_code_asks_its_user_a_subagents_permission_request_and_answers_the_task(
    tmp_path: Path, private_state_dir: Path
) -> None:
    db, workdir, config_dir, args = interactive_session(tmp_path, private_state_dir)
    slow = tool_use(SPAWN, {"agent": "fake", "prompt": json.dumps({"sleep": 30}), "cwd": str(workdir)})
    # A second server on the store stands in for the sub-agent's Claude Code asking permission.
    lead = StdioServerParameters(command=sys.executable, args=serve_args(tmp_path, db), env=server_env())
    with Standin([slow, *[text("waiting for the sub-agent")] * 5]) as standin:
        env = claude_env(standin, config_dir, TERM="xterm-256color")
        with interactive_claude(args, workdir, env) as screen:
            (child,) = await eventually(lambda: spawned_runs(db), timeout=60)
            async with Client(lead) as client:
                answered: list[dict[str, Any]] = []

                async def ask() -> None:
                    arguments = {"tool_name": "Bash", "input": {"command": "npm test"}, "run_id": child}
                    answer = await client.call_tool("permission_prompt", arguments)
                    answered.append(json.loads(answer.content[0].text))  # type: ignore[union-attr]

                async with anyio.create_task_group() as group:
                    group.start_soon(ask)
                    # The spawn's task turns input_required; Claude Code's next tasks/get shows the request as
                    # its elicitation dialog: the server's message, the form's fields, Accept and Decline.
                    asked = f'Sub-agent run {child} asks to use Bash with {{"command": "npm test"}}. Allow it?'
                    dialog = ["MCP server “orchestrator” requests your input", asked, "Decision", "Accept Decline"]
                    await until_drawn(screen, *dialog, timeout=30)
                    await press(screen, RIGHT, "◯ allow ◯ deny")  # the decision's choices, unfolded
                    await press(screen, ENTER, "Decision: allow")  # chosen; on to the optional message
                    await press(screen, ENTER, "❯ Accept")  # the message left unset; on to the buttons
                    await press(screen, ENTER)  # Accept: Claude Code sends tasks/update with the form's content
                    await eventually(lambda: answered, timeout=20)
                assert answered == [{"behavior": "allow", "updatedInput": {"command": "npm test"}}]
                (approval,) = (await call(client, "list_approvals", run_id=child, status="decided"))["approvals"]
                decision = approval["decision"]
                assert (decision["behavior"], decision["by"], decision["source"]) == ("allow", "person", "mcp-task")
                assert decision["message"] is None  # the optional message was left unset: Claude Code sends none
                await eventually(lambda: [task["status"] for task in task_rows(db)] == ["working"], timeout=10)
                await call(client, "cancel_run", run_id=child)

                async def reaped() -> bool:  # the sub-agent's process is killed and its exit recorded
                    return (await call(client, "status", run_id=child))["process"]["state"] == "done"

                await eventually(reaped, timeout=20)
