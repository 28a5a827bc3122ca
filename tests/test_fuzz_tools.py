"""Fuzzing every tool over a real stdio connection: arbitrary JSON values, deep nesting, odd unicode and
out-of-range numbers, as arguments and as raw JSON-RPC lines.

Every request must get an answer within a bound; the answer is a result, a specific tool error
(``<code>: <message>`` with a known code) or a JSON-RPC error; and a run created before the fuzzing
is still served, unchanged. One server serves the whole module; examples are derandomized so CI
sees the same ones. The server supervises nothing (``MCP_ORCHESTRATOR_RUN_ID`` is set, as for a
sub-agent's own server) and works in a temporary directory, so no fuzzed spawn starts a process.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from .support import RawStdio

pytestmark = pytest.mark.processes

ANSWER_WITHIN_S = 10.0
KNOWN_CODES = (
    "invalid_input",
    "run_not_found",
    "run_terminal",
    "key_conflict",
    "step_failed",
    "config_error",
    "store_error",
    "store_busy",
    "approval_not_found",
    "approval_decided",
    "not_allowed",
)
SPECIFIC = re.compile(rf"^Error executing tool (\w+): ({'|'.join(KNOWN_CODES)}): \S")
JSON_RPC_ERRORS = {-32700, -32600, -32602}
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "70"))  # per test; raise it for a longer hunt
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not os.environ.get("FUZZ_EXAMPLES"),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

ODD_TEXT = [
    "",
    "\x00",
    "a\x00b",
    "\ud800",
    "x\udfffy",
    "\u202eevil",
    "\u200f\u200e",
    "😀𝕏\U0010ffff",
    "\x1b[2J\x1b]52;c;ZXZpbA==\x07",
    "x" * 5000,
    "../../etc/passwd",
    "team/nightly?#",
    "0 0 31 2 *",
    "America",
    "9999-12-31T23:59:59-05:00",
    "0001-01-01T00:00:00+05:00",
    "data.²",
    "data." + "9" * 4400,
    "-1",
    "NaN",
]
ODD_NUMBERS = [0, -0.0, 1e308, -1e308, 5e-324, 2**63, -(2**63) - 1, 10**400, -(10**4200), math.nan, math.inf]

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(ODD_NUMBERS)
    | st.text(max_size=20)
    | st.text(st.characters(codec=None, exclude_categories=()), max_size=10)  # surrogates and controls too
    | st.sampled_from(ODD_TEXT)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(ODD_TEXT) | st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
plausible = (
    st.text("abcdefghij-_.:0123456789", min_size=1, max_size=12)
    | st.integers(min_value=0, max_value=100)
    | st.floats(min_value=0, max_value=100)
    | st.lists(st.text("abc", min_size=1, max_size=3), max_size=3)
    | st.dictionaries(st.text("abc", min_size=1, max_size=3), st.text("xyz", max_size=3), max_size=2)
)
deep_values = st.integers(min_value=150, max_value=600).map(lambda depth: nested(depth))


def nested(depth: int) -> Any:
    value: Any = 1
    for level in range(depth):
        value = [value] if level % 2 else {"a": value}
    return value


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RawStdio, dict[str, list[str]], dict[str, Any]]]:
    """The server, every tool with its argument names, and the status of a run made before fuzzing."""
    home = tmp_path_factory.mktemp("fuzz")
    server = RawStdio(
        home / "store.db",
        cwd=home,
        XDG_STATE_HOME=str(home / "state"),
        MCP_ORCHESTRATOR_RUN_ID="fuzz-supervises-nothing",
    ).initialize()
    listed = server.request("tools/list")["result"]["tools"]
    tools = {tool["name"]: sorted(tool["inputSchema"].get("properties", {})) for tool in listed}
    started = server.call_tool("start_run", {"name": "known", "input": {"keep": [1, "two", None]}, "key": "known-run"})
    run_id = started["result"]["structuredContent"]["run"]["run_id"]
    done = server.call_tool("checkpoint", {"run_id": run_id, "step": "plan", "output": {"files": 3}})
    assert not done["result"].get("isError"), done
    yield server, tools, known_status(server, run_id)
    server.close()


def known_status(server: RawStdio, run_id: str) -> dict[str, Any]:
    answer = server.call_tool("status", {"run_id": run_id})
    assert not answer["result"].get("isError"), answer
    status = answer["result"]["structuredContent"]
    return {"run": status["run"], "steps": status["steps"], "journal": status["journal"]}


def check_answer(answer: dict[str, Any], tool: str, sent: str) -> None:
    """A result, a specific tool error, or a JSON-RPC error: never a bare or unexplained failure."""
    if "error" in answer:
        assert answer["error"]["code"] in JSON_RPC_ERRORS and answer["error"]["message"], (sent[:300], answer)
        event(f"JSON-RPC error {answer['error']['code']}")
        return
    result = answer["result"]
    if result.get("isError"):
        text = result["content"][0]["text"]
        specific = SPECIFIC.match(text)
        assert specific is not None and specific.group(1) == tool, (sent[:300], text[:500])
        assert "Traceback" not in text, text
        event(f"tool error {specific.group(2)}")
    elif tool == "permission_prompt":  # Claude Code's shape: one text block of JSON, nothing structured
        assert result.get("structuredContent") is None and len(result["content"]) == 1, (sent[:300], result)
        assert json.loads(result["content"][0]["text"])["behavior"] in ("allow", "deny"), (sent[:300], result)
        event("text result")
    else:
        assert result.get("structuredContent") is not None, (sent[:300], result)
        event("result")


def send_call(server: RawStdio, tool: str, arguments_json: str) -> dict[str, Any]:
    server.next_id += 1
    params = f'{{"name":"{tool}","arguments":{arguments_json}}}'
    line = f'{{"jsonrpc":"2.0","id":{server.next_id},"method":"tools/call","params":{params}}}'
    server.send(line)
    answer = server.answer(server.next_id, ANSWER_WITHIN_S, or_null=True)
    check_answer(answer, tool, line)
    return answer


def not_blocking(arguments: dict[str, Any]) -> dict[str, Any]:
    """Blocking tools wait at most a moment (a fuzzed run that exists could otherwise hold a call 25 s)."""
    if "block_s" in arguments or {"run_id", "run_ids"} & set(arguments):
        arguments["block_s"] = 0
    return arguments


@FUZZ
@given(data=st.data())
def test_every_tool_answers_arbitrary_arguments(
    fuzzed: tuple[RawStdio, dict[str, list[str]], dict[str, Any]], data: st.DataObject
) -> None:
    server, tools, _ = fuzzed
    tool = data.draw(st.sampled_from(sorted(tools)), label="tool")
    names = tools[tool]
    arguments = data.draw(
        st.fixed_dictionaries({}, optional={name: plausible | json_values | deep_values for name in names})
        | st.dictionaries(st.sampled_from([*names, "unknown", "outptu"]), json_values, max_size=4),
        label="arguments",
    )
    if tool in ("wait_for_event", "sleep", "wait_for_runs"):
        arguments = not_blocking(arguments)
    # json.dumps writes NaN, huge integers and lone surrogates (as \ud800 escapes) as they are.
    send_call(server, tool, json.dumps(arguments))


@FUZZ
@given(
    tool_index=st.integers(min_value=0),
    shape=st.sampled_from(["deep arguments", "deep value", "not an object", "huge number", "broken text"]),
    depth=st.integers(min_value=190, max_value=20_000),
    junk=st.sampled_from(
        ['"\\ud800"', '"\\udc00x"', "NaN", "-Infinity", "1e999", "9" * 5000, '"\\u0000"', "[1,]", "'x'"]
    ),
)
def test_unreadable_arguments_are_answered(
    fuzzed: tuple[RawStdio, dict[str, list[str]], dict[str, Any]], tool_index: int, shape: str, depth: int, junk: str
) -> None:
    """Lines a client library would refuse to encode, written raw."""
    server, tools, _ = fuzzed
    tool = sorted(tools)[tool_index % len(tools)]
    name = (tools[tool] or ["x"])[0]
    arguments = {
        "deep arguments": "[" * depth + "]" * depth,
        "deep value": f'{{"{name}":' + "[" * depth + junk + "]" * depth + "}",
        "not an object": junk,
        "huge number": f'{{"{name}":{junk}}}',
        "broken text": f'{{"{name}":{junk},"{name}":{junk}}}',
    }[shape]
    send_call(server, tool, arguments)


def test_the_known_run_is_unchanged_after_fuzzing(
    fuzzed: tuple[RawStdio, dict[str, list[str]], dict[str, Any]],
) -> None:
    server, _, before = fuzzed
    assert known_status(server, before["run"]["run_id"]) == before
