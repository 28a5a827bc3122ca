"""Hostile input over stdio: every request gets an answer, even one the SDK cannot read.

These speak raw JSON-RPC lines to a real ``mcp-orchestrator serve`` subprocess, because a client
library refuses to encode most of them (lone surrogates, nesting 10,000 deep, huge integers).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from mcp.server.mcpserver.exceptions import ToolError

from mcp_orchestrator.models import StatusInput, StatusResult
from mcp_orchestrator.tools._base import call_primitive

from .support import RawStdio


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
@pytest.mark.processes
def test_every_unreadable_request_is_answered(raw_server: RawStdio, line: str, request_id: Any, code: int) -> None:
    raw_server.send(line)
    answer = raw_server.answer(request_id)
    assert answer["error"]["code"] == code, answer
    assert answer["error"]["message"], answer
    started = raw_server.call_tool("start_run", {"name": "after"})  # the server still serves
    assert started["result"]["structuredContent"]["run"]["name"] == "after", started


@pytest.mark.processes
def test_a_line_over_the_limit_is_refused_without_reading_it_whole(raw_server: RawStdio) -> None:
    limit = 8 * 4096 + 64 * 1024
    raw_server.send(tool_call(9, json.dumps({"name": "x", "input": "y" * (3 * limit)})))
    answer = raw_server.answer(None)
    assert answer["error"]["code"] == -32600 and f"longer than {limit} bytes" in answer["error"]["message"]
    assert raw_server.request("ping")["result"] == {}


@pytest.mark.processes
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
@pytest.mark.processes
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
