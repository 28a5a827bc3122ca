"""Reading what a harness prints, line by line as it arrives: its session id, its result, why it
failed, and whether it stopped at a usage limit.

The runner feeds every line of the agent's stdout to the reader of the profile's ``output``
format; a reader keeps only what it needs (bounded), so a long session costs no memory. What it
learns is an ``AttemptReport``: the runner records the session id the moment it is known (so an
attempt killed mid-way can still be resumed), what the attempt has spent as it grows (``spent``), and
the rest when the agent exits. A JSON reader also keeps an activity timeline (model turns, what the
model said, tool calls and their results, the ends of its answers), which the runner takes from
another thread (``take_activity``) to show what a sub-agent is doing while it works.

Claude Code's lines follow the Claude Agent SDK's message types (``SDKMessage`` in its
``sdk.d.ts``): ``system``/``init`` first, ``assistant`` and ``user`` messages, ``system`` notices,
``rate_limit_event`` (``rate_limit_info``: ``status``, ``resetsAt`` in epoch seconds,
``rateLimitType``), and a final ``result`` (``subtype``, ``is_error``, ``result``, ``errors``,
``terminal_reason``, ``api_error_status``, ``total_cost_usd``, ``usage``, ``num_turns``, ``modelUsage``,
``model_usage_since_last_result``). An ``assistant`` line holds one content block (``text``, ``tool_use``
with ``id``, ``name``, ``input``) of a message whose ``id`` and ``usage`` its other lines repeat; a ``user``
line brings ``tool_result`` blocks (``tool_use_id``, ``is_error``). With ``--input-format stream-json``
one process answers several messages: a ``system``/``init`` and a ``result`` for each.

Codex's ``codex exec --json`` lines are its ``ThreadEvent`` (``codex-rs/exec/src/exec_events.rs``; the
same types in ``@openai/codex-sdk``'s ``index.d.ts``): ``thread.started`` (``thread_id``) first, then
``turn.started``, ``item.started``/``item.updated``/``item.completed`` (``item.type`` ``agent_message``
with ``text``, ``command_execution``, ``file_change``, ``mcp_tool_call``, ``error`` = a warning, ...),
``error`` (``message``; also sent for retries that may still succeed: "Reconnecting... 2/5 (...)"), and
``turn.completed`` (``usage``: the thread's token totals, see ``CodexReader``) or ``turn.failed`` (``error.message``). A
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

import contextlib
import json
import math
import re
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from itertools import islice
from typing import Any, Literal, Protocol

from ..models import ACTIVITY_SUMMARY_MAX, Activity, ActivityKind, Usage

OUTPUT_MAX = 64 * 1024  # the final output kept, in characters
ERROR_MAX = 4 * 1024  # the harness's own account of a failure, in characters
ACTIVITY_BUFFER_MAX = 1000  # activity entries kept between two takes (the oldest beyond are dropped, counted)
PENDING_CALLS_MAX = 1000  # tool calls awaiting their result (the oldest beyond are forgotten)
TOKENS_MAX = 10**12  # a token count above this is read as this (a broken harness cannot overflow a column)
COST_MAX = 10.0**7  # likewise for a cost in US dollars

LimitKind = Literal["usage_limit", "rate_limit", "overloaded"]
StopKind = Literal["budget", "turns"]

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
    """What an attempt's output said, as far as its format tells. The reader updates it as lines arrive
    (each field is replaced whole, so another thread may read it at any time)."""

    session_id: str | None = None
    output: Any = None
    error: str | None = None  # the harness's own words for why the attempt failed
    limit: Limit | None = None
    cost_usd: float | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    spent: Usage | None = None  # what this process attempt has spent so far (never lowered)
    session_cost_usd: float | None = None  # Claude Code: the session's running total (a resume counts on from it)
    # Codex: the thread's running token totals. A resumed thread counts on from its earlier processes', and its
    # first turn cannot tell them apart, so ``spent`` then holds them too: this attempt's share is these totals
    # minus what the earlier attempts of the thread were reported to spend.
    session_usage: Usage | None = None
    stopped_by: StopKind | None = None  # the harness stopped at its own budget or turn cap (not a usage limit)
    results: int = 0  # result lines read (the ends of the harness's answers)
    active_at: datetime | None = None  # when the last activity entry was read


class StreamReader(Protocol):
    report: AttemptReport

    def feed(self, line: bytes) -> None:
        """One line of stdout (without its newline; a line too long to keep arrives cut)."""

    def take_activity(self) -> tuple[list[Activity], int]:
        """The activity entries new or changed since the last take, and how many were dropped since."""

    def finish(self) -> AttemptReport:
        """The report, once stdout has ended."""


class ActivityLog:
    """A reader's activity timeline, handed over in pieces: the reader adds from the thread that copies
    stdout, the runner takes from another. A tool call's entry is added when the call is read and put
    again, with the same ``ref``, when its result is (the store updates it in place).

    Bounded: at most ``cap`` entries wait between two takes (the oldest are dropped and counted), and at
    most PENDING_CALLS_MAX calls wait for their result (the oldest are forgotten: their result adds nothing)."""

    def __init__(self, cap: int = ACTIVITY_BUFFER_MAX) -> None:
        self._lock = threading.Lock()
        self._cap = cap
        self._waiting: OrderedDict[int, Activity] = OrderedDict()  # not yet taken, by serial
        self._serial = 0
        self._dropped = 0
        self._calls: OrderedDict[str, tuple[int, Activity, float]] = OrderedDict()  # ref -> serial, entry, read at
        self.active_at: datetime | None = None
        self.turns = 0
        self.results = 0

    def add(
        self,
        kind: ActivityKind,
        summary: str,
        *,
        tool: str | None = None,
        ref: str | None = None,
        failed: bool | None = None,
        duration_ms: int | None = None,
    ) -> tuple[int, Activity]:
        """Add an entry; returns its serial and the entry (for a call's result)."""
        entry = Activity(
            at=datetime.now(UTC),
            kind=kind,
            summary=_one_line(summary),
            tool=tool,
            ref=ref,
            failed=failed,
            duration_ms=duration_ms,
        )
        return self._put(None, entry), entry

    def turn(self) -> None:
        self.turns += 1
        self.add("turn", f"turn {self.turns}")

    def said(self, text: str) -> None:
        if text.strip():
            self.add("text", text)

    def result(self, summary: str, *, failed: bool) -> None:
        self.results += 1
        self.add("result", summary, failed=failed)

    def call(
        self, ref: Any, tool: str, summary: str, *, failed: bool | None = None, duration_ms: int | None = None
    ) -> None:
        """A tool call read: still running (``failed`` None), or read together with its result."""
        ref = ref[:200] if isinstance(ref, str) and ref else None
        if ref is not None and ref in self._calls:
            return  # the same call read again
        serial, entry = self.add("tool", summary, tool=tool[:200], ref=ref, failed=failed, duration_ms=duration_ms)
        if ref is not None and failed is None:
            self._calls[ref] = (serial, entry, time.monotonic())
            while len(self._calls) > PENDING_CALLS_MAX:
                self._calls.popitem(last=False)

    def returned(self, ref: Any, *, failed: bool, duration_ms: int | None = None) -> bool:
        """A pending call's result: its entry is put again, with whether it failed and how long it took
        (measured from when the call was read, unless the harness said). False: no such call is pending."""
        call = self._calls.pop(ref[:200], None) if isinstance(ref, str) else None
        if call is None:
            return False
        serial, entry, read_at = call
        if duration_ms is None:
            duration_ms = round((time.monotonic() - read_at) * 1000)
        self._put(serial, entry.model_copy(update={"failed": failed, "duration_ms": max(0, duration_ms)}))
        return True

    def take(self) -> tuple[list[Activity], int]:
        """The entries new or changed since the last take, in order, and how many were dropped since."""
        with self._lock:
            entries = list(self._waiting.values())
            self._waiting.clear()
            dropped, self._dropped = self._dropped, 0
        return entries, dropped

    def _put(self, serial: int | None, entry: Activity) -> int:
        """Put an entry: in its place if it is still waiting, else at the end."""
        with self._lock:
            if serial is None or serial not in self._waiting:
                self._serial += 1
                serial = self._serial
            self._waiting[serial] = entry
            while len(self._waiting) > self._cap:
                self._waiting.popitem(last=False)
                self._dropped += 1
        self.active_at = datetime.now(UTC)
        return serial


class TextReader:
    """Any program: the final output is the end of what it printed (no activity: lines are not events)."""

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

    def take_activity(self) -> tuple[list[Activity], int]:
        return [], 0

    def finish(self) -> AttemptReport:
        text = "\n".join(self._tail).strip()
        self.report.output = text[-OUTPUT_MAX:] or None
        return self.report


class _JsonReader(ABC):
    """What the JSON readers share: the report, the activity log, and a ``feed`` that no line can break
    (a harness may print anything: a shape no reader foresaw skips the line, the attempt goes on)."""

    def __init__(self) -> None:
        self.report = AttemptReport()
        self._log = ActivityLog()

    def feed(self, line: bytes) -> None:
        event = _json_object(line)
        if event is None:
            return
        with contextlib.suppress(Exception):  # a broken harness's line is skipped (a shape nobody checked)
            self._event(event)
        if self._log.active_at is not None:
            self.report.active_at = self._log.active_at
            self.report.results = self._log.results

    def take_activity(self) -> tuple[list[Activity], int]:
        return self._log.take()

    def finish(self) -> AttemptReport:
        return self.report

    @abstractmethod
    def _event(self, event: dict[str, Any]) -> None:
        """Take one JSON line of the harness's output."""


class ClaudeReader(_JsonReader):
    """Claude Code's ``--output-format stream-json`` (or ``json``: one result line).

    Spending: a ``result``'s ``total_cost_usd`` is the session's running total (a resumed process starts
    from the earlier processes' total), so this attempt's share is ``model_usage_since_last_result`` (what
    this process spent since its previous result), summed over its results; between results, the live
    token counts of the assistant messages seen since grow the figures until the next result replaces them."""

    def __init__(self) -> None:
        super().__init__()
        self._settled = Usage()  # what this process's results said it spent
        self._live: OrderedDict[str, Usage] = OrderedDict()  # per assistant message id since the last result
        self._live_sum = Usage()  # their sum (kept as they grow; an id forgotten past the cap stays counted)
        self._total_cost: float | None = None  # the session's total at the previous result of this process

    def _event(self, message: dict[str, Any]) -> None:
        if isinstance(session := message.get("session_id"), str) and session and self.report.session_id is None:
            self.report.session_id = session
        kind = message.get("type")
        if kind == "rate_limit_event":
            self._rate_limit(message.get("rate_limit_info"))
        elif kind == "assistant":
            if message.get("error") in ("rate_limit", "overloaded"):
                self._limit("overloaded" if message["error"] == "overloaded" else "rate_limit", None, "")
            if isinstance(body := message.get("message"), dict):
                self._assistant(body)
        elif kind == "user" and isinstance(body := message.get("message"), dict):
            self._tool_results(body.get("content"))
        elif kind == "result":
            self._result(message)

    def _assistant(self, body: dict[str, Any]) -> None:
        model = body.get("model")
        model = model[:100] if isinstance(model, str) and model and not model.startswith("<") else None  # <synthetic>
        ident = body.get("id")
        if isinstance(ident, str) and ident:
            self._live_usage(ident[:200], _claude_tokens(body.get("usage")).model_copy(update={"model": model}))
        content = body.get("content")
        for block in islice(content if isinstance(content, list) else (), 100):
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text" and isinstance(text := block.get("text"), str):
                self._log.said(text)
            elif block.get("type") == "tool_use" and isinstance(name := block.get("name"), str) and name:
                self._log.call(block.get("id"), name, _call_summary(name, block.get("input")))

    def _live_usage(self, ident: str, usage: Usage) -> None:
        """An assistant message's token counts (its lines repeat them, growing): counted once per id."""
        known = self._live.get(ident)
        if known is None:
            self._log.turn()
            usage = usage.model_copy(update={"turns": 1})
            self._live[ident] = usage
            self._live_sum = self._live_sum.plus(usage)
            while len(self._live) > PENDING_CALLS_MAX:
                self._live.popitem(last=False)
        else:
            grown = known.at_least(usage)
            self._live[ident] = grown
            self._live_sum = self._live_sum.plus(grown.minus(known).model_copy(update={"model": grown.model}))
        self.report.spent = self._settled.plus(self._live_sum)

    def _tool_results(self, content: Any) -> None:
        """A user message: the results of tool calls (plain text is a message sent on stdin, echoed)."""
        for block in islice(content if isinstance(content, list) else (), 100):
            if isinstance(block, dict) and block.get("type") == "tool_result":
                self._log.returned(block.get("tool_use_id"), failed=block.get("is_error") is True)

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
        total = _cost(message.get("total_cost_usd"))
        if total is not None:
            self.report.cost_usd = total
        if isinstance(usage := message.get("usage"), dict):
            self.report.usage = usage
        figures = self._result_spent(message, total)
        self._settle(figures)
        if total is not None:
            self.report.session_cost_usd = self._total_cost = total
        spent = f" (${figures.cost_usd:.4f}, {figures.turns} turns)" if figures.cost_usd or total is not None else ""
        self.report.stopped_by = _claude_stop(message)
        if not message.get("is_error") and message.get("subtype") in (None, "success"):
            text = result if isinstance(result, str) else ""
            self._log.result(_with_suffix(f"success: {text}" if text.strip() else "success", spent), failed=False)
            return
        text = result if isinstance(result, str) else ""
        if self.report.stopped_by is None:  # a budget or turn cap is the harness's own stop, not the account's
            status = message.get("api_error_status")
            if status == 429 or (text and _USAGE_LIMIT_TEXT.search(text)):
                self._limit("usage_limit" if status != 429 else "rate_limit", None, text[:200])
            elif status == 529 or message.get("api_error_type") == "overloaded_error":
                self._limit("overloaded", None, text[:200])
        self.report.error = _claude_error(message, text)
        self._log.result(_with_suffix(self.report.error, spent), failed=True)

    def _result_spent(self, message: dict[str, Any], total: float | None) -> Usage:
        """What a result says this process spent since its previous one: per model when it says so, else
        the increase of the session's total and the result's ``usage``."""
        by_model = message.get("model_usage_since_last_result")
        if isinstance(by_model, dict):
            spent = Usage()
            for counts in islice(by_model.values(), USAGE_KEYS):
                if isinstance(counts, dict):
                    spent = spent.plus(_claude_model_usage(counts))
        else:
            spent = _claude_tokens(message.get("usage"))
            if total is not None:
                spent = spent.model_copy(update={"cost_usd": max(0.0, total - (self._total_cost or 0.0))})
            by_model = message.get("modelUsage")
        return spent.model_copy(update={"turns": _tokens(message.get("num_turns")), "model": _costliest(by_model)})

    def _settle(self, figures: Usage) -> None:
        """A result replaces the live counts with its own figures, never lowering what was reported."""
        before = self.report.spent or Usage()
        settled = self._settled.plus(figures).at_least(before)
        self._settled = settled.model_copy(update={"model": figures.model or before.model})
        self._live.clear()
        self._live_sum = Usage()
        self.report.spent = self._settled


def _claude_stop(message: dict[str, Any]) -> StopKind | None:
    """Claude Code stopped at its ``--max-budget-usd`` or ``--max-turns``."""
    subtype, reason = message.get("subtype"), message.get("terminal_reason")
    if subtype == "error_max_budget_usd" or reason == "budget_exhausted":
        return "budget"
    if subtype == "error_max_turns" or reason == "max_turns":
        return "turns"
    return None


def _claude_tokens(usage: Any) -> Usage:
    """An Anthropic ``usage`` object (a message's, or a result's)."""
    if not isinstance(usage, dict):
        return Usage()
    return Usage(
        input_tokens=_tokens(usage.get("input_tokens")),
        output_tokens=_tokens(usage.get("output_tokens")),
        cache_read_tokens=_tokens(usage.get("cache_read_input_tokens")),
        cache_write_tokens=_tokens(usage.get("cache_creation_input_tokens")),
    )


def _claude_model_usage(counts: dict[str, Any]) -> Usage:
    """One model's entry of a result's ``modelUsage`` / ``model_usage_since_last_result``."""
    return Usage(
        cost_usd=_cost(counts.get("costUSD")) or 0.0,
        input_tokens=_tokens(counts.get("inputTokens")),
        output_tokens=_tokens(counts.get("outputTokens")),
        cache_read_tokens=_tokens(counts.get("cacheReadInputTokens")),
        cache_write_tokens=_tokens(counts.get("cacheCreationInputTokens")),
    )


def _costliest(by_model: Any) -> str | None:
    """The model a result's per-model usage spent most on (the one that did the work, not a helper)."""
    if not isinstance(by_model, dict):
        return None
    models = [
        (_cost(counts.get("costUSD")) or 0.0, name)
        for name, counts in islice(by_model.items(), USAGE_KEYS)
        if isinstance(name, str) and 0 < len(name) <= 100 and isinstance(counts, dict)
    ]
    return max(models)[1] if models else None


def _claude_error(message: dict[str, Any], text: str) -> str:
    """Claude Code's account of a failed result, in its own words (its ``result`` text, else its
    ``errors``), then its codes."""
    codes = [
        f"{name} {value}"
        for name in ("subtype", "terminal_reason", "api_error_status", "api_error_type")
        if (value := message.get(name)) not in (None, "", "success")
    ]
    denials = message.get("permission_denials")
    if isinstance(denials, list) and denials:
        names = sorted({str(d.get("tool_name")) for d in islice(denials, 100) if isinstance(d, dict)})
        codes.append(f"permission denied for {', '.join(names)}")
    errors = message.get("errors")
    listed = [
        e.strip()[:ERROR_MAX] for e in islice(errors if isinstance(errors, list) else (), 10) if isinstance(e, str)
    ]
    words = text.strip() or "; ".join(e for e in listed if e) or "Claude Code reported an error without a message"
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


class CodexReader(_JsonReader):
    """Codex's ``codex exec --json`` (and ``codex exec resume --json``): the thread id, the last agent
    message, the turn's usage, and why the turn failed (``turn.failed``, or an ``error`` that no
    completed turn followed: ``error`` lines are also sent for retries that then succeed).

    ``turn.completed``'s ``usage`` is the thread's running totals (``usage_from_last_total`` in
    ``event_processor_with_jsonl_output.rs``), a resumed thread's included: this process spent their
    increase, its first turn's taken whole. Input tokens count the cached ones too (OpenAI's way); no cost.
    Item ids restart at ``item_0`` in every process, so a call's ``ref`` carries this reader's own prefix."""

    def __init__(self) -> None:
        super().__init__()
        self._error: str | None = None  # the last `error` line since the last completed turn
        self._prefix = f"codex-{uuid.uuid4().hex[:12]}-"
        self._tokens = Usage()  # what this process's turns added to the thread's totals

    def _event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        item = event.get("item")
        if kind == "thread.started":
            _keep_session(self.report, event.get("thread_id"))
        elif kind == "turn.started":
            self._log.turn()
            self._spend()
        elif kind == "item.started" and isinstance(item, dict):
            self._item(item, done=False)
        elif kind == "item.completed" and isinstance(item, dict):
            if item.get("type") == "agent_message" and isinstance(item.get("text"), str):
                self.report.output = item["text"][-OUTPUT_MAX:]
                self._log.said(item["text"])
            else:
                self._item(item, done=True)
        elif kind == "error" and isinstance(event.get("message"), str):
            self._error = event["message"][:ERROR_MAX]
        elif kind == "turn.completed":
            self._error = None  # what went wrong on the way was retried away
            if isinstance(usage := event.get("usage"), dict):
                self.report.usage = _counts(usage)
                self._totals(usage)
            output = self.report.output
            self._log.result(f"success: {output}" if isinstance(output, str) and output else "success", failed=False)
        elif kind == "turn.failed":
            error = event.get("error")
            message = error.get("message") if isinstance(error, dict) else None
            if not isinstance(message, str) or not message.strip():
                message = self._error or "Codex reported a failed turn without a message"
            self._failed(message)
            self._log.result(self.report.error or "", failed=True)

    def finish(self) -> AttemptReport:
        if self.report.error is None and self._error is not None:
            self._failed(self._error)  # an error, and no turn completed after it
        return self.report

    def _failed(self, message: str) -> None:
        self.report.error = message.strip()[:ERROR_MAX]
        self.report.limit = _limit_in_words(message, _now())

    def _item(self, item: dict[str, Any], *, done: bool) -> None:
        """A tool call item (a command, a file change, an MCP tool, a web search...), started or done."""
        call = _codex_call(item)
        ident = item.get("id")
        if call is None or not isinstance(ident, str):
            return
        ref = f"{self._prefix}{ident[:100]}"
        if not done:
            self._log.call(ref, *call)
            return
        status, code = item.get("status"), item.get("exit_code")
        failed = status in ("failed", "declined") or (type(code) is int and code != 0) or bool(item.get("error"))
        if not self._log.returned(ref, failed=failed):  # read only once done (a web search, say)
            self._log.call(ref, *call, failed=failed)

    def _totals(self, usage: dict[str, Any]) -> None:
        cached = _tokens(usage.get("cached_input_tokens"))
        totals = Usage(
            input_tokens=max(0, _tokens(usage.get("input_tokens")) - cached),
            output_tokens=_tokens(usage.get("output_tokens")),  # its reasoning tokens are among them
            cache_read_tokens=cached,
            cache_write_tokens=_tokens(usage.get("cache_write_input_tokens")),
        )
        before = self.report.session_usage
        self._tokens = self._tokens.plus(totals.minus(before) if before is not None else totals)
        self.report.session_usage = totals
        self._spend()

    def _spend(self) -> None:
        self.report.spent = self._tokens.model_copy(update={"turns": self._log.turns})


# The tool names of the Codex items that are tool calls (an MCP tool call is named by its server and tool).
_CODEX_TOOLS = {"command_execution": "shell", "file_change": "apply_patch", "web_search": "web_search"}


def _codex_call(item: dict[str, Any]) -> tuple[str, str] | None:
    """A Codex tool call item's name and summary (None: the item is no tool call)."""
    kind = item.get("type")
    if kind == "mcp_tool_call":
        server, tool = item.get("server"), item.get("tool")
        name = f"mcp__{(_text(server) or '?')[:60]}__{(_text(tool) or '?')[:60]}"
        return name, _call_summary(name, item.get("arguments"))
    if kind == "collab_tool_call":
        name = _text(item.get("tool")) or "collab"
        return name[:60], _call_summary(name[:60], {"prompt": item.get("prompt")})
    if kind == "file_change":
        changes = item.get("changes")
        paths = [c["path"] for c in islice(changes if isinstance(changes, list) else (), 20) if _has_text(c, "path")]
        return "apply_patch", _call_summary("apply_patch", {"path": ", ".join(paths)} if paths else None)
    if kind in _CODEX_TOOLS:
        name = _CODEX_TOOLS[kind]
        return name, _call_summary(name, item)
    return None


class GeminiReader(_JsonReader):
    """Gemini CLI's ``--output-format stream-json``: the session id from ``init``, the assistant's last
    answer (its text after the last tool call, sent in pieces), the ``result``'s stats, and its error.

    The stats count this process's API calls (``--resume`` does not bring back the earlier ones):
    ``input_tokens`` includes the cached ones, ``input`` is the rest."""

    def __init__(self) -> None:
        super().__init__()
        self._answer = _Tail()  # the assistant's text since the last tool call
        self._earlier = ""  # the text before it, in case the last turn said nothing
        self._error: str | None = None  # the last error-severity `error` line not followed by a result
        self._answering = False  # within a model answer (until a tool result)
        self._said: list[str] = []  # the beginning of what the answer says, until a tool call or the result
        self._said_size = 0
        self._tokens = Usage()
        self._model: str | None = None

    def _event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "init":
            _keep_session(self.report, event.get("session_id"))
            if isinstance(model := event.get("model"), str) and model:
                self._model = model[:100]
                self._spend()
        elif kind == "message" and event.get("role") == "assistant" and isinstance(event.get("content"), str):
            self._answer_starts()
            self._answer.add(event["content"])
            if self._said_size < ACTIVITY_SUMMARY_MAX:
                self._said.append(event["content"][:ACTIVITY_SUMMARY_MAX])
                self._said_size += len(self._said[-1])
        elif kind == "tool_use":
            self._answer_starts()
            self._flush()
            if self._answer:
                self._earlier, self._answer = self._answer.text(), _Tail()
            if isinstance(name := event.get("tool_name"), str) and name:
                self._log.call(event.get("tool_id"), name, _call_summary(name, event.get("parameters")))
        elif kind == "tool_result":
            self._answering = False
            self._log.returned(event.get("tool_id"), failed=event.get("status") == "error")
        elif kind == "error" and event.get("severity") == "error" and isinstance(event.get("message"), str):
            self._error = event["message"][:ERROR_MAX]
        elif kind == "result":
            self._flush()
            self._result(event)

    def finish(self) -> AttemptReport:
        self._flush()
        self.report.output = (self._answer.text() or self._earlier).strip() or None
        if self.report.error is None and self._error is not None:
            self._failed(self._error, None)  # no result line came after it
        return self.report

    def _answer_starts(self) -> None:
        if not self._answering:
            self._answering = True
            self._log.turn()
            self._spend()

    def _flush(self) -> None:
        """What the answer said so far becomes a text entry."""
        if self._said:
            self._log.said("".join(self._said))
            self._said, self._said_size = [], 0

    def _result(self, event: dict[str, Any]) -> None:
        if isinstance(stats := event.get("stats"), dict):
            self.report.usage = _counts(stats)
            self._stats(stats)
        if event.get("status") == "success":
            self._error = None
            answer = (self._answer.text() or self._earlier).strip()
            self._log.result(f"success: {answer}" if answer else "success", failed=False)
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
        self._log.result(self.report.error or "", failed=True)

    def _failed(self, message: str | None, kind: str | None) -> None:
        words = (message or "").strip() or "Gemini CLI reported an error without a message"
        self.report.error = (f"{words} ({kind})" if kind else words)[:ERROR_MAX]
        self.report.limit = _limit_in_words(message or "", _now())

    def _stats(self, stats: dict[str, Any]) -> None:
        """A result's stats: this process's totals so far (a later result's never lower them)."""
        cached = _tokens(stats.get("cached"))
        plain = stats.get("input")
        tokens = Usage(
            input_tokens=_tokens(plain) if type(plain) is int else max(0, _tokens(stats.get("input_tokens")) - cached),
            output_tokens=_tokens(stats.get("output_tokens")),
            cache_read_tokens=cached,
        )
        self._tokens = self._tokens.at_least(tokens)
        models = stats.get("models")
        if isinstance(models, dict):  # the model that used the most tokens
            named = [
                (_tokens(counts.get("total_tokens")), name)
                for name, counts in islice(models.items(), USAGE_KEYS)
                if isinstance(name, str) and 0 < len(name) <= 100 and isinstance(counts, dict)
            ]
            self._model = max(named)[1] if named else self._model
        self._spend()

    def _spend(self) -> None:
        self.report.spent = self._tokens.model_copy(update={"turns": self._log.turns, "model": self._model})


class OpenCodeReader(_JsonReader):
    """OpenCode's ``opencode run --format json``: the session id (on every line), the text of the last
    step, tokens and cost summed over the steps, and the ``error`` lines (sent once its retries are
    spent): their message, and a limit from the status code, the response body or its headers.

    A ``step_start`` is a model turn; a ``tool_use`` line comes as its call ends (``part.state.status``
    completed or error, ``state.time`` its start and end in epoch milliseconds)."""

    def __init__(self) -> None:
        super().__init__()
        self._step = _Tail()  # the text of the current step
        self._earlier = ""  # the text of the last step that had some
        self._errors: list[str] = []
        self._steps = Usage()  # cost and tokens summed over the steps

    def _event(self, event: dict[str, Any]) -> None:
        _keep_session(self.report, event.get("sessionID"))
        kind = event.get("type")
        part = event.get("part")
        part = part if isinstance(part, dict) else {}
        if kind == "step_start":
            if self._step:
                self._earlier, self._step = self._step.text(), _Tail()
            self._log.turn()
            self._spend()
        elif kind == "text" and isinstance(text := part.get("text"), str) and text.strip():
            self._step.add(f"\n{text}" if self._step else text)
            self._log.said(text)
        elif kind == "tool_use":
            self._tool(part)
        elif kind == "step_finish":
            self._step_finished(part)
        elif kind == "error":
            self._failed(event.get("error"))
            self._log.result(self._errors[-1] if self._errors else "OpenCode reported an error", failed=True)

    def finish(self) -> AttemptReport:
        self.report.output = (self._step.text() or self._earlier).strip() or None
        return self.report

    def _tool(self, part: dict[str, Any]) -> None:
        name = part.get("tool")
        if not isinstance(name, str) or not name:
            return
        state = part.get("state")
        state = state if isinstance(state, dict) else {}
        ref = part.get("id") if isinstance(part.get("id"), str) else part.get("callID")
        status = state.get("status")
        if status not in ("completed", "error"):
            self._log.call(ref, name, _call_summary(name, state.get("input")))
            return
        timing = state.get("time")
        timing = timing if isinstance(timing, dict) else {}
        start, end = timing.get("start"), timing.get("end")
        took = end - start if type(start) is int and type(end) is int and 0 <= end - start < 10**10 else None
        failed = status == "error"
        if not self._log.returned(ref, failed=failed, duration_ms=took):
            self._log.call(ref, name, _call_summary(name, state.get("input")), failed=failed, duration_ms=took)

    def _step_finished(self, part: dict[str, Any]) -> None:
        cost = _cost(part.get("cost"))
        if cost is not None:
            self.report.cost_usd = (self.report.cost_usd or 0.0) + cost
        tokens = part.get("tokens")
        counts: dict[str, int] = {}
        if isinstance(tokens, dict):
            flat = {  # {"cache": {"read": 200}} counts as "cache_read"
                f"{name}_{inner}": count
                for name, value in list(tokens.items())[:USAGE_KEYS]
                if isinstance(value, dict)
                for inner, count in list(value.items())[:USAGE_KEYS]
            }
            counts = _counts({**tokens, **flat})
            for name, count in counts.items():
                if len(self.report.usage) < USAGE_KEYS or name in self.report.usage:
                    self.report.usage[name] = self.report.usage.get(name, 0) + count
        step = Usage(
            cost_usd=cost or 0.0,
            input_tokens=_tokens(counts.get("input")),
            output_tokens=_tokens(counts.get("output")),  # as it reports them (its reasoning is counted apart)
            cache_read_tokens=_tokens(counts.get("cache_read")),
            cache_write_tokens=_tokens(counts.get("cache_write")),
        )
        self._steps = self._steps.plus(step)
        self._spend()

    def _spend(self) -> None:
        self.report.spent = self._steps.model_copy(update={"turns": self._log.turns})

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


def _one_line(text: str, limit: int = ACTIVITY_SUMMARY_MAX) -> str:
    """An activity summary: one line, at most ``limit`` characters (cut with an ellipsis)."""
    words = " ".join(text[: limit * 4].split())
    return words if len(words) <= limit else words[: limit - 1] + "…"


def _with_suffix(text: str, suffix: str) -> str:
    """A summary that keeps its suffix (a cost) however long the text before it."""
    return _one_line(text, ACTIVITY_SUMMARY_MAX - len(suffix)) + suffix


# The input fields that tell what a tool call does, most telling first; the path-like ones name their tool
# without a colon ("Read src/app.py"), the others with one ("Bash: npm test").
_TELLING_FIELDS = (
    *("file_path", "path", "notebook_path", "filePath"),
    *("command", "pattern", "url", "query", "description", "prompt"),
)
_PATH_FIELDS = frozenset({"file_path", "path", "notebook_path", "filePath"})


def _call_summary(tool: str, arguments: Any) -> str:
    """A tool call in one line: its name and its telling input field (else its first short text)."""
    tool = _one_line(tool, 100)
    if not isinstance(arguments, dict):
        return tool
    for name in _TELLING_FIELDS:
        value = arguments.get(name)
        if isinstance(value, list):  # a command given as argv
            value = " ".join(part for part in islice(value, 100) if isinstance(part, str))
        if not isinstance(value, str) or not value.strip():
            continue
        if name in _PATH_FIELDS:  # the end of a long path tells more than its start
            room = ACTIVITY_SUMMARY_MAX - len(tool) - 1
            path = " ".join(value[-room * 4 :].split())
            return f"{tool} {path if len(path) <= room else '…' + path[-room + 1 :]}"
        return _one_line(f"{tool}: {value}")
    for value in islice(arguments.values(), 50):
        if isinstance(value, str) and value.strip() and len(value) <= 200:
            return _one_line(f"{tool}: {value}")
    return tool


def _has_text(value: Any, key: str) -> bool:
    return isinstance(value, dict) and isinstance(value.get(key), str) and bool(value[key])


def _tokens(value: Any) -> int:
    """A token count a harness reported (anything else, or a negative one, counts as none)."""
    return min(value, TOKENS_MAX) if type(value) is int and value >= 0 else 0


def _cost(value: Any) -> float | None:
    """A cost in US dollars a harness reported (None: none, or not a believable number)."""
    number = _number(value)
    return min(number, COST_MAX) if number is not None and number >= 0 else None


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
