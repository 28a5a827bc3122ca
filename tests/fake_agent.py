"""A fake coding agent that is a real program: it talks MCP to the orchestrator like Claude Code would.

Four ways to run it:

  fake_agent.py agent TASK_JSON MCP_CONFIG   what a 'command'-style profile starts
  fake_agent.py claude ARGV...               a quick stand-in for Claude Code's headless mode: checks
                                             the argv it is given and prints its stream-json shape
                                             (the real Claude Code is tested in test_claude_code.py)
  fake_agent.py stream SCRIPT_JSON           prints Claude Code's stream-json for a scripted session
                                             (init, tool calls and their results, texts, a result)
  fake_agent.py listen SCRIPT_JSON           Claude Code with --input-format stream-json: answers each
                                             user line on stdin with a turn and a result, exits at EOF

The task is JSON: {"steps": [...], "sleep": s, "wait": "event-name", "finish": true,
"crash_attempts": n, "exit": code, "output": any}. It reads its run id from
MCP_ORCHESTRATOR_RUN_ID and its attempt from MCP_ORCHESTRATOR_ATTEMPT.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from mcp import Client, StdioServerParameters


async def work(task: dict[str, Any], config_path: str) -> tuple[int, str]:
    """Do the task through the orchestrator's tools; returns (exit code, final text)."""
    run_id = os.environ["MCP_ORCHESTRATOR_RUN_ID"]
    attempt = int(os.environ["MCP_ORCHESTRATOR_ATTEMPT"])
    if attempt <= task.get("crash_attempts", 0):
        print(f"attempt {attempt}: crashing on purpose", file=sys.stderr)
        return 3, ""
    await asyncio.sleep(task.get("sleep", 0))
    server = json.loads(Path(config_path).read_text())["mcpServers"]["orchestrator"]
    params = StdioServerParameters(command=server["command"], args=server["args"], env={**os.environ, **server["env"]})
    async with Client(params) as client:

        async def call(tool: str, **arguments: Any) -> dict[str, Any]:
            result = await client.call_tool(tool, arguments)
            if result.is_error:
                raise SystemExit(f"{tool} failed: {result.content[0].text}")
            return result.structured_content or {}

        for step in task.get("steps", []):
            await call("checkpoint", run_id=run_id, step=step, output={"attempt": attempt})
        if "wait" in task:
            waited = await call("wait_for_event", run_id=run_id, step="wait", event=task["wait"], block_s=0)
            if waited["status"] == "waiting":
                print("waiting for", task["wait"], "- exiting until resumed")
                return 0, "waiting"
            await call("checkpoint", run_id=run_id, step="after-wait", output=waited["event"]["data"])
        if task.get("finish", True):
            await call("finish_run", run_id=run_id, output={"output": task.get("output"), "attempt": attempt})
    print(f"done on attempt {attempt}")
    return task.get("exit", 0), f"done: {task.get('output')}"


def as_agent(argv: list[str]) -> int:
    task_json, config = argv
    code, _ = asyncio.run(work(json.loads(task_json), config))
    return code


def as_claude(argv: list[str]) -> int:
    """Check the argv the built-in claude profile builds, then work and print Claude's stream-json lines
    (its init line with the session id first, its result last). The prompt is the argument after -p or,
    with --input-format stream-json, the first user line on stdin (it then reads on to the end of stdin,
    which the runner closes once it has seen the result)."""
    assert argv[0] == "-p", argv
    streamed = "--input-format" in argv
    if streamed:
        options = argv[1:]
        assert options[options.index("--input-format") + 1] == "stream-json", argv
        prompt = "".join(part["text"] for part in json.loads(sys.stdin.readline())["message"]["content"])
    else:
        prompt, options = argv[1], argv[2:]
    assert options[options.index("--output-format") + 1] == "stream-json" and "--verbose" in options, argv
    config = options[options.index("--mcp-config") + 1]
    assert "mcp__orchestrator" in options[options.index("--allowedTools") + 1], argv
    assert "mcpServers" in json.loads(Path(config).read_text()), config
    sessions = Path(os.environ["FAKE_CLAUDE_SESSIONS"])
    sessions.mkdir(exist_ok=True)
    if "--resume" in options:
        session_id = options[options.index("--resume") + 1]
        state = json.loads((sessions / f"{session_id}.json").read_text())  # fails unless the session is ours
        assert "Task:" not in prompt, "a session resume is sent the resume message only"
        state["resumes"].append(prompt)
    else:
        found = re.search(r"Task:\n(.*)\Z", prompt, re.S)
        assert found, "the first prompt carries the preamble and the task"
        session_id = str(uuid.uuid4())
        state = {"task": json.loads(found[1]), "resumes": []}
    (sessions / f"{session_id}.json").write_text(json.dumps(state))
    print(json.dumps({"type": "system", "subtype": "init", "session_id": session_id}), flush=True)
    code, text = asyncio.run(work(state["task"], config))
    result = {"type": "result", "subtype": "success", "is_error": code != 0, "result": text, "session_id": session_id}
    print(json.dumps(result), flush=True)
    if streamed:
        sys.stdin.read()
    return code


MODEL = "claude-sonnet-4-5"
# Tool calls a scripted session makes in turn, each with the words of its result.
TOOL_CALLS: list[tuple[str, dict[str, Any], str]] = [
    ("Read", {"file_path": "src/app/models.py"}, "     1\tfrom dataclasses import dataclass\n     2\t..."),
    ("Grep", {"pattern": "def handle_", "path": "src"}, "src/app/views.py:12:def handle_login(request):"),
    ("Bash", {"command": "pytest -q tests/test_views.py", "description": "Run the view tests"}, "3 passed in 0.41s"),
    ("Edit", {"file_path": "src/app/views.py", "old_string": "return None", "new_string": "return user"}, "ok"),
    ("mcp__orchestrator__checkpoint", {"run_id": "r1", "step": "edit-views"}, '{"status": "recorded"}'),
]


class ScriptedSession:
    """Claude Code's stream-json for a session driven by a script: {"tools": calls per turn, "pause_s":
    seconds before each tool result, "fail_every": every n-th call fails, "cost": dollars per turn,
    "session_id": ...}. Costs and model usage are cumulative over the session's results, as Claude
    Code's are; ``model_usage_since_last_result`` holds each result's own share."""

    def __init__(self, script: dict[str, Any]) -> None:
        self.script = script
        self.session_id = script.get("session_id") or str(uuid.uuid4())
        self.calls = 0
        self.answers = 0
        self.results = 0
        self.turns = 0
        self.totals = self._usage(0, 0.0)

    def init(self) -> None:
        tools = sorted({name for name, _, _ in TOOL_CALLS})
        self._emit({"type": "system", "subtype": "init", "model": MODEL, "cwd": os.getcwd(), "tools": tools})

    def turn(self, answer: str) -> None:
        """Tool calls (an assistant line with the call, a user line with its result), then the answer."""
        for _ in range(self.script.get("tools", 0)):
            name, arguments, output = TOOL_CALLS[self.calls % len(TOOL_CALLS)]
            self.calls += 1
            call_id = f"toolu_{self.calls:08d}"
            fails = self.script.get("fail_every", 0) and self.calls % self.script["fail_every"] == 0
            self._assistant([{"type": "tool_use", "id": call_id, "name": name, "input": arguments}])
            time.sleep(self.script.get("pause_s", 0))
            result = {"type": "tool_result", "tool_use_id": call_id, "content": output, "is_error": bool(fails)}
            self._emit({"type": "user", "message": {"role": "user", "content": [result]}, "parent_tool_use_id": None})
        self._assistant([{"type": "text", "text": answer}])
        self.result(answer)

    def result(self, answer: str) -> None:
        turns = self.script.get("tools", 0) + 1
        own = self._usage(turns, float(self.script.get("cost", 0.01)))
        self.totals = {key: self.totals[key] + own[key] for key in own}
        self.turns += turns
        self._emit(
            {
                "type": "result",
                "subtype": "success",
                "is_error": False,
                "duration_ms": 1200,
                "duration_api_ms": 900,
                "num_turns": self.turns,
                "result": answer,
                "stop_reason": "end_turn",
                "total_cost_usd": round(self.totals["costUSD"], 6),
                "usage": {"input_tokens": own["inputTokens"], "output_tokens": own["outputTokens"]},
                "modelUsage": {MODEL: self.totals},
                "model_usage_since_last_result": {MODEL: own},
                "result_index": self.results,
                "permission_denials": [],
            }
        )
        self.results += 1

    @staticmethod
    def _usage(turns: int, cost: float) -> dict[str, Any]:
        return {
            "inputTokens": 40 * turns,
            "outputTokens": 120 * turns,
            "cacheReadInputTokens": 2000 * turns,
            "cacheCreationInputTokens": 300 * turns,
            "webSearchRequests": 0,
            "costUSD": cost,
        }

    def _assistant(self, content: list[dict[str, Any]]) -> None:
        """One model answer (each of Claude Code's assistant lines holds one block of an answer)."""
        self.answers += 1
        usage = {"input_tokens": 40, "output_tokens": 120, "cache_read_input_tokens": 2000}
        message = {
            "id": f"msg_{self.answers:08d}",
            "role": "assistant",
            "model": MODEL,
            "content": content,
            "usage": usage,
        }
        self._emit({"type": "assistant", "message": message, "parent_tool_use_id": None})

    def _emit(self, message: dict[str, Any]) -> None:
        print(json.dumps({**message, "session_id": self.session_id}), flush=True)


def as_stream(argv: list[str]) -> int:
    """Print a scripted session: init, then {"turns": n} turns of tool calls, each ending in a result."""
    script = json.loads(argv[0])
    session = ScriptedSession(script)
    session.init()
    for turn in range(script.get("turns", 1)):
        session.turn(f"turn {turn + 1} done")
    return 0


def as_listener(argv: list[str]) -> int:
    """Claude Code with --input-format stream-json: each user line on stdin gets an init line, a turn (the
    script's tool calls) and a result that echoes its text ("echo: TEXT"); EOF ends the session with exit
    0. With "hold_file", the first answer waits until that file exists (so a test can send a message
    meanwhile)."""
    script = json.loads(argv[0])
    session = ScriptedSession(script)
    hold = Path(script["hold_file"]) if "hold_file" in script else None
    for line in sys.stdin:
        message = json.loads(line)
        assert message["type"] == "user" and message["message"]["role"] == "user", message
        text = "".join(part["text"] for part in message["message"]["content"] if part["type"] == "text")
        print(f"read a user line: {text!r}", file=sys.stderr, flush=True)
        session.init()
        while hold is not None and not hold.exists():
            time.sleep(0.02)
        hold = None
        session.turn(f"echo: {text}")
    print("stdin closed: ending the session", file=sys.stderr, flush=True)
    return 0


MODES = {"claude": as_claude, "stream": as_stream, "listen": as_listener}

if __name__ == "__main__":
    mode, *rest = sys.argv[1:]
    sys.exit(MODES.get(mode, as_agent)(rest))
