"""A fake coding agent that is a real program: it talks MCP to the orchestrator like Claude Code would.

Two ways to run it:

  fake_agent.py agent TASK_JSON MCP_CONFIG   what a 'command'-style profile starts
  fake_agent.py claude ARGV...               a quick stand-in for Claude Code's headless mode: checks
                                             the argv it is given and prints its stream-json shape
                                             (the real Claude Code is tested in test_claude_code.py)

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
    (its init line with the session id first, its result last)."""
    assert argv[0] == "-p", argv
    prompt = argv[1]
    options = argv[2:]
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
    print(json.dumps(result))
    return code


if __name__ == "__main__":
    mode, *rest = sys.argv[1:]
    sys.exit(as_claude(rest) if mode == "claude" else as_agent(rest))
