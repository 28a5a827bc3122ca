"""Hostile input over stdio: every request gets an answer, even one the SDK cannot read.

These speak raw JSON-RPC lines to a real ``mcp-orchestrator serve`` subprocess, because a client
library refuses to encode most of them (lone surrogates, nesting 10,000 deep, huge integers).
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from mcp.server.mcpserver.exceptions import ToolError

from mcp_orchestrator.models import StatusInput, StatusResult
from mcp_orchestrator.tools._base import call_primitive

from .conftest import server_env

ANSWER_WITHIN_S = 5.0


class RawStdio:
    """``mcp-orchestrator serve`` over stdio, driven line by line."""

    def __init__(self, db: str | Path, cwd: str | Path | None = None, **env: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mcp_orchestrator", "serve", "--db", str(db)],
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=server_env(**env),
        )
        self.answers: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.next_id = 1000

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.answers.put(json.loads(line))

    def send(self, line: str | bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((line.encode() if isinstance(line, str) else line) + b"\n")
        self.process.stdin.flush()

    def answer(self, request_id: Any, timeout: float = ANSWER_WITHIN_S, or_null: bool = False) -> dict[str, Any]:
        """The next answer, which must be to ``request_id`` (requests here are sent one at a time), or
        with ``or_null`` an error with id null (JSON-RPC's answer to a line whose id cannot be read)."""
        try:
            message = self.answers.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no answer to request {request_id!r} within {timeout}s") from None
        unread = or_null and message.get("id") is None and message.get("error", {}).get("code") in (-32700, -32600)
        assert message.get("id") == request_id or unread, message
        return message

    def request(
        self, method: str, params: dict[str, Any] | None = None, timeout: float = ANSWER_WITHIN_S
    ) -> dict[str, Any]:
        self.next_id += 1
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": self.next_id, "method": method}
        if params is not None:
            message["params"] = params
        self.send(json.dumps(message))
        return self.answer(self.next_id, timeout)

    def call_tool(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        return self.request("tools/call", {"name": name, "arguments": arguments})

    def initialize(self) -> RawStdio:
        client = {"name": "raw", "version": "1"}
        init = self.request(
            "initialize", {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": client}, 60
        )
        assert "result" in init, init
        self.send(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        return self

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        assert self.process.stdout is not None
        self.process.stdout.close()


def tool_call(request_id: int, arguments: str) -> str:
    """A tools/call line whose arguments object is given as raw JSON text."""
    return (
        f'{{"jsonrpc":"2.0","id":{request_id},"method":"tools/call",'
        f'"params":{{"name":"start_run","arguments":{arguments}}}}}'
    )


UNREADABLE = [
    ("nested 10,000 deep", tool_call(1, '{"name":"x","input":' + "[" * 10_000 + "]" * 10_000 + "}"), 1, -32602),
    ("nested 250 deep", tool_call(2, '{"name":"x","input":' + '{"a":' * 250 + "1" + "}" * 250 + "}"), 2, -32602),
    ("lone surrogate", tool_call(3, '{"name":"\\ud800"}'), 3, -32602),
    ("lone low surrogate", tool_call(4, '{"name":"x","input":"a\\udc00b"}'), 4, -32602),
    ("5,000-digit integer", tool_call(5, '{"name":"x","input":' + "9" * 5000 + "}"), 5, -32602),
    ("params not an object", '{"jsonrpc":"2.0","id":"six","method":"tools/call","params":5}', "six", -32602),
    ("no method", '{"jsonrpc":"2.0","id":7}', 7, -32600),
    ("invalid JSON", '{"jsonrpc":"2.0","id":8,', None, -32700),
    ("not an object", "[1, 2]", None, -32600),
    ("a bare string", '"hello"', None, -32600),
    ("a boolean id", '{"jsonrpc":"2.0","id":true,"method":"tools/list","params":5}', None, -32600),
]


@pytest.fixture(scope="module")
def raw_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    home = tmp_path_factory.mktemp("stdio-hostile")
    server = RawStdio(home / "store.db", XDG_STATE_HOME=str(home / "state"), MCP_ORCHESTRATOR_MAX_PAYLOAD_BYTES="4096")
    yield server.initialize()
    server.close()


@pytest.mark.parametrize(
    ("line", "request_id", "code"), [case[1:] for case in UNREADABLE], ids=[c[0] for c in UNREADABLE]
)
def test_every_unreadable_request_is_answered(raw_server: RawStdio, line: str, request_id: Any, code: int) -> None:
    raw_server.send(line)
    answer = raw_server.answer(request_id)
    assert answer["error"]["code"] == code, answer
    assert answer["error"]["message"], answer
    started = raw_server.call_tool("start_run", {"name": "after"})  # the server still serves
    assert started["result"]["structuredContent"]["run"]["name"] == "after", started


def test_a_line_over_the_limit_is_refused_without_reading_it_whole(raw_server: RawStdio) -> None:
    limit = 8 * 4096 + 64 * 1024
    raw_server.send(tool_call(9, json.dumps({"name": "x", "input": "y" * (3 * limit)})))
    answer = raw_server.answer(None)
    assert answer["error"]["code"] == -32600 and f"longer than {limit} bytes" in answer["error"]["message"]
    assert raw_server.request("ping")["result"] == {}


def test_a_bad_notification_gets_no_answer_and_breaks_nothing(raw_server: RawStdio) -> None:
    raw_server.send('{"jsonrpc":"2.0","method":"notifications/progress","params":{"x":"\\ud800"}}')
    assert raw_server.request("ping")["result"] == {}  # the next answer is the ping's, not one to the notification


@pytest.mark.parametrize(
    ("tool", "arguments", "expected"),
    [
        ("start_run", {}, "invalid_input: invalid arguments: name: Field required"),
        ("list_runs", {"limit": "many"}, "invalid_input: invalid arguments: limit: Input should be a valid integer"),
        ("status", {"run_id": {"a": 1}}, "invalid_input: invalid arguments: run_id: Input should be a valid string"),
    ],
)
def test_schema_refusals_are_one_specific_error(
    raw_server: RawStdio, tool: str, arguments: dict[str, Any], expected: str
) -> None:
    """The SDK's own argument check would answer with a pydantic dump; the input model names it instead."""
    result = raw_server.call_tool(tool, arguments)["result"]
    assert result["isError"] and result["content"][0]["text"].startswith(f"Error executing tool {tool}: {expected}")


@pytest.mark.anyio
async def test_an_unforeseen_failure_in_a_tool_is_named(caplog: pytest.LogCaptureFixture) -> None:
    async def broken_tool(engine: Any, args: StatusInput) -> StatusResult:
        raise KeyError("surprise")

    with pytest.raises(ToolError) as raised:
        await call_primitive(broken_tool, None, StatusInput, {"run_id": "r1"})  # type: ignore[arg-type]
    assert str(raised.value).startswith("internal_error: broken_tool failed with KeyError, which it should not")
    assert "KeyError: 'surprise'" in caplog.text  # the traceback stays on the server's stderr
