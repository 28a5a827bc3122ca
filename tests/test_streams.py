"""The readers of harness output (agents/streams.py), fed the lines the real harnesses print.

Where the lines come from:
- Claude Code: the message types of the Claude Agent SDK (``SDKMessage`` in ``sdk.d.ts`` of
  ``@anthropic-ai/claude-agent-sdk``), with the values Claude Code 2.1.330 printed in tests/test_model_standin.py.
- Codex: recorded from codex-cli 0.171.0 (``codex exec --json``, and ``codex exec ... resume ID``) against a
  stand-in for the Responses API answering 200, or 429 ``usage_limit_reached`` / ``rate_limit_exceeded`` /
  ``insufficient_quota``, or 503 ``server_is_overloaded``. The types are ``ThreadEvent`` in
  ``codex-rs/exec/src/exec_events.rs`` and in ``@openai/codex-sdk``'s ``index.d.ts``.
- Gemini CLI: recorded from @google/gemini-cli 0.61.0 (``--output-format stream-json``) against a stand-in for
  the Gemini API answering 200, 429 with a per-day QuotaFailure, 429 with RetryInfo, 503, 400 API_KEY_INVALID.
  The event types are ``JsonStreamEventType`` and the writers are in its ``nonInteractiveCli``.
- OpenCode: recorded from opencode-ai 1.18.33 (``opencode run --format json``) against the same stand-in for
  the Responses API; the line shapes are those its ``run`` command writes (``{type, timestamp, sessionID, ...}``).
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcp_orchestrator.agents import streams
from mcp_orchestrator.agents.streams import (
    ACTIVITY_BUFFER_MAX,
    ERROR_MAX,
    OUTPUT_MAX,
    PENDING_CALLS_MAX,
    READERS,
    ActivityLog,
    AttemptReport,
    Limit,
    StreamReader,
    reader_for,
)
from mcp_orchestrator.models import ACTIVITY_SUMMARY_MAX, Activity, Usage
from mcp_orchestrator.profiles import BUILTIN_PROFILES, launch_argv, load_agents_config


def read(output: str, *lines: str | bytes | dict[str, Any]) -> AttemptReport:
    reader = reader_for(output)
    for line in lines:
        if isinstance(line, dict):
            line = json.dumps(line)
        reader.feed(line.encode() if isinstance(line, str) else line)
    return reader.finish()


def feed(reader: StreamReader, *lines: str | dict[str, Any]) -> None:
    for line in lines:
        reader.feed((line if isinstance(line, str) else json.dumps(line)).encode())


def taken(reader: StreamReader) -> list[tuple[str, str, str | None, bool | None]]:
    """The entries since the last take, as (kind, summary, tool, failed); none may have been dropped."""
    entries, dropped = reader.take_activity()
    assert dropped == 0
    assert all(entry.attempt is None and entry.at.tzinfo is not None and one_line(entry.summary) for entry in entries)
    return [(entry.kind, entry.summary, entry.tool, entry.failed) for entry in entries]


def one_line(summary: str) -> bool:
    return "\n" not in summary and len(summary) <= ACTIVITY_SUMMARY_MAX


def soon(at: datetime | None, seconds: float) -> bool:
    """``at`` is about ``seconds`` from now."""
    expected = datetime.now(UTC) + timedelta(seconds=seconds)
    return at is not None and abs((at - expected).total_seconds()) < 30


# --- Claude Code -----------------------------------------------------------------------------------------

CLAUDE_INIT = {
    "type": "system",
    "subtype": "init",
    "session_id": "3f1c9b52-8a47-4d5e-9c1e-2b7a6d0e4f11",
    "model": "claude-sonnet-4-5",
    "permissionMode": "default",
    "cwd": "/home/dev/project",
    "tools": ["Read", "Edit", "mcp__orchestrator__checkpoint"],
    "mcp_servers": [{"name": "orchestrator", "status": "connected"}],
    "uuid": "0d6a5a0c-62a3-4bb1-8d5e-6b4f3f2b1a10",
}


def claude_result(**fields: Any) -> dict[str, Any]:
    return {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "duration_ms": 2100,
        "num_turns": 2,
        "result": "Done: tests pass.",
        "session_id": CLAUDE_INIT["session_id"],
        "total_cost_usd": 0.0123,
        "usage": {"input_tokens": 1200, "output_tokens": 80, "cache_read_input_tokens": 0},
        "permission_denials": [],
        "terminal_reason": "completed",
        "uuid": "9a1f...",
        **fields,
    }


def test_claude_session_id_is_known_from_init_before_any_result() -> None:
    reader = reader_for("claude-json")
    reader.feed(json.dumps(CLAUDE_INIT).encode())
    assert reader.report.session_id == CLAUDE_INIT["session_id"]  # the runner records it at once
    assert reader.report.output is None and reader.report.error is None


def test_claude_result_is_the_output_with_cost_and_usage() -> None:
    report = read("claude-json", CLAUDE_INIT, claude_result())
    assert report.output == "Done: tests pass."
    assert report.cost_usd == pytest.approx(0.0123)
    assert report.usage["input_tokens"] == 1200
    assert report.error is None and report.limit is None


def test_claude_error_result_gives_its_words_and_codes() -> None:
    # Not logged in: is_error with the text Claude Code shows, no API status.
    report = read(
        "claude-json",
        CLAUDE_INIT,
        claude_result(
            is_error=True, result="Not logged in · Please run /login", terminal_reason="api_error", total_cost_usd=0
        ),
    )
    assert report.error == "Not logged in · Please run /login (terminal_reason api_error)"
    assert report.limit is None
    # A 401 (as recorded with 2.1.330): the subtype "success" (sic) is left out, the status named.
    report = read(
        "claude-json",
        claude_result(
            is_error=True,
            result="Invalid API key · Fix external API key",
            terminal_reason="api_error",
            api_error_status=401,
            api_error_type="authentication_error",
        ),
    )
    assert report.error is not None
    assert report.error.startswith("Invalid API key · Fix external API key (")
    assert "terminal_reason api_error" in report.error and "api_error_status 401" in report.error
    assert "authentication_error" in report.error and "subtype" not in report.error
    # Max turns: a non-success subtype is an error even without is_error, and its denials are named.
    report = read(
        "claude-json",
        claude_result(
            subtype="error_max_turns",
            result=None,
            terminal_reason="max_turns",
            permission_denials=[{"tool_name": "Write", "tool_use_id": "t1", "tool_input": {}}],
        ),
    )
    assert report.error == (
        "Claude Code reported an error without a message "
        "(subtype error_max_turns; terminal_reason max_turns; permission denied for Write)"
    )


def test_claude_429_is_a_rate_limit_and_529_overload() -> None:
    text = "API Error: Request rejected (429) · This request would exceed your account's rate limit."
    assistant = {
        "type": "assistant",
        "message": {"model": "<synthetic>", "content": [{"type": "text", "text": text}]},
        "error": "rate_limit",
        "session_id": CLAUDE_INIT["session_id"],
    }
    report = read(
        "claude-json",
        CLAUDE_INIT,
        assistant,
        claude_result(
            is_error=True,
            result=text,
            terminal_reason="api_error",
            api_error_status=429,
            api_error_type="rate_limit_error",
            total_cost_usd=0,
        ),
    )
    assert report.limit is not None and report.limit.kind == "rate_limit" and report.limit.resets_at is None
    assert report.error is not None and "api_error_status 429" in report.error

    text = "API Error: 529 overloaded error. This is a server-side issue, usually temporary"
    report = read(
        "claude-json",
        claude_result(
            is_error=True,
            result=text,
            terminal_reason="api_error",
            api_error_status=529,
            api_error_type="overloaded_error",
        ),
    )
    assert report.limit is not None and report.limit.kind == "overloaded"


def test_claude_rejected_rate_limit_event_is_a_usage_limit_until_its_reset() -> None:
    resets = int(datetime.now(UTC).timestamp()) + 3 * 3600
    event = {  # SDKRateLimitEvent: rate_limit_info {status, resetsAt (epoch seconds), rateLimitType, ...}
        "type": "rate_limit_event",
        "rate_limit_info": {"status": "rejected", "resetsAt": resets, "rateLimitType": "five_hour"},
        "uuid": "5b0c...",
        "session_id": CLAUDE_INIT["session_id"],
    }
    report = read("claude-json", CLAUDE_INIT, event)
    assert report.limit == Limit("usage_limit", datetime.fromtimestamp(resets, UTC), "five_hour window")
    assert report.limit.describe() == "usage limit: five_hour window"


@pytest.mark.parametrize("status", ["allowed", "allowed_warning"])
def test_claude_allowed_rate_limit_event_is_nothing(status: str) -> None:
    event = {"type": "rate_limit_event", "rate_limit_info": {"status": status, "resetsAt": 1_900_000_000}}
    report = read("claude-json", CLAUDE_INIT, event, claude_result())
    assert report.limit is None and report.error is None and report.output == "Done: tests pass."


# --- Codex -------------------------------------------------------------------------------------------------

THREAD = "01a22e42-a129-7470-8a1e-9eff7b8375a3"
CODEX_OK = [
    f'{{"type":"thread.started","thread_id":"{THREAD}"}}',
    '{"type":"turn.started"}',
    '{"type":"item.completed","item":{"id":"item_0","type":"agent_message","text":"All done: the file is written."}}',
    '{"type":"turn.completed","usage":{"input_tokens":1200,"cached_input_tokens":200,'
    '"cache_write_input_tokens":0,"output_tokens":30,"reasoning_output_tokens":5}}',
]


def codex_failure(message: str) -> list[str]:
    quoted = json.dumps(message)
    return [
        f'{{"type":"thread.started","thread_id":"{THREAD}"}}',
        '{"type":"turn.started"}',
        f'{{"type":"error","message":{quoted}}}',
        f'{{"type":"turn.failed","error":{{"message":{quoted}}}}}',
    ]


def test_codex_thread_id_answer_and_usage() -> None:
    reader = reader_for("codex-json")
    reader.feed(CODEX_OK[0].encode())
    assert reader.report.session_id == THREAD  # known at once
    for line in CODEX_OK[1:]:
        reader.feed(line.encode())
    report = reader.finish()
    assert report.output == "All done: the file is written."
    assert report.usage == {
        "input_tokens": 1200,
        "cached_input_tokens": 200,
        "cache_write_input_tokens": 0,
        "output_tokens": 30,
        "reasoning_output_tokens": 5,
    }
    assert report.error is None and report.limit is None and report.cost_usd is None


def test_codex_retried_errors_and_warnings_are_not_a_failure() -> None:
    # As recorded: WebSocket reconnects reported as `error` lines, a fallback warning as an `error` item,
    # and then the turn completed over HTTPS.
    url = "ws://127.0.0.1:8080/v1/responses"
    report = read(
        "codex-json",
        CODEX_OK[0],
        CODEX_OK[1],
        '{"type":"error","message":"Reconnecting... 2/5 (unexpected status 429 Too Many Requests: {}, url: '
        f'{url})"}}',
        '{"type":"item.completed","item":{"id":"item_0","type":"error","message":"Falling back from WebSockets '
        'to HTTPS transport. unexpected status 200 OK: {}"}}',
        *CODEX_OK[2:],
    )
    assert report.error is None and report.limit is None
    assert report.output == "All done: the file is written."


def test_codex_resumed_thread_keeps_its_id() -> None:
    report = read(
        "codex-json",
        f'{{"type":"thread.started","thread_id":"{THREAD}"}}',
        '{"type":"item.completed","item":{"id":"item_0","type":"error","message":"This session was recorded '
        'with model `gpt-6.2-sol` but is resuming with `gpt-x`."}}',
        *CODEX_OK[1:],
    )
    assert report.session_id == THREAD and report.error is None


def test_codex_usage_limit_resets_at_the_local_time_it_names(monkeypatch: pytest.MonkeyPatch) -> None:
    local = timezone(timedelta(hours=-5))
    monkeypatch.setattr(streams, "_now", lambda: datetime(2026, 8, 7, 21, 5, tzinfo=local))
    message = (
        "You\u2019ve hit your usage limit. Upgrade to Pro (https://chatgpt.com/explore/pro), visit "
        "https://chatgpt.com/settings/usage to purchase more credits or try again at 10:00 PM."
    )
    report = read("codex-json", *codex_failure(message))
    assert report.error == message
    assert report.limit is not None and report.limit.kind == "usage_limit"
    assert report.limit.resets_at == datetime(2026, 8, 8, 3, 1, tzinfo=UTC)  # Codex shows minutes: one more
    # Another day: Codex names the date.
    report = read("codex-json", *codex_failure("You've hit your usage limit. Try again at Aug 8th, 2026 12:30 PM."))
    assert report.limit is not None and report.limit.resets_at == datetime(2026, 8, 8, 17, 31, tzinfo=UTC)
    # A time already past, or no time: the reset is unknown (the orchestrator backs off).
    report = read("codex-json", *codex_failure("You've hit your usage limit. Try again at 8:59 PM."))
    assert report.limit is not None and report.limit.resets_at is None
    report = read("codex-json", *codex_failure("You've hit your usage limit. Try again later."))
    assert report.limit == Limit("usage_limit", None, "You've hit your usage limit. Try again later.")


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("exceeded retry limit, last status: 429 Too Many Requests", "rate_limit"),
        ("Quota exceeded. Check your plan and billing details.", "usage_limit"),
        ("Selected model is at capacity. Please try a different model.", "overloaded"),
        ("Your workspace is out of credits. Add credits to continue.", "usage_limit"),
        ("You hit your spend cap set in your workspace. Increase your spend cap to continue.", "usage_limit"),
        ("We're currently experiencing high demand, which may cause temporary errors.", "overloaded"),
        ("Codex ran out of room in the model's context window. Start a new thread.", None),
        ("unexpected status 401 Unauthorized: Incorrect API key provided", None),
    ],
)
def test_codex_failed_turns_say_why_and_which_limit(message: str, kind: str | None) -> None:
    report = read("codex-json", *codex_failure(message))
    assert report.error == message
    assert (report.limit.kind if report.limit else None) == kind


def test_codex_error_without_a_completed_turn_is_the_failure() -> None:
    # A process that printed an error and ended (killed, or crashed) without turn.failed.
    report = read("codex-json", CODEX_OK[0], CODEX_OK[1], '{"type":"error","message":"stream disconnected"}')
    assert report.error == "stream disconnected" and report.limit is None
    # turn.failed with no message falls back on the last error line.
    report = read("codex-json", '{"type":"error","message":"boom"}', '{"type":"turn.failed","error":{}}')
    assert report.error == "boom"
    report = read("codex-json", '{"type":"turn.failed"}')
    assert report.error == "Codex reported a failed turn without a message"


# --- Gemini CLI --------------------------------------------------------------------------------------------

GEMINI_SESSION = "c1a675c9-60c3-41c9-90b3-26d7c2eaa14f"
GEMINI_INIT = f'{{"type":"init","timestamp":"2026-11-30T21:01:39.225Z","session_id":"{GEMINI_SESSION}","model":"auto"}}'
GEMINI_USER = '{"type":"message","timestamp":"2026-11-30T21:01:39.226Z","role":"user","content":"say hi"}'
GEMINI_STATS = (
    '{"total_tokens":909,"input_tokens":900,"output_tokens":9,"cached":100,"input":800,"duration_ms":117,'
    '"tool_calls":0,"models":{"gemini-2.5-pro":{"total_tokens":909,"input_tokens":900,"output_tokens":9,'
    '"cached":100,"input":800}}}'
)
GEMINI_OK = [
    GEMINI_INIT,
    GEMINI_USER,
    '{"type":"message","timestamp":"2026-11-30T21:01:39.335Z","role":"assistant","content":"All done: ","delta":true}',
    '{"type":"message","timestamp":"2026-11-30T21:01:39.337Z","role":"assistant","content":"the file is written.",'
    '"delta":true}',
    f'{{"type":"result","timestamp":"2026-11-30T21:01:39.341Z","status":"success","stats":{GEMINI_STATS}}}',
]
GEMINI_ZERO = (
    '{"total_tokens":0,"input_tokens":0,"output_tokens":0,"cached":0,"input":0,"duration_ms":0,"tool_calls":0}'
)


def gemini_error(message: str, kind: str = "unknown") -> list[str]:
    error = json.dumps({"type": kind, "message": message})
    result = f'{{"type":"result","timestamp":"2026-11-30T21:01:46.403Z","status":"error","error":{error},'
    return [GEMINI_INIT, GEMINI_USER, result + f'"stats":{GEMINI_ZERO}}}']


def test_gemini_session_answer_and_stats() -> None:
    reader = reader_for("gemini-json")
    reader.feed(GEMINI_INIT.encode())
    assert reader.report.session_id == GEMINI_SESSION
    for line in GEMINI_OK[1:]:
        reader.feed(line.encode())
    report = reader.finish()
    assert report.output == "All done: the file is written."
    assert report.usage == {
        "total_tokens": 909,
        "input_tokens": 900,
        "output_tokens": 9,
        "cached": 100,
        "input": 800,
        "duration_ms": 117,
        "tool_calls": 0,
    }
    assert report.error is None and report.limit is None


def test_gemini_answer_is_the_text_after_the_last_tool_call() -> None:
    tool = "mcp_orchestrator_status__mcp_orchestrator_status_1796073524202_0"
    report = read(
        "gemini-json",
        GEMINI_INIT,
        '{"type":"message","role":"assistant","content":"Let me look.","delta":true}',
        f'{{"type":"tool_use","tool_name":"mcp_orchestrator_status","tool_id":"{tool}",'
        '"parameters":{"run_id":"nope"}}',
        f'{{"type":"tool_result","tool_id":"{tool}","status":"error","output":"Error: MCP tool \'status\' '
        'reported an error.","error":{"type":"mcp_tool_error","message":"MCP tool \'status\' reported tool error"}}',
        '{"type":"message","role":"assistant","content":"Tool ran.","delta":true}',
        f'{{"type":"result","status":"success","stats":{GEMINI_STATS}}}',
    )
    assert report.output == "Tool ran." and report.error is None  # a failed tool call is not a failed run
    # A last turn that said nothing: the text before it is the answer.
    report = read(
        "gemini-json",
        '{"type":"message","role":"assistant","content":"Written.","delta":true}',
        '{"type":"tool_use","tool_name":"write_file","tool_id":"w1","parameters":{}}',
        '{"type":"result","status":"success","stats":{}}',
    )
    assert report.output == "Written."


def test_gemini_daily_quota_is_a_usage_limit() -> None:
    message = (
        "[API Error: You have exhausted your daily quota on this model.]\nPlease wait and try again later. To "
        "increase your limits, request a quota increase through AI Studio, or switch to another /auth method"
    )
    report = read("gemini-json", *gemini_error(message))
    assert report.error == message  # type "unknown" adds nothing
    assert report.limit is not None and report.limit.kind == "usage_limit" and report.limit.resets_at is None


def test_gemini_rate_limit_resets_after_the_suggested_delay() -> None:
    message = (
        "[API Error: Resource has been exhausted (e.g. check quota).\nSuggested retry after 90s.]\nPlease wait "
        "and try again later. To increase your limits, request a quota increase through AI Studio, or switch "
        "to another /auth method"
    )
    report = read("gemini-json", *gemini_error(message))
    assert report.limit is not None and report.limit.kind == "rate_limit"
    assert soon(report.limit.resets_at, 90)


@pytest.mark.parametrize(
    ("message", "kind", "limit"),
    [
        ("[API Error: The model is overloaded. Please try again later.]", "unknown", "overloaded"),
        (
            '[API Error: {"error":{"code":400,"message":"API key not valid. Please pass a valid API key.",'
            '"status":"INVALID_ARGUMENT"}}]',
            "unknown",
            None,
        ),
        (
            "Reached max session turns for this session. Increase the number of turns by specifying "
            "maxSessionTurns in settings.json.",
            "FatalTurnLimitedError",
            None,
        ),
    ],
)
def test_gemini_errors_say_why(message: str, kind: str, limit: str | None) -> None:
    report = read("gemini-json", *gemini_error(message, kind))
    assert report.error == (message if kind == "unknown" else f"{message} ({kind})")
    assert (report.limit.kind if report.limit else None) == limit


def test_gemini_error_lines_count_only_without_a_successful_result() -> None:
    retried = '{"type":"error","timestamp":"t","severity":"error","message":"Resource exhausted, retrying"}'
    report = read("gemini-json", GEMINI_INIT, retried, *GEMINI_OK[2:])
    assert report.error is None and report.limit is None
    # An invalid stream: the error line says why, the result only "error".
    empty = '{"type":"error","severity":"error","message":"Model stream ended with an empty response."}'
    report = read("gemini-json", GEMINI_INIT, empty, '{"type":"result","status":"error","stats":{}}')
    assert report.error == "Model stream ended with an empty response."
    # Killed before any result: the last error line is the reason; a warning is not.
    report = read("gemini-json", GEMINI_INIT, retried)
    assert report.error == "Resource exhausted, retrying"
    assert report.limit is not None and report.limit.kind == "rate_limit"
    warning = '{"type":"error","severity":"warning","message":"Loop detected, stopping execution"}'
    assert read("gemini-json", GEMINI_INIT, warning).error is None


def test_gemini_answer_in_many_pieces_is_bounded() -> None:
    piece = {"type": "message", "role": "assistant", "content": "x" * 99 + "\n", "delta": True}
    reader = reader_for("gemini-json")
    for _ in range(2000):
        reader.feed(json.dumps(piece).encode())
    reader.feed(b'{"type":"message","role":"assistant","content":"THE END","delta":true}')
    output = reader.finish().output
    assert isinstance(output, str) and len(output) <= OUTPUT_MAX and output.endswith("THE END")


# --- OpenCode ----------------------------------------------------------------------------------------------

OC_SESSION = "ses_dd1a200e3ffedNYdsF0G09NZ3E"


def oc(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, "timestamp": 1796074245086, "sessionID": OC_SESSION, **fields})


def oc_part(kind: str, **fields: Any) -> dict[str, Any]:
    ids = {"id": "prt_22e5e0bc7001OWUrBa74WG5bYc", "messageID": "msg_22e5e03e0001WYOHUVtfaedplj"}
    return {**ids, "sessionID": OC_SESSION, "type": kind, **fields}


def oc_step_finish(cost: float, total: int) -> str:
    tokens = {"total": total, "input": 1000, "output": 25, "reasoning": 5, "cache": {"write": 0, "read": 200}}
    return oc("step_finish", part=oc_part("step-finish", reason="stop", snapshot="08b9ee0f", tokens=tokens, cost=cost))


def oc_text(text: str) -> str:
    return oc("text", part=oc_part("text", text=text, time={"start": 1796074245074, "end": 1796074245080}))


def oc_api_error(message: str, status: int, body: dict[str, Any], **headers: str) -> str:
    data = {
        "message": message,
        "statusCode": status,
        "isRetryable": True,
        "responseHeaders": {"content-type": "application/json", "date": "Mon, 30 Nov 2026 21:32:02 GMT", **headers},
        "responseBody": json.dumps(body),
        "metadata": {"url": "https://api.openai.com/v1/responses"},
    }
    return oc("error", error={"name": "APIError", "data": data})


def test_opencode_session_last_step_text_tokens_and_cost() -> None:
    tool = oc_part(
        "tool", tool="edit", state={"status": "completed", "input": {"filePath": "a.py"}, "output": "", "title": "a.py"}
    )
    report = read(
        "opencode-json",
        oc("step_start", part=oc_part("step-start", snapshot="106257ad")),
        oc_text("Let me edit a.py."),
        oc("tool_use", part=tool),
        oc_step_finish(0.002, 1230),
        oc("step_start", part=oc_part("step-start", snapshot="2a")),
        oc_text("All done: the file is written."),
        oc_step_finish(0.00305, 1230),
    )
    assert report.session_id == OC_SESSION
    assert report.output == "All done: the file is written."
    assert report.cost_usd == pytest.approx(0.00505)
    assert report.usage == {
        "total": 2460,
        "input": 2000,
        "output": 50,
        "reasoning": 10,
        "cache_write": 0,
        "cache_read": 400,
    }
    assert report.error is None and report.limit is None


def test_opencode_usage_limit_resets_when_the_body_says() -> None:
    resets = int(datetime.now(UTC).timestamp()) + 3600
    body = {"error": {"type": "usage_limit_reached", "message": "limit", "plan_type": "plus", "resets_at": resets}}
    report = read("opencode-json", oc_api_error("limit", 429, body))
    assert report.session_id == OC_SESSION
    assert report.error == "limit (APIError, status 429)"
    assert report.limit == Limit("usage_limit", datetime.fromtimestamp(resets, UTC), "limit")


def test_opencode_rate_limit_resets_after_retry_after_or_the_words() -> None:
    message = (
        "Rate limit reached for gpt-5 in organization org-x on tokens per min (TPM): Limit 30000, Used 30000. "
        "Please try again in 20s."
    )
    body = {"error": {"type": "rate_limit_exceeded", "code": "rate_limit_exceeded", "message": message}}
    report = read("opencode-json", oc_api_error(message, 429, body))
    assert report.limit is not None and report.limit.kind == "rate_limit" and soon(report.limit.resets_at, 20)
    report = read("opencode-json", oc_api_error("Too Many Requests", 429, {}, **{"retry-after": "120"}))
    assert report.limit is not None and soon(report.limit.resets_at, 120)
    report = read("opencode-json", oc_api_error("Too Many Requests", 429, {}, **{"Retry-After-Ms": "45000"}))
    assert report.limit is not None and soon(report.limit.resets_at, 45)
    when = (datetime.now(UTC) + timedelta(minutes=10)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    report = read("opencode-json", oc_api_error("Too Many Requests", 429, {}, **{"retry-after": when}))
    assert report.limit is not None and soon(report.limit.resets_at, 600)


@pytest.mark.parametrize(
    ("message", "status", "body", "kind"),
    [
        (
            "You exceeded your current quota, please check your plan and billing details.",
            429,
            {"error": {"type": "insufficient_quota", "code": "insufficient_quota"}},
            "usage_limit",
        ),
        ("overloaded", 503, {"error": {"type": "server_is_overloaded", "code": "server_is_overloaded"}}, "overloaded"),
        ("Overloaded", 529, {"type": "error", "error": {"type": "overloaded_error"}}, "overloaded"),
        ("Internal server error", 500, {"error": {"message": "internal"}}, None),
        ("Incorrect API key provided", 401, {"error": {"code": "invalid_api_key"}}, None),
    ],
)
def test_opencode_api_errors(message: str, status: int, body: dict[str, Any], kind: str | None) -> None:
    report = read("opencode-json", oc_api_error(message, status, body))
    assert report.error == f"{message} (APIError, status {status})"
    assert (report.limit.kind if report.limit else None) == kind


def test_opencode_other_errors_say_why() -> None:
    auth = {"name": "ProviderAuthError", "data": {"providerID": "openai", "message": "API key is missing"}}
    report = read("opencode-json", oc("error", error=auth))
    assert report.error == "API key is missing (ProviderAuthError)" and report.limit is None
    report = read("opencode-json", oc("error", error={"name": "MessageAbortedError", "data": {}}))
    assert report.error == "OpenCode reported an error without a message (MessageAbortedError)"
    report = read("opencode-json", oc("error", error="Session not found"), oc("error", error={"name": "UnknownError"}))
    assert report.error == ("Session not found\nOpenCode reported an error without a message (UnknownError)")


# --- activity and spending, as each harness prints them --------------------------------------------------


def claude_assistant(message_id: str, block: dict[str, Any], output_tokens: int = 30, **usage: int) -> dict[str, Any]:
    """One line of an assistant message: Claude Code prints one per content block, repeating id and usage."""
    counts = {"input_tokens": 1000, "output_tokens": output_tokens, "cache_read_input_tokens": 200}
    return {
        "type": "assistant",
        "message": {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": "claude-opus-5-5",
            "content": [block],
            "stop_reason": None,
            "usage": {**counts, "cache_creation_input_tokens": 50, **usage},
        },
        "parent_tool_use_id": None,
        "session_id": CLAUDE_INIT["session_id"],
        "uuid": f"u-{message_id}",
    }


def claude_tool_use(message_id: str, call_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return claude_assistant(message_id, {"type": "tool_use", "id": call_id, "name": name, "input": arguments})


def claude_tool_result(call_id: str, **fields: Any) -> dict[str, Any]:
    block = {"tool_use_id": call_id, "type": "tool_result", "content": "1\tline one", **fields}
    return {
        "type": "user",
        "message": {"role": "user", "content": [block]},
        "parent_tool_use_id": None,
        "session_id": CLAUDE_INIT["session_id"],
    }


def since_last(cost: float, inputs: int = 5234, outputs: int = 53, model: str = "claude-opus-5-5") -> dict[str, Any]:
    counts = {"inputTokens": inputs, "outputTokens": outputs, "cacheReadInputTokens": 0}
    return {model: {**counts, "cacheCreationInputTokens": 0, "costUSD": cost}}


BUDGET_RESULT = (
    '{"type":"result","subtype":"error_max_budget_usd","is_error":true,"num_turns":2,"total_cost_usd":0.021996,'
    '"terminal_reason":"budget_exhausted","errors":["Reached maximum budget ($0.02)"],"session_id":"...",'
    '"usage":{"input_tokens":2570,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":25},'
    '"modelUsage":{"claude-opus-5-5":{"inputTokens":5234,"outputTokens":53,"cacheReadInputTokens":0,'
    '"cacheCreationInputTokens":0,"costUSD":0.021996}},"model_usage_since_last_result":{"claude-opus-5-5":'
    '{"inputTokens":5234,"outputTokens":53,"cacheReadInputTokens":0,"cacheCreationInputTokens":0,"costUSD":0.021996}}}'
)


def test_claude_activity_turns_text_tool_calls_and_results() -> None:
    reader = reader_for("claude-json")
    feed(
        reader,
        CLAUDE_INIT,
        claude_assistant("msg_01", {"type": "text", "text": "Let me read\nthe file."}),
        claude_tool_use("msg_01", "toolu_01", "Read", {"file_path": "/home/dev/project/src/app.py"}),
        claude_tool_use("msg_01", "toolu_02", "Bash", {"command": "npm test", "description": "Run the tests"}),
    )
    assert reader.report.active_at is not None and reader.report.results == 0
    assert taken(reader) == [
        ("turn", "turn 1", None, None),
        ("text", "Let me read the file.", None, None),
        ("tool", "Read /home/dev/project/src/app.py", "Read", None),
        ("tool", "Bash: npm test", "Bash", None),
    ]
    assert taken(reader) == []  # nothing new
    feed(
        reader,
        claude_tool_result("toolu_01"),  # is_error absent: not failed
        claude_tool_result("toolu_02", is_error=True),
        {"type": "user", "message": {"role": "user", "content": "also check the docs"}},  # a message, echoed
        claude_tool_result("toolu_unknown", is_error=True),  # a call never read: nothing
        claude_tool_use("msg_02", "toolu_03", "mcp__orchestrator__checkpoint", {"note": "tests pass"}),
        claude_result(),
    )
    entries, dropped = reader.take_activity()
    assert dropped == 0
    read_call, bash_call = entries[:2]  # the calls again, with their results: the store updates them by ref
    assert (read_call.ref, read_call.failed, read_call.tool) == ("toolu_01", False, "Read")
    assert (bash_call.ref, bash_call.failed) == ("toolu_02", True)
    assert read_call.duration_ms is not None and read_call.duration_ms >= 0
    assert [(e.kind, e.summary, e.tool, e.failed) for e in entries[2:]] == [
        ("turn", "turn 2", None, None),
        ("tool", "mcp__orchestrator__checkpoint: tests pass", "mcp__orchestrator__checkpoint", None),
        ("result", "success: Done: tests pass. ($0.0123, 2 turns)", None, False),
    ]
    assert entries[3].ref == "toolu_03" and reader.report.results == 1


def test_a_call_whose_result_comes_before_the_take_is_taken_once_with_it() -> None:
    reader = reader_for("claude-json")
    feed(reader, claude_tool_use("msg_01", "toolu_01", "Glob", {"pattern": "**/*.py"}), claude_tool_result("toolu_01"))
    entries, _ = reader.take_activity()
    assert [(e.kind, e.summary, e.failed) for e in entries] == [
        ("turn", "turn 1", None),
        ("tool", "Glob: **/*.py", False),
    ]


def test_claude_spending_grows_live_and_each_result_settles_it() -> None:
    reader = reader_for("claude-json")
    feed(reader, CLAUDE_INIT, claude_assistant("msg_01", {"type": "text", "text": "Looking."}, output_tokens=2))
    live = Usage(input_tokens=1000, output_tokens=2, cache_read_tokens=200, cache_write_tokens=50, turns=1)
    assert reader.report.spent == live.model_copy(update={"model": "claude-opus-5-5"})
    # The same message's next line repeats its usage, grown: counted once, at its largest.
    feed(reader, claude_tool_use("msg_01", "toolu_01", "Read", {"file_path": "a.py"}))
    feed(reader, claude_assistant("msg_02", {"type": "text", "text": "Done."}))
    spent = reader.report.spent
    assert spent is not None and (spent.input_tokens, spent.output_tokens, spent.turns) == (2000, 60, 2)
    assert spent.cost_usd == 0 and reader.report.session_cost_usd is None
    # The result replaces the live counts with its own figures (what this process spent since its last result).
    feed(reader, claude_result(total_cost_usd=0.04, num_turns=2, model_usage_since_last_result=since_last(0.04)))
    spent = reader.report.spent
    assert spent is not None and spent.cost_usd == pytest.approx(0.04) and spent.turns == 2
    assert (spent.input_tokens, spent.output_tokens) == (5234, 60)  # its outputs (53) do not lower what was reported
    assert spent.model == "claude-opus-5-5" and reader.report.session_cost_usd == pytest.approx(0.04)
    # A second message on stdin: a second init and answer; its result adds to the first.
    feed(reader, CLAUDE_INIT, claude_assistant("msg_03", {"type": "text", "text": "Again."}))
    spent = reader.report.spent
    assert spent is not None and spent.turns == 3 and spent.input_tokens == 6234
    feed(reader, claude_result(total_cost_usd=0.07, num_turns=1, model_usage_since_last_result=since_last(0.03)))
    spent = reader.report.spent
    assert spent is not None and spent.cost_usd == pytest.approx(0.07) and spent.turns == 3
    assert spent.input_tokens == 10468 and reader.report.results == 2
    assert reader.report.session_cost_usd == pytest.approx(0.07)


def test_a_resumed_claude_session_spends_only_what_this_process_spent() -> None:
    report = read(
        "claude-json",
        claude_result(total_cost_usd=0.02068, num_turns=1, model_usage_since_last_result=since_last(0.010392)),
    )
    assert report.spent is not None and report.spent.cost_usd == pytest.approx(0.010392)
    assert report.session_cost_usd == pytest.approx(0.02068) and report.cost_usd == pytest.approx(0.02068)


def test_claude_results_without_per_model_usage_fall_back_on_the_total_and_usage() -> None:
    reader = reader_for("claude-json")
    model_usage = {"claude-haiku-5": {"costUSD": 0.001}, "claude-opus-5-5": {"costUSD": 0.009}}
    feed(reader, claude_result(total_cost_usd=0.01, num_turns=2, modelUsage=model_usage))
    spent = reader.report.spent
    assert spent is not None and spent.cost_usd == pytest.approx(0.01)  # the first: the total minus nothing
    assert (spent.input_tokens, spent.output_tokens, spent.turns) == (1200, 80, 2)
    assert spent.model == "claude-opus-5-5"  # the model it spent most on
    feed(reader, claude_result(total_cost_usd=0.025, num_turns=1, usage={"input_tokens": 300, "output_tokens": 9}))
    spent = reader.report.spent
    assert spent is not None and spent.cost_usd == pytest.approx(0.025)  # plus the increase of the total
    assert (spent.input_tokens, spent.output_tokens, spent.turns) == (1500, 89, 3)
    # A result with neither: nothing added, nothing lowered.
    feed(reader, {"type": "result", "subtype": "success", "result": "ok"})
    assert reader.report.spent == spent.model_copy(update={"model": "claude-opus-5-5"})
    assert reader.report.results == 3


def test_claude_budget_stop_is_no_usage_limit_and_says_why() -> None:
    reader = reader_for("claude-json")
    feed(reader, CLAUDE_INIT, BUDGET_RESULT)
    report = reader.finish()
    assert report.stopped_by == "budget" and report.limit is None
    assert report.error == (
        "Reached maximum budget ($0.02) (subtype error_max_budget_usd; terminal_reason budget_exhausted)"
    )
    assert report.spent == Usage(
        cost_usd=0.021996, input_tokens=5234, output_tokens=53, turns=2, model="claude-opus-5-5"
    )
    assert report.session_cost_usd == pytest.approx(0.021996) and report.results == 1
    entries, _ = reader.take_activity()
    assert [(e.kind, e.failed) for e in entries] == [("result", True)]
    assert entries[0].summary.startswith("Reached maximum budget ($0.02)")
    assert entries[0].summary.endswith("($0.0220, 2 turns)")


@pytest.mark.parametrize(
    ("fields", "stop"),
    [
        (
            {"subtype": "error_max_turns", "terminal_reason": "max_turns", "errors": ["Reached maximum turns (3)"]},
            "turns",
        ),
        ({"subtype": "error_during_execution", "terminal_reason": "max_turns"}, "turns"),
        ({"subtype": "error_during_execution", "terminal_reason": "budget_exhausted"}, "budget"),
        ({"subtype": "error_during_execution", "errors": ["boom"]}, None),
        ({"subtype": "success", "is_error": False}, None),
    ],
)
def test_claude_stopped_by(fields: dict[str, Any], stop: str | None) -> None:
    report = read("claude-json", claude_result(**{"is_error": True, "result": None, **fields}))
    assert report.stopped_by == stop
    if stop is not None:  # its own cap, even worded like a limit, is not the account's usage limit
        report = read("claude-json", claude_result(**{"is_error": True, **fields, "result": "usage limit reached"}))
        assert report.limit is None and report.stopped_by == stop


def test_claude_error_words_come_from_errors_when_the_result_has_none() -> None:
    report = read(
        "claude-json", claude_result(subtype="error_during_execution", is_error=True, result=None, errors=["a", "b"])
    )
    assert report.error == "a; b (subtype error_during_execution; terminal_reason completed)"
    report = read("claude-json", claude_result(subtype="error_during_execution", is_error=True, result=None))
    assert report.error is not None and report.error.startswith("Claude Code reported an error without a message")


def test_codex_activity_and_spending() -> None:
    reader = reader_for("codex-json")
    feed(
        reader,
        CODEX_OK[0],
        CODEX_OK[1],
        '{"type":"item.started","item":{"id":"item_0","type":"command_execution","command":"bash -lc \'npm test\'",'
        '"aggregated_output":"","exit_code":null,"status":"in_progress"}}',
        '{"type":"item.started","item":{"id":"item_1","type":"mcp_tool_call","server":"orchestrator","tool":"status",'
        '"arguments":{"run_id":"r1"},"result":null,"error":null,"status":"in_progress"}}',
    )
    spent = reader.report.spent
    assert spent is not None and spent.turns == 1 and spent.tokens == 0  # a turn, no tokens yet
    entries, _ = reader.take_activity()
    assert [(e.kind, e.summary, e.tool) for e in entries] == [
        ("turn", "turn 1", None),
        ("tool", "shell: bash -lc 'npm test'", "shell"),
        ("tool", "mcp__orchestrator__status: r1", "mcp__orchestrator__status"),
    ]
    command_ref, mcp_ref = entries[1].ref, entries[2].ref
    assert command_ref is not None and command_ref.endswith("item_0") and command_ref != "item_0"
    feed(
        reader,
        '{"type":"item.completed","item":{"id":"item_0","type":"command_execution","command":"bash -lc \'npm test\'",'
        '"aggregated_output":"1 failing","exit_code":1,"status":"failed"}}',
        '{"type":"item.completed","item":{"id":"item_1","type":"mcp_tool_call","server":"orchestrator",'
        '"tool":"status","arguments":{"run_id":"r1"},"result":{"content":[]},"error":null,"status":"completed"}}',
        '{"type":"item.completed","item":{"id":"item_2","type":"file_change","changes":[{"path":"src/a.py",'
        '"kind":"update"}],"status":"completed"}}',
        *CODEX_OK[2:],
    )
    entries, _ = reader.take_activity()
    assert [(e.kind, e.summary, e.ref, e.failed) for e in entries[:2]] == [
        ("tool", "shell: bash -lc 'npm test'", command_ref, True),
        ("tool", "mcp__orchestrator__status: r1", mcp_ref, False),
    ]
    assert [(e.kind, e.summary, e.failed) for e in entries[2:]] == [
        ("tool", "apply_patch src/a.py", False),
        ("text", "All done: the file is written.", None),
        ("result", "success: All done: the file is written.", False),
    ]
    report = reader.finish()
    assert report.spent == Usage(input_tokens=1000, output_tokens=30, cache_read_tokens=200, turns=1)
    assert report.session_usage == report.spent.model_copy(update={"turns": 0}) and report.results == 1
    # Every process starts its items at item_0: the refs of two attempts differ.
    again = reader_for("codex-json")
    feed(again, CODEX_OK[1], '{"type":"item.started","item":{"id":"item_0","type":"command_execution","command":"ls"}}')
    assert again.take_activity()[0][1].ref not in (None, command_ref)


def test_codex_thread_totals_count_for_the_turns_of_this_process() -> None:
    reader = reader_for("codex-json")
    usage = '{{"type":"turn.completed","usage":{{"input_tokens":{},"cached_input_tokens":{},"output_tokens":{}}}}}'
    feed(reader, CODEX_OK[0], CODEX_OK[1], usage.format(1000, 200, 30))
    feed(reader, CODEX_OK[1], usage.format(2500, 1200, 50))
    report = reader.finish()
    assert report.spent == Usage(input_tokens=1300, output_tokens=50, cache_read_tokens=1200, turns=2)
    assert report.session_usage == Usage(input_tokens=1300, output_tokens=50, cache_read_tokens=1200)
    failed = read("codex-json", *codex_failure("boom"))
    assert failed.results == 1 and failed.spent == Usage(turns=1)


def test_codex_failed_turn_is_a_failed_result() -> None:
    reader = reader_for("codex-json")
    feed(reader, *codex_failure("You've hit your usage limit. Try again later."))
    assert taken(reader) == [
        ("turn", "turn 1", None, None),
        ("result", "You've hit your usage limit. Try again later.", None, True),
    ]


def test_gemini_activity_and_spending() -> None:
    tool = "read_file_1796073524202_0"
    reader = reader_for("gemini-json")
    feed(
        reader,
        GEMINI_INIT,
        GEMINI_USER,
        '{"type":"message","role":"assistant","content":"Let me ","delta":true}',
        '{"type":"message","role":"assistant","content":"look.","delta":true}',
        f'{{"type":"tool_use","tool_name":"read_file","tool_id":"{tool}","parameters":{{"file_path":"a.py"}}}}',
        '{"type":"tool_use","tool_name":"run_shell_command","tool_id":"sh1","parameters":{"command":"make"}}',
        f'{{"type":"tool_result","tool_id":"{tool}","status":"success","output":"x = 1"}}',
        '{"type":"tool_result","tool_id":"sh1","status":"error","output":"","error":{"type":"x","message":"no"}}',
        *GEMINI_OK[2:],
    )
    entries, _ = reader.take_activity()
    assert [(e.kind, e.summary, e.tool, e.ref, e.failed) for e in entries] == [
        ("turn", "turn 1", None, None, None),
        ("text", "Let me look.", None, None, None),
        ("tool", "read_file a.py", "read_file", tool, False),
        ("tool", "run_shell_command: make", "run_shell_command", "sh1", True),
        ("turn", "turn 2", None, None, None),  # the first message after the tool results
        ("text", "All done: the file is written.", None, None, None),
        ("result", "success: All done: the file is written.", None, None, False),
    ]
    report = reader.finish()
    assert report.spent == Usage(
        input_tokens=800, output_tokens=9, cache_read_tokens=100, turns=2, model="gemini-2.5-pro"
    )
    assert report.results == 1
    failed = reader_for("gemini-json")
    feed(failed, *gemini_error("[API Error: The model is overloaded. Please try again later.]"))
    assert taken(failed) == [("result", "[API Error: The model is overloaded. Please try again later.]", None, True)]


def test_opencode_activity_and_spending() -> None:
    done = {"status": "completed", "input": {"filePath": "a.py"}, "output": "", "title": "a.py"}
    timing = {"start": 1796074245000, "end": 1796074245120}
    failed = {"status": "error", "input": {"command": "make"}, "error": "exit 2", "time": timing}
    reader = reader_for("opencode-json")
    feed(
        reader,
        oc("step_start", part=oc_part("step-start", snapshot="106257ad")),
        oc_text("Let me edit a.py."),
        oc("tool_use", part=oc_part("tool", id="prt_1", callID="call_1", tool="edit", state={**done, "time": timing})),
        oc("tool_use", part=oc_part("tool", id="prt_2", callID="call_2", tool="bash", state=failed)),
        oc_step_finish(0.002, 1230),
        oc("step_start", part=oc_part("step-start", snapshot="2a")),
        oc_text("All done: the file is written."),
        oc_step_finish(0.00305, 1230),
    )
    entries, _ = reader.take_activity()
    assert [(e.kind, e.summary, e.tool, e.ref, e.failed, e.duration_ms) for e in entries] == [
        ("turn", "turn 1", None, None, None, None),
        ("text", "Let me edit a.py.", None, None, None, None),
        ("tool", "edit a.py", "edit", "prt_1", False, 120),
        ("tool", "bash: make", "bash", "prt_2", True, 120),
        ("turn", "turn 2", None, None, None, None),  # a finished step is no result
        ("text", "All done: the file is written.", None, None, None, None),
    ]
    report = reader.finish()
    assert report.spent is not None and report.spent.cost_usd == pytest.approx(0.00505)
    assert report.spent.model_copy(update={"cost_usd": 0}) == Usage(
        input_tokens=2000, output_tokens=50, cache_read_tokens=400, turns=2
    )
    assert report.results == 0
    feed(reader, oc_api_error("Internal server error", 500, {}))
    assert taken(reader) == [("result", "Internal server error (APIError, status 500)", None, True)]
    assert reader.report.results == 1


def test_opencode_running_tool_is_updated_when_it_ends() -> None:
    running = {"status": "running", "input": {"command": "sleep 1"}, "time": {"start": 1796074245000}}
    ended = {**running, "status": "completed", "time": {"start": 1796074245000, "end": 1796074246000}}
    reader = reader_for("opencode-json")
    feed(reader, oc("tool_use", part=oc_part("tool", id="prt_9", tool="bash", state=running)))
    assert taken(reader) == [("tool", "bash: sleep 1", "bash", None)]
    feed(reader, oc("tool_use", part=oc_part("tool", id="prt_9", tool="bash", state=ended)))
    entries, _ = reader.take_activity()
    assert [(e.ref, e.failed, e.duration_ms) for e in entries] == [("prt_9", False, 1000)]


@pytest.mark.parametrize(
    ("tool", "arguments", "summary"),
    [
        ("Read", {"file_path": "src/app.py", "limit": 20}, "Read src/app.py"),
        ("Edit", {"old_string": "a", "file_path": "b.py"}, "Edit b.py"),  # the telling field, wherever it is
        ("NotebookEdit", {"notebook_path": "n.ipynb"}, "NotebookEdit n.ipynb"),
        ("Bash", {"command": "npm test\n  --watch=false", "timeout": 5}, "Bash: npm test --watch=false"),
        ("Grep", {"pattern": "TODO", "path": "src"}, "Grep src"),
        ("WebFetch", {"url": "https://example.com/docs", "prompt": "summarize"}, "WebFetch: https://example.com/docs"),
        ("WebSearch", {"query": "pydantic v2"}, "WebSearch: pydantic v2"),
        ("Task", {"description": "Find the bug", "prompt": "long..."}, "Task: Find the bug"),
        ("TodoWrite", {"todos": [{"content": "x"}], "title": "plan"}, "TodoWrite: plan"),  # the first short text
        ("TodoWrite", {"todos": []}, "TodoWrite"),
        ("Weird", "not an object", "Weird"),
    ],
)
def test_a_tool_call_summary_names_the_telling_input(tool: str, arguments: Any, summary: str) -> None:
    assert streams._call_summary(tool, arguments) == summary


def test_summaries_are_one_cut_line() -> None:
    reader = reader_for("claude-json")
    long_path = "/very" * 10_000 + "/deep/app.py"
    feed(
        reader,
        claude_assistant("msg_1", {"type": "text", "text": "word\n" * 100_000}),
        claude_tool_use("msg_1", "toolu_1", "Read", {"file_path": long_path}),
        claude_tool_use("msg_1", "toolu_2", "X" * 1000, {"command": "y" * 100_000}),
        claude_result(result="z\n" * 100_000, total_cost_usd=123456.789, num_turns=10**9),
    )
    entries, _ = reader.take_activity()
    assert all(one_line(entry.summary) for entry in entries)
    assert entries[2].summary.startswith("Read …") and entries[2].summary.endswith("/deep/app.py")
    assert len(entries[2].summary) == ACTIVITY_SUMMARY_MAX
    assert entries[-1].summary.endswith("($123456.7890, 1000000000 turns)")


def test_activity_piling_up_between_takes_drops_the_oldest_and_counts_them() -> None:
    reader = reader_for("claude-json")
    calls = ACTIVITY_BUFFER_MAX + 500
    feed(reader, *(claude_tool_use(f"msg_{i}", f"toolu_{i}", "Read", {"file_path": f"f{i}"}) for i in range(calls)))
    entries, dropped = reader.take_activity()
    assert len(entries) == ACTIVITY_BUFFER_MAX and dropped == 2 * calls - ACTIVITY_BUFFER_MAX  # a turn and a call each
    assert entries[-1].ref == f"toolu_{calls - 1}" and reader.take_activity() == ([], 0)
    # Pending calls are capped too: the oldest are forgotten, and their results add nothing.
    feed(reader, claude_tool_result("toolu_0"), claude_tool_result(f"toolu_{calls - PENDING_CALLS_MAX}"))
    entries, dropped = reader.take_activity()
    assert [(e.ref, e.failed) for e in entries] == [(f"toolu_{calls - PENDING_CALLS_MAX}", False)] and dropped == 0
    spent = reader.report.spent
    assert spent is not None and spent.turns == calls  # the turns and tokens of forgotten messages still count
    assert spent.input_tokens == 1000 * calls


def test_a_changed_entry_dropped_before_its_take_comes_back_once_changed() -> None:
    log = ActivityLog(cap=2)
    log.call("t1", "Read", "Read a")
    log.add("text", "one")
    log.add("text", "two")  # the call is dropped
    log.returned("t1", failed=False, duration_ms=5)
    entries, dropped = log.take()
    assert [(e.summary, e.ref, e.failed) for e in entries] == [("two", None, None), ("Read a", "t1", False)]
    assert dropped == 2  # the call, and "one" once the result came back


def test_activity_is_taken_safely_from_another_thread() -> None:
    reader = reader_for("claude-json")
    lines = [json.dumps(claude_tool_use(f"m{i}", f"t{i}", "Read", {"path": str(i)})).encode() for i in range(3000)]
    seen: list[Activity] = []
    dropped = 0
    done = threading.Event()

    def take() -> None:
        nonlocal dropped
        while not done.is_set():
            entries, lost = reader.take_activity()
            seen.extend(entries)
            dropped += lost

    taker = threading.Thread(target=take)
    taker.start()
    for line in lines:
        reader.feed(line)
    done.set()
    taker.join()
    entries, lost = reader.take_activity()
    seen.extend(entries)
    assert len(seen) + dropped + lost == 6000
    turns = [int(e.summary.split()[1]) for e in seen if e.kind == "turn"]
    assert turns == sorted(turns)  # in order


def test_text_reader_has_no_activity() -> None:
    reader = reader_for("text")
    reader.feed(b'{"type": "assistant", "message": {"id": "m", "content": []}}')
    assert reader.take_activity() == ([], 0)
    report = reader.finish()
    assert report.spent is None and report.results == 0 and report.active_at is None


# --- every reader: hostile lines ---------------------------------------------------------------------------

JSON_OUTPUTS = sorted(name for name in READERS if name != "text")
HOSTILE: list[bytes] = [
    b"",
    b"   ",
    b"not json at all",
    b"\xff\xfe\x00garbage\x80",
    b"{",
    b'{"type": "result", "result": "cut off in the mid',
    b"[1, 2, 3]",
    b'"a string"',
    b"42",
    b"null",
    b'{"type": null}',
    b'{"type": ["result"]}',
    b'{"type": {"a": 1}}',
    b"{" + b'"a":{' * 100_000 + b"}" * 100_001,  # nested too deep for the parser
    b'{"type": "x", "pad": "' + b"y" * 3_000_000 + b'"}',
    b'{"type": "result", "cost": NaN, "total_cost_usd": Infinity, "usage": -Infinity}',
    # wrong types where each reader looks
    b'{"type": "result", "result": 5, "usage": [1], "is_error": "yes", "subtype": {"x": 1}, "api_error_status": "429"}',
    b'{"type": "result", "is_error": true, "result": ["a"], "permission_denials": [1, null, {"tool_name": 3}]}',
    b'{"type": "rate_limit_event", "rate_limit_info": {"status": "rejected", "resetsAt": 1e308}}',
    b'{"type": "rate_limit_event", "rate_limit_info": {"status": "rejected", "resetsAt": -5}}',
    b'{"type": "rate_limit_event", "rate_limit_info": "rejected"}',
    b'{"type": "thread.started", "thread_id": 12}',
    b'{"type": "item.completed", "item": {"type": "agent_message", "text": {"a": 1}}}',
    b'{"type": "item.completed", "item": "agent_message"}',
    b'{"type": "turn.completed", "usage": {"input_tokens": "many", "x": true, "y": -1, "z": 1.5}}',
    b'{"type": "turn.failed", "error": "just words"}',
    b'{"type": "error", "message": {"nested": true}}',
    b'{"type": "init", "session_id": ["a"]}',
    b'{"type": "message", "role": "assistant", "content": 7}',
    b'{"type": "result", "status": "error", "error": "429", "stats": "none"}',
    b'{"type": "result", "status": "error", "error": {"type": 1, "message": 2}}',
    b'{"type": "step_finish", "part": {"tokens": {"cache": {"read": "x"}, "input": 1e400}, "cost": "free"}}',
    b'{"type": "step_finish", "part": {"tokens": [1], "cost": Infinity}}',
    b'{"type": "text", "part": "text"}',
    b'{"type": "error", "error": {"name": 5, "data": {"statusCode": "429", "responseHeaders": [1]}}}',
    b'{"type": "error", "error": {"name": "APIError", "data": {"message": "x", "statusCode": 429, '
    b'"responseBody": "{\\"error\\": {\\"resets_at\\": 1e400}}", "responseHeaders": {"retry-after": "soon"}}}}',
    b'{"type": "error", "error": {"name": "APIError", "data": {"message": "Please retry in 1e999s", '
    b'"statusCode": 429, "responseHeaders": {"retry-after": "Mon, 99 Foo 2026 99:99:99 GMT", "retry-after-ms": "x"}}}}',
    b'{"type": "error", "error": {"name": "APIError", "data": {"message": "try again in 99999999 days", '
    b'"statusCode": 429, "responseHeaders": {"retry-after": "99999999999999999999"}}}}',
    # wrong types where the activity and spending are read
    b'{"type": "assistant", "message": {"id": 5, "content": "text", "usage": {"input_tokens": -1}}}',
    b'{"type": "assistant", "message": {"id": "m", "model": 3, "usage": [1], "content": [{"type": "tool_use", '
    b'"id": 7, "name": ["x"], "input": "cmd"}, {"type": "text", "text": 5}, null, 3]}}',
    b'{"type": "assistant", "message": {"id": "m", "content": [{"type": "tool_use", "id": "t", "name": "x", '
    b'"input": {"command": [1, null, "ls"], "path": {"a": 1}}}], "usage": {"output_tokens": 1e400}}}',
    b'{"type": "user", "message": {"content": [{"type": "tool_result", "tool_use_id": {"a": 1}, "is_error": "y"}]}}',
    b'{"type": "user", "message": {"content": "a message sent on stdin"}}',
    b'{"type": "result", "model_usage_since_last_result": {"m": {"costUSD": -3, "inputTokens": 1e400}, "n": 2}, '
    b'"num_turns": -2, "errors": [1, null, ""], "subtype": "error_max_turns", "total_cost_usd": -1}',
    b'{"type": "result", "model_usage_since_last_result": [1], "modelUsage": {"": 1, "m": {"costUSD": "x"}}, '
    b'"total_cost_usd": 1e308, "num_turns": 99999999999999999999999}',
    b'{"type": "item.started", "item": {"type": "mcp_tool_call", "id": ["x"], "server": 1}}',
    b'{"type": "item.started", "item": {"type": "mcp_tool_call", "id": "i", "server": 1, "arguments": [1]}}',
    b'{"type": "item.completed", "item": {"type": "file_change", "id": "i", "changes": [{"path": 3}, "x"], '
    b'"status": 9, "exit_code": "1"}}',
    b'{"type": "item.completed", "item": {"type": "command_execution", "id": "c", "command": {"a": 1}}}',
    b'{"type": "turn.completed", "usage": {"input_tokens": 5, "cached_input_tokens": 9}}',
    b'{"type": "tool_use", "tool_name": "x", "tool_id": 5, "parameters": [1]}',
    b'{"type": "tool_result", "tool_id": null, "status": ["error"]}',
    b'{"type": "tool_use", "part": {"tool": "bash", "id": "p", "state": {"status": "completed", '
    b'"time": {"start": "a", "end": 1e400}, "input": "x"}}}',
    b'{"type": "tool_use", "part": {"tool": "bash", "id": "q", "state": {"status": "error", '
    b'"time": {"start": 10, "end": 2}}}}',
    b'{"type": "result", "status": "success", "stats": {"input": -5, "cached": 1e400, "models": {"m": 1, "": {}}}}',
    b'{"type": "init", "model": {"a": 1}}',
]


@pytest.mark.parametrize("output", sorted(READERS))
def test_no_line_makes_a_reader_raise(output: str) -> None:
    reader = reader_for(output)
    for line in HOSTILE:
        reader.feed(line)
    report = reader.finish()
    assert report.error is None or (isinstance(report.error, str) and len(report.error) <= ERROR_MAX)
    assert report.output is None or isinstance(report.output, (str, int, list, dict))
    assert all(isinstance(name, str) for name in report.usage)
    entries, dropped = reader.take_activity()
    assert dropped == 0 and all(one_line(entry.summary) for entry in entries)
    assert report.spent is None or report.spent.tokens < 10**14


@pytest.mark.parametrize("output", JSON_OUTPUTS)
def test_only_json_lines_count(output: str) -> None:
    report = read(output, *HOSTILE[:9])
    assert report == AttemptReport()


@pytest.mark.parametrize(
    ("output", "key", "kind"),
    [("codex-json", "thread_id", "thread.started"), ("gemini-json", "session_id", "init")],
)
def test_a_session_id_that_argv_could_not_carry_is_not_kept(output: str, key: str, kind: str) -> None:
    for bad in ("a\x00b", "x" * 10_000, "", "id with spaces", "-rf"):
        assert read(output, {"type": kind, key: bad}).session_id is None
    assert read("opencode-json", {"type": "text", "sessionID": "ses_1\x00"}).session_id is None
    # The first id stays: a later line cannot replace the session a resume will use.
    assert read(output, {"type": kind, key: "first"}, {"type": kind, key: "second"}).session_id == "first"


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=8,
)
KEYS = [
    "type", "subtype", "session_id", "thread_id", "sessionID", "result", "is_error", "usage", "item", "text",
    "message", "error", "status", "stats", "role", "content", "part", "tokens", "cost", "rate_limit_info",
    "resetsAt", "data", "statusCode", "responseBody", "responseHeaders", "severity", "api_error_status",
]  # fmt: skip
TYPES = [
    "result", "system", "assistant", "rate_limit_event", "thread.started", "item.completed", "turn.completed",
    "turn.failed", "error", "init", "message", "tool_use", "step_start", "step_finish", "text",
]  # fmt: skip
EVENTS = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES)}, optional={key: JSON_VALUES for key in KEYS if key != "type"}
) | st.dictionaries(st.sampled_from(KEYS), JSON_VALUES, max_size=6)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(EVENTS, max_size=8), output=st.sampled_from(sorted(READERS)))
def test_arbitrary_events_never_make_a_reader_raise(events: list[dict[str, Any]], output: str) -> None:
    reader = reader_for(output)
    for event in events:
        reader.feed(json.dumps(event).encode())
    report = reader.finish()
    assert report.error is None or len(report.error) <= ERROR_MAX
    assert all(one_line(entry.summary) for entry in reader.take_activity()[0])
    if report.limit is not None and report.limit.resets_at is not None:
        assert report.limit.resets_at.tzinfo is not None


# --- the built-in profiles --------------------------------------------------------------------------------

VALUES = {
    "prompt": "You are a background sub-agent.\nTask:\nfix it",
    "task": "fix it",
    "run_id": "r1",
    "attempt": "1",
    "session_id": "sess-1",
    "mcp_config": "MCP.json",
    "opencode_config": "OPENCODE.json",
    "cwd": "CWD",
    "db": "DB",
}


def test_every_built_in_profile_has_a_reader() -> None:
    for name, profile in load_agents_config(None).profiles.items():
        assert profile.output in READERS, name


@pytest.mark.parametrize(
    ("name", "command", "resume"),
    [
        ("codex", ["codex", "exec", "--json"], ["resume", "sess-1", VALUES["prompt"], "--model", "m"]),
        ("gemini", ["gemini", f"--prompt={VALUES['prompt']}"], ["gemini", "--resume=sess-1"]),
        ("opencode", ["opencode", "run", "--format", "json"], ["--session", "sess-1"]),
    ],
)
def test_built_in_profiles_render_their_argv(name: str, command: list[str], resume: list[str]) -> None:
    profile = BUILTIN_PROFILES[name].model_copy(update={"extra_args": ["--model", "m"]})
    first = launch_argv(profile, [], VALUES, use_session=False)
    again = launch_argv(profile, [], VALUES, use_session=True)
    assert first[: len(command)] == command and first[-2:] == ["--model", "m"]
    assert VALUES["prompt"] in first or f"--prompt={VALUES['prompt']}" in first
    assert "sess-1" not in " ".join(first)
    assert any(again[i : i + len(resume)] == resume for i in range(len(again)))
    assert not any("{" in part and "}" in part and "=" not in part for part in first if part.startswith("{"))
    assert BUILTIN_PROFILES[name].output == f"{name}-json"


def test_codex_and_gemini_get_the_orchestrator_and_may_edit() -> None:
    codex = launch_argv(BUILTIN_PROFILES["codex"], [], VALUES, use_session=True)
    assert codex[codex.index("--sandbox") + 1] == "workspace-write"
    assert 'approval_policy="never"' in codex
    assert 'mcp_servers.orchestrator.command="mcp-orchestrator"' in codex
    assert "mcp_servers.orchestrator.required=true" in codex
    assert codex.index("--sandbox") < codex.index("resume")  # exec's options hold for the resumed session
    gemini = launch_argv(BUILTIN_PROFILES["gemini"], [], VALUES, use_session=False)
    assert {"--approval-mode=auto_edit", "--skip-trust", "--allowed-mcp-server-names=orchestrator"} <= set(gemini)
    opencode = BUILTIN_PROFILES["opencode"]
    assert opencode.env == {"OPENCODE_CONFIG": "{opencode_config}"}
