"""Reading what a harness prints, line by line as it arrives: its session id, its result, why it
failed, and whether it stopped at a usage limit.

The runner feeds every line of the agent's stdout to the reader of the profile's ``output``
format; a reader keeps only what it needs (bounded), so a long session costs no memory. What it
learns is an ``AttemptReport``: the runner records the session id the moment it is known (so an
attempt killed mid-way can still be resumed) and the rest when the agent exits.

Claude Code's lines follow the Claude Agent SDK's message types (``SDKMessage`` in its
``sdk.d.ts``): ``system``/``init`` first, ``assistant`` and ``user`` messages, ``system`` notices,
``rate_limit_event`` (``rate_limit_info``: ``status``, ``resetsAt`` in epoch seconds,
``rateLimitType``), and a final ``result`` (``subtype``, ``is_error``, ``result``,
``terminal_reason``, ``api_error_status``, ``total_cost_usd``, ``usage``, ``num_turns``).

Codex's ``codex exec --json`` lines are its ``ThreadEvent`` (``codex-rs/exec/src/exec_events.rs``; the
same types in ``@openai/codex-sdk``'s ``index.d.ts``): ``thread.started`` (``thread_id``) first, then
``turn.started``, ``item.started``/``item.updated``/``item.completed`` (``item.type`` ``agent_message``
with ``text``, ``command_execution``, ``file_change``, ``mcp_tool_call``, ``error`` = a warning, ...),
``error`` (``message``; also sent for retries that may still succeed: "Reconnecting... 2/5 (...)"), and
``turn.completed`` (``usage``: the thread's token totals) or ``turn.failed`` (``error.message``). A
usage limit is only words there ("You've hit your usage limit. ... try again at 3:28 PM.", local time).

Gemini CLI's ``--output-format stream-json`` lines (``JsonStreamEventType`` in its bundle, written by
``nonInteractiveCli``): ``init`` (``session_id``, ``model``), ``message`` (``role`` user/assistant,
``content``; the assistant's text in ``delta`` pieces), ``tool_use``, ``tool_result``, ``error``
(``severity`` warning/error, ``message``) and a last ``result`` (``status`` success/error, ``error``
``{type, message}``, ``stats`` with token counts). An API error is "[API Error: <message>]"; quota and
rate-limit errors come after its own retries ("You have exhausted your daily quota on this model.",
"Resource has been exhausted ... Suggested retry after 60s.").

OpenCode's ``opencode run --format json`` lines (its ``run`` command) are ``{type, timestamp,
sessionID, ...}``: ``step_start``/``step_finish`` (``part.tokens``, ``part.cost``), ``text``
(``part.text``), ``tool_use`` (``part.state``), ``reasoning`` and ``error`` (``error``: ``{name, data:
{message, statusCode, isRetryable, responseHeaders, responseBody}}``), sent once its retries are spent.
"""

from __future__ import annotations

import json
import math
import re
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Literal, Protocol

OUTPUT_MAX = 64 * 1024  # the final output kept, in characters
ERROR_MAX = 4 * 1024  # the harness's own account of a failure, in characters

LimitKind = Literal["usage_limit", "rate_limit", "overloaded"]

# How a harness words an exhausted plan when it gives no structured field for it.
_USAGE_LIMIT_TEXT = re.compile(r"usage limit|hit your limit|limit reached|quota exceeded|out of (extra )?usage", re.I)


@dataclass
class Limit:
    """The account (not this attempt) cannot go on now: until ``resets_at`` when the harness said."""

    kind: LimitKind
    resets_at: datetime | None = None
    detail: str = ""

    def describe(self) -> str:
        what = {"usage_limit": "usage limit", "rate_limit": "rate limit", "overloaded": "model overloaded"}[self.kind]
        return f"{what}: {self.detail}" if self.detail else what


@dataclass
class AttemptReport:
    """What an attempt's output said, as far as its format tells."""

    session_id: str | None = None
    output: Any = None
    error: str | None = None  # the harness's own words for why the attempt failed
    limit: Limit | None = None
    cost_usd: float | None = None
    usage: dict[str, Any] = field(default_factory=dict)


class StreamReader(Protocol):
    report: AttemptReport

    def feed(self, line: bytes) -> None:
        """One line of stdout (without its newline; a line too long to keep arrives cut)."""

    def finish(self) -> AttemptReport:
        """The report, once stdout has ended."""


class TextReader:
    """Any program: the final output is the end of what it printed."""

    def __init__(self) -> None:
        self.report = AttemptReport()
        self._tail: deque[str] = deque()
        self._size = 0

    def feed(self, line: bytes) -> None:
        text = line.decode(errors="replace")
        self._tail.append(text)
        self._size += len(text) + 1
        while self._size > OUTPUT_MAX and len(self._tail) > 1:
            self._size -= len(self._tail.popleft()) + 1

    def finish(self) -> AttemptReport:
        text = "\n".join(self._tail).strip()
        self.report.output = text[-OUTPUT_MAX:] or None
        return self.report


class ClaudeReader:
    """Claude Code's ``--output-format stream-json`` (or ``json``: one result line)."""

    def __init__(self) -> None:
        self.report = AttemptReport()

    def feed(self, line: bytes) -> None:
        message = _json_object(line)
        if message is None:
            return
        if isinstance(session := message.get("session_id"), str) and session and self.report.session_id is None:
            self.report.session_id = session
        kind = message.get("type")
        if kind == "rate_limit_event":
            self._rate_limit(message.get("rate_limit_info"))
        elif kind == "assistant" and message.get("error") in ("rate_limit", "overloaded"):
            self._limit("overloaded" if message["error"] == "overloaded" else "rate_limit", None, "")
        elif kind == "result":
            self._result(message)

    def finish(self) -> AttemptReport:
        return self.report

    def _rate_limit(self, info: Any) -> None:
        if not isinstance(info, dict) or info.get("status") != "rejected":
            return  # allowed, or a warning: the attempt goes on
        resets_at = _epoch(info.get("resetsAt"))
        kind = str(info.get("rateLimitType") or "")
        self._limit("usage_limit", resets_at, f"{kind} window".strip() if kind else "")

    def _limit(self, kind: LimitKind, resets_at: datetime | None, detail: str) -> None:
        known = self.report.limit
        if known is None or (known.resets_at is None and resets_at is not None):
            self.report.limit = Limit(kind, resets_at, detail)

    def _result(self, message: dict[str, Any]) -> None:
        result = message.get("result")
        self.report.output = result[-OUTPUT_MAX:] if isinstance(result, str) else result
        if isinstance(cost := message.get("total_cost_usd"), int | float):
            self.report.cost_usd = float(cost)
        if isinstance(usage := message.get("usage"), dict):
            self.report.usage = usage
        if not message.get("is_error") and message.get("subtype") in (None, "success"):
            return
        status = message.get("api_error_status")
        text = result if isinstance(result, str) else ""
        if status == 429 or (text and _USAGE_LIMIT_TEXT.search(text)):
            self._limit("usage_limit" if status != 429 else "rate_limit", None, text[:200])
        elif status == 529 or message.get("api_error_type") == "overloaded_error":
            self._limit("overloaded", None, text[:200])
        self.report.error = _claude_error(message, text)


def _claude_error(message: dict[str, Any], text: str) -> str:
    """Claude Code's account of a failed result, in its own words: text first, then its codes."""
    codes = [
        f"{name} {value}"
        for name in ("subtype", "terminal_reason", "api_error_status", "api_error_type")
        if (value := message.get(name)) not in (None, "", "success")
    ]
    denials = message.get("permission_denials")
    if isinstance(denials, list) and denials:
        names = sorted({str(d.get("tool_name")) for d in denials if isinstance(d, dict)})
        codes.append(f"permission denied for {', '.join(names)}")
    words = text.strip() or "Claude Code reported an error without a message"
    return f"{words} ({'; '.join(codes)})"[:ERROR_MAX] if codes else words[:ERROR_MAX]


def _json_object(line: bytes) -> dict[str, Any] | None:
    line = line.strip()
    if not line.startswith(b"{"):
        return None
    try:
        document = json.loads(line)
    except (ValueError, RecursionError):
        return None  # a log line, a line cut for length, or one nested too deep to read
    return document if isinstance(document, dict) else None


def _epoch(value: Any) -> datetime | None:
    """A reset time given in epoch seconds (milliseconds are recognized by their size)."""
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        return None
    seconds = value / 1000 if value > 1e11 else value
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None


class CodexReader:
    """Codex's ``codex exec --json`` (and ``codex exec resume --json``): the thread id, the last agent
    message, the turn's usage, and why the turn failed (``turn.failed``, or an ``error`` that no
    completed turn followed: ``error`` lines are also sent for retries that then succeed)."""

    def __init__(self) -> None:
        self.report = AttemptReport()
        self._error: str | None = None  # the last `error` line since the last completed turn

    def feed(self, line: bytes) -> None:
        event = _json_object(line)
        if event is None:
            return
        kind = event.get("type")
        if kind == "thread.started":
            _keep_session(self.report, event.get("thread_id"))
        elif kind == "item.completed":
            item = event.get("item")
            if isinstance(item, dict) and item.get("type") == "agent_message" and isinstance(item.get("text"), str):
                self.report.output = item["text"][-OUTPUT_MAX:]
        elif kind == "error" and isinstance(event.get("message"), str):
            self._error = event["message"][:ERROR_MAX]
        elif kind == "turn.completed":
            self._error = None  # what went wrong on the way was retried away
            if isinstance(usage := event.get("usage"), dict):
                self.report.usage = _counts(usage)
        elif kind == "turn.failed":
            error = event.get("error")
            message = error.get("message") if isinstance(error, dict) else None
            if not isinstance(message, str) or not message.strip():
                message = self._error or "Codex reported a failed turn without a message"
            self._failed(message)

    def finish(self) -> AttemptReport:
        if self.report.error is None and self._error is not None:
            self._failed(self._error)  # an error, and no turn completed after it
        return self.report

    def _failed(self, message: str) -> None:
        self.report.error = message.strip()[:ERROR_MAX]
        self.report.limit = _limit_in_words(message, _now())


class GeminiReader:
    """Gemini CLI's ``--output-format stream-json``: the session id from ``init``, the assistant's last
    answer (its text after the last tool call, sent in pieces), the ``result``'s stats, and its error."""

    def __init__(self) -> None:
        self.report = AttemptReport()
        self._answer = _Tail()  # the assistant's text since the last tool call
        self._earlier = ""  # the text before it, in case the last turn said nothing
        self._error: str | None = None  # the last error-severity `error` line not followed by a result

    def feed(self, line: bytes) -> None:
        event = _json_object(line)
        if event is None:
            return
        kind = event.get("type")
        if kind == "init":
            _keep_session(self.report, event.get("session_id"))
        elif kind == "message" and event.get("role") == "assistant" and isinstance(event.get("content"), str):
            self._answer.add(event["content"])
        elif kind == "tool_use" and self._answer:
            self._earlier, self._answer = self._answer.text(), _Tail()
        elif kind == "error" and event.get("severity") == "error" and isinstance(event.get("message"), str):
            self._error = event["message"][:ERROR_MAX]
        elif kind == "result":
            self._result(event)

    def finish(self) -> AttemptReport:
        self.report.output = (self._answer.text() or self._earlier).strip() or None
        if self.report.error is None and self._error is not None:
            self._failed(self._error, None)  # no result line came after it
        return self.report

    def _result(self, event: dict[str, Any]) -> None:
        if isinstance(stats := event.get("stats"), dict):
            self.report.usage = _counts(stats)
        if event.get("status") == "success":
            self._error = None
            return
        error = event.get("error")
        error = error if isinstance(error, dict) else {}
        message = error.get("message")
        kind = error.get("type")
        self._failed(
            message if isinstance(message, str) and message.strip() else self._error,
            kind if isinstance(kind, str) and kind not in ("", "unknown") else None,
        )
        self._error = None

    def _failed(self, message: str | None, kind: str | None) -> None:
        words = (message or "").strip() or "Gemini CLI reported an error without a message"
        self.report.error = (f"{words} ({kind})" if kind else words)[:ERROR_MAX]
        self.report.limit = _limit_in_words(message or "", _now())


class OpenCodeReader:
    """OpenCode's ``opencode run --format json``: the session id (on every line), the text of the last
    step, tokens and cost summed over the steps, and the ``error`` lines (sent once its retries are
    spent): their message, and a limit from the status code, the response body or its headers."""

    def __init__(self) -> None:
        self.report = AttemptReport()
        self._step = _Tail()  # the text of the current step
        self._earlier = ""  # the text of the last step that had some
        self._errors: list[str] = []

    def feed(self, line: bytes) -> None:
        event = _json_object(line)
        if event is None:
            return
        _keep_session(self.report, event.get("sessionID"))
        kind = event.get("type")
        part = event.get("part")
        part = part if isinstance(part, dict) else {}
        if kind == "step_start" and self._step:
            self._earlier, self._step = self._step.text(), _Tail()
        elif kind == "text" and isinstance(text := part.get("text"), str) and text.strip():
            self._step.add(f"\n{text}" if self._step else text)
        elif kind == "step_finish":
            self._step_finished(part)
        elif kind == "error":
            self._failed(event.get("error"))

    def finish(self) -> AttemptReport:
        self.report.output = (self._step.text() or self._earlier).strip() or None
        return self.report

    def _step_finished(self, part: dict[str, Any]) -> None:
        if (cost := _number(part.get("cost"))) is not None and cost >= 0:
            self.report.cost_usd = (self.report.cost_usd or 0.0) + cost
        tokens = part.get("tokens")
        if not isinstance(tokens, dict):
            return
        flat = {  # {"cache": {"read": 200}} counts as "cache_read"
            f"{name}_{inner}": count
            for name, value in list(tokens.items())[:USAGE_KEYS]
            if isinstance(value, dict)
            for inner, count in list(value.items())[:USAGE_KEYS]
        }
        for name, count in _counts({**tokens, **flat}).items():
            if len(self.report.usage) < USAGE_KEYS or name in self.report.usage:
                self.report.usage[name] = self.report.usage.get(name, 0) + count

    def _failed(self, error: Any) -> None:
        name = message = body = None
        status: int | None = None
        headers: dict[Any, Any] = {}
        if isinstance(error, dict):
            data = error["data"] if isinstance(error.get("data"), dict) else {}
            name = _text(error.get("name"))
            message = _text(data.get("message")) or _text(error.get("message"))
            status = data["statusCode"] if type(data.get("statusCode")) is int else None
            body = _text(data.get("responseBody"))
            headers = data["responseHeaders"] if isinstance(data.get("responseHeaders"), dict) else {}
        elif isinstance(error, str):
            message = error
        codes = ", ".join(c for c in (name, f"status {status}" if status is not None else None) if c)
        words = (message or "").strip() or "OpenCode reported an error without a message"
        if len(self._errors) < 10:
            self._errors.append(f"{words} ({codes})" if codes else words)
            self.report.error = "\n".join(self._errors)[:ERROR_MAX]
        limit = _opencode_limit(status, message or "", body or "", headers)
        known = self.report.limit
        if limit is not None and (known is None or (known.resets_at is None and limit.resets_at is not None)):
            self.report.limit = limit


USAGE_KEYS = 32  # token counters kept from a harness's usage
# What a harness's session id is made of: it goes into a resume's argv, where a leading "-" would be an option.
_SESSION_ID = re.compile(r"[\w.:][\w.:-]{0,199}", re.ASCII)

# How Codex, Gemini CLI and OpenCode word a limit ("usage_limit_reached" and "insufficient_quota" are the
# OpenAI error types; "exhausted your daily quota" Gemini's per-day quota; "spend cap" and "out of credits"
# Codex's workspace limits; not "limit reached", which OpenAI's per-minute "Rate limit reached" also says).
# Claude's are read by _USAGE_LIMIT_TEXT above.
_QUOTA_TEXT = re.compile(
    r"usage.?limit|hit your limit|quota exceeded|exceeded your current quota|insufficient.?quota"
    r"|exhausted your daily quota|out of (extra )?(usage|credits)|spend cap",
    re.I,
)
_OVERLOAD_TEXT = re.compile(
    r"overloaded|at capacity|exhausted your capacity|capacity exhausted|high demand|\b(503|529)\b|unavailable", re.I
)
_RATE_TEXT = re.compile(r"rate.?limit|too many requests|resource.{0,16}exhausted|\b429\b", re.I)
_RETRY_AFTER = re.compile(r"(?:retry after|retry in|try again in)\s+(\d+(?:\.\d+)?)\s*(ms|s)\b", re.I)
_RESET_IN = re.compile(
    r"(?:try again|resets?) in\s+((?:\d+\s*(?:days?|hours?|minutes?|seconds?)\b[\s,]*(?:and\s+)?)+)", re.I
)
_RESET_AT = re.compile(  # Codex: "try again at 3:28 PM." today, or "at Aug 8th, 2026 12:30 PM.", local time
    r"try again at\s+(?:([A-Z][a-z]{2}) (\d{1,2})(?:st|nd|rd|th)?, (\d{4}) )?(\d{1,2}:\d{2} [AP]M)", re.I
)
_UNIT_S = {"day": 86_400, "hour": 3600, "minute": 60, "second": 1}
RESET_MAX = timedelta(days=366)  # a reset further away than this is not believed


def _now() -> datetime:
    """Now, in this machine's time zone (the one a harness words its local reset times in)."""
    return datetime.now(UTC).astimezone()


class _Tail:
    """The end of a text that arrives in pieces: at most OUTPUT_MAX characters are kept."""

    def __init__(self) -> None:
        self._parts: deque[str] = deque()
        self._size = 0

    def add(self, text: str) -> None:
        text = text[-OUTPUT_MAX:]
        self._parts.append(text)
        self._size += len(text)
        while self._size - len(self._parts[0]) >= OUTPUT_MAX:  # the pieces after the first fill it
            self._size -= len(self._parts.popleft())

    def text(self) -> str:
        return "".join(self._parts)[-OUTPUT_MAX:]

    def __bool__(self) -> bool:
        return self._size > 0


def _keep_session(report: AttemptReport, value: Any) -> None:
    if report.session_id is None and isinstance(value, str) and _SESSION_ID.fullmatch(value):
        report.session_id = value


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _counts(values: dict[Any, Any]) -> dict[str, int]:
    """The whole, non-negative numbers of a usage object (nested objects and anything else left out)."""
    counts: dict[str, int] = {}
    for name, value in values.items():
        if len(counts) >= USAGE_KEYS:
            break
        if isinstance(name, str) and len(name) <= 100 and type(value) is int and value >= 0:
            counts[name] = value
    return counts


def _after(seconds: float, now: datetime) -> datetime | None:
    """``now`` plus a delay a harness gave, if it is believable."""
    if not math.isfinite(seconds) or seconds <= 0 or seconds > RESET_MAX.total_seconds():
        return None
    return (now + timedelta(seconds=seconds)).astimezone(UTC)


def _limit_in_words(text: str, now: datetime) -> Limit | None:
    """The limit a harness's error message tells of, if any, and its reset time when the words give one."""
    text = text[:ERROR_MAX]
    if _QUOTA_TEXT.search(text):
        kind: LimitKind = "usage_limit"
    elif _OVERLOAD_TEXT.search(text):
        kind = "overloaded"
    elif _RATE_TEXT.search(text):
        kind = "rate_limit"
    else:
        return None
    return Limit(kind, _reset_in_words(text, now), " ".join(text.split())[:200])


def _reset_in_words(text: str, now: datetime) -> datetime | None:
    text = text[:ERROR_MAX]
    if found := _RETRY_AFTER.search(text):
        return _after(float(found[1]) / (1000 if found[2].lower() == "ms" else 1), now)
    if found := _RESET_IN.search(text):
        parts = re.findall(r"(\d+)\s*(day|hour|minute|second)", found[1], re.I)
        return _after(sum(int(count) * _UNIT_S[unit.lower()] for count, unit in parts), now)
    if found := _RESET_AT.search(text):
        month, day, year, clock = found.groups()
        try:
            at = datetime.strptime(clock.upper(), "%I:%M %p")
            date = datetime.strptime(f"{month} {day} {year}", "%b %d %Y").date() if month else now.date()
        except ValueError:
            return None
        reset = datetime.combine(date, at.time(), now.tzinfo)  # to the minute: it resets within the next one
        return (reset + timedelta(minutes=1)).astimezone(UTC) if now < reset <= now + RESET_MAX else None
    return None


def _opencode_limit(status: int | None, message: str, body: str, headers: dict[Any, Any]) -> Limit | None:
    """An OpenCode API error that is a limit: 429 (a usage limit when the words say so), 503 or 529; its
    reset from the body (``error.resets_at``, epoch seconds, as OpenAI's usage_limit_reached gives it),
    the ``retry-after-ms``/``retry-after`` headers, or the words."""
    message = message[:ERROR_MAX]
    words = f"{message} {body[:ERROR_MAX]}"
    if _QUOTA_TEXT.search(words):
        kind: LimitKind = "usage_limit"
    elif status in (503, 529) or (status is None and _OVERLOAD_TEXT.search(words)):
        kind = "overloaded"
    elif status == 429 or (status is None and _RATE_TEXT.search(words)):
        kind = "rate_limit"
    else:
        return None
    now = _now()
    resets_at = _body_reset(body, now) or _header_reset(headers, now) or _reset_in_words(words, now)
    return Limit(kind, resets_at, " ".join(message.split())[:200])


def _body_reset(body: str, now: datetime) -> datetime | None:
    document = _json_object(body[:OUTPUT_MAX].encode(errors="replace"))
    error = document.get("error") if document is not None else None
    if not isinstance(error, dict):
        return None
    if (at := _epoch(error.get("resets_at"))) is not None:
        return at if now < at <= now + RESET_MAX else None
    seconds = _number(error.get("resets_in_seconds"))
    return _after(seconds, now) if seconds is not None else None


def _header_reset(headers: dict[Any, Any], now: datetime) -> datetime | None:
    named = {str(name).lower(): value for name, value in list(headers.items())[:100] if isinstance(value, str)}
    try:
        if "retry-after-ms" in named:
            return _after(float(named["retry-after-ms"]) / 1000, now)
        if "retry-after" in named:
            value = named["retry-after"].strip()
            if re.fullmatch(r"\d+(\.\d+)?", value):
                return _after(float(value), now)
            at = parsedate_to_datetime(value)
            return at.astimezone(UTC) if at.tzinfo is not None and now < at <= now + RESET_MAX else None
    except (ValueError, TypeError, OverflowError):
        return None
    return None


READERS: dict[str, type[StreamReader]] = {
    "text": TextReader,
    "claude-json": ClaudeReader,
    "codex-json": CodexReader,
    "gemini-json": GeminiReader,
    "opencode-json": OpenCodeReader,
}


def reader_for(output: str) -> StreamReader:
    """The reader of a profile's ``output`` format."""
    return READERS.get(output, TextReader)()
