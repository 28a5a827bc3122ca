"""The real Claude Code against the scripted model stand-in, not through the orchestrator: proof that the
infrastructure the sub-agent tests build on behaves as the real API would make Claude Code behave.

What Claude Code 2.1.330 prints (`-p --output-format stream-json --verbose`, an API key) when the API refuses,
as these tests pin down:

- 429 rate_limit_error with `retry-after: 3600`: no retry, exit code 1. Lines: system/init; an `assistant`
  line (message.model "<synthetic>", content text "API Error: Request rejected (429) · <error.message>",
  fields error "rate_limit", is_api_error_message true, api_error_status 429, api_error_type
  "rate_limit_error", request_id); a `result` with subtype "success" (sic), is_error true, terminal_reason
  "api_error", api_error_status 429, api_error_type "rate_limit_error", result = that text, num_turns 1,
  total_cost_usd 0. The reset time is in no line. A short retry-after (2 s) is waited out instead: a
  system/api_retry line (attempt, max_retries 10, retry_delay_ms ~ the retry-after, error_status 429,
  error "rate_limit") and the run goes on.
- 529 overloaded_error: retried with backoff (about 0.5, 1.2, 2.2, 4, 8 s...), one system/api_retry line
  per attempt (error_status 529, error "overloaded"); once CLAUDE_CODE_MAX_RETRIES is spent: exit code 1,
  an assistant line with error "server_error", api_error_status 529, api_error_type "overloaded_error",
  text "API Error: 529 overloaded error. This is a server-side issue, ...", and a result as above
  (is_error true, terminal_reason "api_error", api_error_status 529).
- 401 authentication_error (invalid API key): retried like a 529 (system/api_retry, error_status 401, error
  "authentication_failed"); then exit code 1, an assistant line with error "authentication_failed",
  api_error_status 401, api_error_type "authentication_error", text "Invalid API key · Fix external API
  key", and a result with is_error true, terminal_reason "api_error", api_error_status 401.
- No `rate_limit_event` line with an API key, even when answers (200s and the 429) carry the
  anthropic-ratelimit-unified-* headers (status allowed / allowed_warning / rejected, reset, 5h/7d
  windows, representative-claim): those are for subscription (OAuth) logins only.
- Claude Code does its own retries: every request it sends carries X-Stainless-Retry-Count 0.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .claude_code import claude_command, claude_env, parse_lines, run_claude
from .model_standin import JSON, Standin, Turn, hold, http_error, reply, text, tool_use

pytestmark = pytest.mark.processes


@pytest.fixture
def standin() -> Iterator[Standin]:
    with Standin() as running:
        yield running


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    return tmp_path / "claude-config"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    return work


def test_a_text_turn_ends_in_a_successful_result(standin: Standin, config_dir: Path, workdir: Path) -> None:
    standin.add(text("Hello from the stand-in."))
    done = run_claude(standin, config_dir, workdir, "hi")
    assert done.returncode == 0, done.stderr
    first, last = done.lines[0], done.lines[-1]
    assert (first["type"], first["subtype"]) == ("system", "init") and first["session_id"]
    assert (last["type"], last["subtype"], last["is_error"]) == ("result", "success", False)
    assert last["result"] == "Hello from the stand-in." and last["session_id"] == first["session_id"]
    assert last["total_cost_usd"] > 0  # the stand-in's usage is priced
    [request] = standin.scripted_requests
    assert request.path == "/v1/messages" and request.body["stream"] is True
    assert request.headers["x-api-key"] == claude_env(standin, config_dir)["ANTHROPIC_API_KEY"]
    assert standin.remaining == 0


def test_a_write_without_permission_is_denied_and_the_model_sees_the_error(
    standin: Standin, config_dir: Path, workdir: Path
) -> None:
    write = tool_use("Write", {"file_path": "out.txt", "content": "never written"})

    def answer(body: JSON) -> Turn:
        """A callable turn: the model's last word depends on what it was sent."""
        [result] = [block for block in body["messages"][-1]["content"] if block.get("type") == "tool_result"]
        return text(f"is_error={result.get('is_error')}")

    standin.add(write, answer)
    done = run_claude(standin, config_dir, workdir, "write out.txt")
    assert done.returncode == 0, done.stderr
    [denied] = done.of("system", "permission_denied")
    assert denied["tool_name"] == "Write" and denied["tool_use_id"] == write.id
    assert not (workdir / "out.txt").exists()
    [result] = standin.tool_results()
    assert result.tool_use_id == write.id and result.is_error
    assert "haven't granted it yet" in result.text
    assert done.result["subtype"] == "success" and done.result["result"] == "is_error=True"
    assert [denial["tool_name"] for denial in done.result["permission_denials"]] == ["Write"]


def test_a_429_with_a_long_retry_after_ends_the_run_at_once(standin: Standin, config_dir: Path, workdir: Path) -> None:
    standin.add(http_error(429, "rate_limit_error", {"retry-after": "3600"}, message="slow down"))
    done = run_claude(standin, config_dir, workdir, "hi")
    assert done.returncode == 1
    assert [(line["type"], line.get("subtype")) for line in done.lines] == [
        ("system", "init"),
        ("assistant", None),
        ("result", "success"),
    ]
    _assert_api_error(done.lines[1], done.result, 429, "rate_limit_error", "rate_limit")
    assert done.lines[1]["message"]["content"][0]["text"] == "API Error: Request rejected (429) · slow down"
    assert len(standin.scripted_requests) == 1  # not retried


def test_a_529_is_retried_then_ends_the_run(standin: Standin, config_dir: Path, workdir: Path) -> None:
    standin.add(*[http_error(529, "overloaded_error")] * 2)
    done = run_claude(standin, config_dir, workdir, "hi", env={"CLAUDE_CODE_MAX_RETRIES": "1"})
    assert done.returncode == 1
    [retry] = done.of("system", "api_retry")
    assert (retry["attempt"], retry["max_retries"], retry["error_status"], retry["error"]) == (1, 1, 529, "overloaded")
    [assistant] = done.of("assistant")
    _assert_api_error(assistant, done.result, 529, "overloaded_error", "server_error")
    assert len(standin.scripted_requests) == 2


def test_a_401_invalid_api_key_ends_the_run(standin: Standin, config_dir: Path, workdir: Path) -> None:
    standin.add(http_error(401, "authentication_error", message="invalid x-api-key"))
    done = run_claude(standin, config_dir, workdir, "hi", env={"CLAUDE_CODE_MAX_RETRIES": "0"})
    assert done.returncode == 1
    [assistant] = done.of("assistant")
    _assert_api_error(assistant, done.result, 401, "authentication_error", "authentication_failed")
    assert done.result["result"] == "Invalid API key · Fix external API key"


def test_no_rate_limit_event_with_an_api_key(standin: Standin, config_dir: Path, workdir: Path) -> None:
    reset = int(time.time()) + 3600
    standin.add(
        reply(tool_use("Read", {"file_path": "missing.txt"}), headers=_unified("allowed_warning", reset)),
        http_error(429, "rate_limit_error", {"retry-after": "3600", **_unified("rejected", reset)}),
    )
    done = run_claude(standin, config_dir, workdir, "hi")
    assert done.returncode == 1
    assert not done.of("rate_limit_event")
    assert done.result["api_error_status"] == 429 and str(reset) not in json.dumps(done.lines)


def test_resume_carries_the_earlier_messages(standin: Standin, config_dir: Path, workdir: Path) -> None:
    standin.add(text("first answer"), text("second answer"))
    first = run_claude(standin, config_dir, workdir, "first prompt")
    assert first.returncode == 0, first.stderr
    session = first.result["session_id"]
    again = run_claude(standin, config_dir, workdir, "second prompt", "--resume", session)
    assert again.returncode == 0, again.stderr
    assert again.result["result"] == "second answer" and again.result["session_id"] == session
    said = json.dumps(standin.scripted_requests[-1].body["messages"])
    assert all(words in said for words in ("first prompt", "first answer", "second prompt"))


def test_a_held_turn_lets_the_test_act_while_the_model_thinks(
    standin: Standin, config_dir: Path, workdir: Path
) -> None:
    held = hold(text("after the wait"))
    standin.add(held)
    process = subprocess.Popen(
        claude_command("hi"),
        cwd=workdir,
        env=claude_env(standin, config_dir),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        held.wait_reached()
        assert process.poll() is None  # Claude Code waits on the model
        held.release()
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert parse_lines(stdout.splitlines())[-1]["result"] == "after the wait"


def test_side_requests_and_plain_json_leave_the_script_alone(standin: Standin) -> None:
    """No binary here: what the stand-in answers to requests without tools, and without stream."""
    standin.add(tool_use("Bash", {"command": "true"}, id="toolu_fixed"))
    side = _post(standin, {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "title?"}]})
    assert side["content"] == [{"type": "text", "text": "ok"}] and standin.remaining == 1
    tools = [{"name": "Bash", "input_schema": {"type": "object"}}]
    main = _post(standin, {"model": "m", "max_tokens": 5, "tools": tools, "messages": []})
    assert main["stop_reason"] == "tool_use" and main["content"][0]["id"] == "toolu_fixed"
    assert _post(standin, {"model": "m", "max_tokens": 5, "tools": tools, "messages": []})["content"] == [
        {"type": "text", "text": "done."}
    ]
    assert [request.scripted for request in standin.requests] == [False, True, True]


def _post(standin: Standin, body: JSON) -> Any:
    request = urllib.request.Request(
        f"{standin.url}/v1/messages?beta=true", json.dumps(body).encode(), {"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        return json.load(answer)


def _unified(status: str, reset: int) -> dict[str, str]:
    """The subscription rate-limit headers the real API sends."""
    prefix = "anthropic-ratelimit-unified"
    return {
        f"{prefix}-status": status,
        f"{prefix}-reset": str(reset),
        f"{prefix}-5h-status": status,
        f"{prefix}-5h-reset": str(reset),
        f"{prefix}-5h-utilization": "1.0" if status == "rejected" else "0.95",
        f"{prefix}-representative-claim": "five_hour",
    }


def _assert_api_error(assistant: JSON, result: JSON, status: int, error_type: str, error: str) -> None:
    assert assistant["error"] == error and assistant["is_api_error_message"] is True
    assert (assistant["api_error_status"], assistant["api_error_type"]) == (status, error_type)
    assert assistant["message"]["model"] == "<synthetic>"
    assert result["is_error"] is True and result["terminal_reason"] == "api_error"
    assert (result["api_error_status"], result["api_error_type"]) == (status, error_type)
    assert result["result"] == assistant["message"]["content"][0]["text"]


def test_a_callable_turn_that_fails_stops_the_agent_and_fails_the_test(config_dir: Path, workdir: Path) -> None:
    def wrong(body: JSON) -> Turn:
        raise ValueError("the model saw the wrong thing")

    standin = Standin([wrong]).start()
    try:
        done = run_claude(standin, config_dir, workdir, "hi")
    finally:
        with pytest.raises(AssertionError, match="the model saw the wrong thing"):
            standin.stop()
    # Claude Code sends a request refused with a 400 again a few times (without api_retry lines), so the
    # stand-in refuses every request after the failed turn.
    assert done.returncode == 1 and done.result["api_error_status"] == 400
    assert "the model saw the wrong thing" in done.result["result"]
