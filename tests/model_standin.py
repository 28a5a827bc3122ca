"""A scripted stand-in for the Anthropic Messages API on 127.0.0.1, so that the real Claude Code can run in
the tests offline and deterministically: each request that offers tools takes the next turn of a script
(a text, a tool call, an HTTP error, or a function of what the model was sent); side requests without
tools (titles, probes) get a short text and leave the script alone. Every request is recorded."""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

JSON = dict[str, Any]
WAIT = 10.0  # seconds a test waits for Claude Code to reach a point; each test runs in a few seconds
SIDE_ANSWER = "ok"
DONE = "done."


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


@dataclass(frozen=True)
class Text:
    """A text block; as a turn, the model's last word (stop_reason end_turn)."""

    text: str


@dataclass(frozen=True)
class ToolUse:
    """A tool_use block; as a turn, the model asks for one tool call (stop_reason tool_use)."""

    name: str
    input: JSON
    id: str = field(default_factory=lambda: _id("toolu"))


@dataclass(frozen=True)
class Reply:
    """Several blocks in one answer (e.g. a text before parallel tool calls)."""

    blocks: tuple[Text | ToolUse, ...]
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def stop_reason(self) -> str:
        return "tool_use" if any(isinstance(block, ToolUse) for block in self.blocks) else "end_turn"


@dataclass(frozen=True)
class HttpError:
    """An API error answer: the status, the body {"type": "error", "error": {...}} and its headers."""

    status: int
    error_type: str
    message: str
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Held:
    """A turn that waits until the test calls release(): the test acts while the model "thinks".
    `reached` is set when Claude Code has asked for it."""

    turn: Turn
    reached: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)

    def release(self) -> None:
        self.released.set()

    def wait_reached(self, timeout: float = WAIT) -> None:
        if not self.reached.wait(timeout):
            raise TimeoutError(f"Claude Code did not ask for the held turn within {timeout} s")


Turn = Text | ToolUse | Reply | HttpError | Held | Callable[[JSON], "Turn"]
Answer = Reply | HttpError


def text(value: str) -> Text:
    """The model answers with text and ends its turn."""
    return Text(value)


def tool_use(name: str, input: JSON, id: str | None = None) -> ToolUse:
    """The model calls one tool (built-ins such as Write, or mcp__<server>__<tool>)."""
    return ToolUse(name, input) if id is None else ToolUse(name, input, id)


def reply(*blocks: Text | ToolUse, headers: Mapping[str, str] | None = None) -> Reply:
    """The model answers with several blocks at once; `headers` go on the HTTP answer (e.g. the
    anthropic-ratelimit-unified-* headers)."""
    return Reply(tuple(blocks), dict(headers or {}))


def http_error(status: int, body_type: str, headers: Mapping[str, str] | None = None, message: str = "") -> HttpError:
    """The API refuses, e.g. 429 rate_limit_error (with retry-after), 529 overloaded_error, 401
    authentication_error."""
    return HttpError(status, body_type, message or body_type.replace("_", " "), dict(headers or {}))


def hold(turn: Turn) -> Held:
    """`turn`, answered only once the test calls .release() on the result."""
    return Held(turn)


@dataclass(frozen=True)
class Request:
    """One request as the stand-in received it (header names in lower case)."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: JSON

    @property
    def scripted(self) -> bool:
        """Requests that offer tools are the agent's main loop; they take turns of the script."""
        return bool(self.body.get("tools"))


@dataclass(frozen=True)
class ToolResult:
    """A tool_result block the model was sent, its content flattened to text."""

    tool_use_id: str
    text: str
    is_error: bool


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


class Standin:
    """The stand-in server: one script per stand-in, consumed in order by every Claude Code process that
    talks to it. Use as a context manager, or start()/stop()."""

    def __init__(self, script: Iterable[Turn] = (), *, model: str = "claude-standin") -> None:
        self.model = model
        self._script: deque[Turn] = deque(script)
        self._requests: list[Request] = []
        self._lock = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._message_ids = itertools.count(1)
        self._held: list[Held] = []
        self.errors: list[BaseException] = []  # raised by callable turns; re-raised when the stand-in stops

    # -- lifecycle

    def start(self) -> Self:
        handler = type("Handler", (_Handler,), {"owner": self})  # each handler class knows its stand-in
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="model-standin", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (held turns are let go); raise the first error of a callable turn, if any."""
        with self._lock:  # let held turns go so that their handler threads end
            for held in [*self._held, *(turn for turn in self._script if isinstance(turn, Held))]:
                held.release()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.errors:
            raise AssertionError(f"a scripted turn failed: {self.errors[0]!r}") from self.errors[0]

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL to give Claude Code as ANTHROPIC_BASE_URL."""
        assert self._server is not None, "the stand-in is not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # -- the script

    def add(self, *turns: Turn) -> None:
        """Append turns to the script (e.g. for a later Claude Code process)."""
        with self._lock:
            self._script.extend(turns)

    @property
    def remaining(self) -> int:
        with self._lock:
            return len(self._script)

    def _next_turn(self) -> Turn:
        with self._lock:
            return self._script.popleft() if self._script else Text(DONE)

    def _answer(self, request: Request) -> Answer:
        if not request.scripted:
            return Reply((Text(SIDE_ANSWER),))
        if self.errors:  # the script is broken: Claude Code must not go on with the turns after it
            return _broken(self.errors[0])
        turn = self._next_turn()
        while True:
            if isinstance(turn, Held):
                with self._lock:
                    self._held.append(turn)
                turn.reached.set()
                turn.released.wait()
                turn = turn.turn
            elif isinstance(turn, Text | ToolUse):
                return Reply((turn,))
            elif isinstance(turn, Reply | HttpError):
                return turn
            else:
                try:
                    turn = turn(request.body)
                except Exception as error:  # a test's own check: stop the agent, fail the test at stop()
                    with self._lock:
                        self.errors.append(error)
                    return _broken(error)

    # -- what the model saw

    def _record(self, request: Request) -> None:
        with self._lock:
            self._requests.append(request)
            self._lock.notify_all()

    @property
    def requests(self) -> list[Request]:
        """Every request, side requests included, in order of arrival."""
        with self._lock:
            return list(self._requests)

    @property
    def scripted_requests(self) -> list[Request]:
        """The requests that took (or are taking) a turn of the script."""
        return [request for request in self.requests if request.scripted]

    def wait_for_requests(self, count: int, timeout: float = WAIT) -> list[Request]:
        """Block until `count` scripted requests have arrived; polls a condition, never sleeps blindly."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                found = [request for request in self._requests if request.scripted]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(found)} of {count} scripted requests within {timeout} s")
                self._lock.wait(left)

    def tool_results(self, request: Request | None = None) -> list[ToolResult]:
        """The tool_result blocks of the last user message of `request` (by default the last scripted one)."""
        if request is None:
            scripted = self.scripted_requests
            if not scripted:
                return []
            request = scripted[-1]
        users = [message for message in request.body.get("messages", []) if message.get("role") == "user"]
        if not users or not isinstance(users[-1].get("content"), list):
            return []
        return [
            ToolResult(block.get("tool_use_id", ""), _content_text(block.get("content")), bool(block.get("is_error")))
            for block in users[-1]["content"]
            if isinstance(block, dict) and block.get("type") == "tool_result"
        ]

    # -- the wire format

    def _message(self, reply: Reply, body: JSON) -> JSON:
        content: list[JSON] = []
        for block in reply.blocks:
            if isinstance(block, Text):
                content.append({"type": "text", "text": block.text})
            else:
                content.append({"type": "tool_use", "id": block.id, "name": block.name, "input": block.input})
        return {
            "id": f"msg_standin{next(self._message_ids):08d}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model") or self.model,
            "content": content,
            "stop_reason": reply.stop_reason,
            "stop_sequence": None,
            "usage": _usage(body, reply),
        }

    def _events(self, reply: Reply, body: JSON) -> Iterable[tuple[str, JSON]]:
        message = self._message(reply, body)
        usage = message["usage"]
        yield (
            "message_start",
            {
                "type": "message_start",
                "message": {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}},
            },
        )
        for index, block in enumerate(message["content"]):
            if block["type"] == "text":
                start: JSON = {"type": "text", "text": ""}
                delta: JSON = {"type": "text_delta", "text": block["text"]}
            else:
                start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
                delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
            yield "content_block_start", {"type": "content_block_start", "index": index, "content_block": start}
            yield "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
            yield "content_block_stop", {"type": "content_block_stop", "index": index}
        yield (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": usage["output_tokens"]},
            },
        )
        yield "message_stop", {"type": "message_stop"}


def _broken(error: BaseException) -> HttpError:
    return HttpError(400, "invalid_request_error", f"the stand-in's scripted turn failed: {error!r}")


def _usage(body: JSON, reply: Reply) -> JSON:
    """Token counts of the rough size of the exchange: Claude Code prices them into total_cost_usd."""
    return {
        "input_tokens": max(1, len(json.dumps(body.get("messages", []))) // 4),
        "output_tokens": max(1, sum(len(json.dumps(block.__dict__)) for block in reply.blocks) // 4),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1, one answer per connection (closed after it), as the API's streams end."""

    owner: Standin
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests assert on the recorded requests instead."""

    def do_POST(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {"unparsed": raw.decode(errors="replace")}
        request = Request("POST", parts.path, parts.query, self._headers(), body)
        self.owner._record(request)
        if parts.path == "/v1/messages/count_tokens":
            self._json(200, {"input_tokens": max(1, len(raw) // 4)})
        elif parts.path == "/v1/messages":
            self._reply(request)
        else:
            self._error(HttpError(404, "not_found_error", f"the stand-in has no {parts.path}"))

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        self.owner._record(Request("GET", parts.path, parts.query, self._headers(), {}))
        self._error(HttpError(404, "not_found_error", f"the stand-in has no {parts.path}"))

    do_HEAD = do_GET

    def _headers(self) -> dict[str, str]:
        return {name.lower(): value for name, value in self.headers.items()}

    def _reply(self, request: Request) -> None:
        answer = self.owner._answer(request)
        if isinstance(answer, HttpError):
            self._error(answer)
        elif request.body.get("stream"):
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("cache-control", "no-cache")
            self.send_header("request-id", _id("req"))
            self.send_header("connection", "close")
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.end_headers()
            for name, data in self.owner._events(answer, request.body):
                self.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
                self.wfile.flush()
            self.close_connection = True
        else:
            self._json(200, self.owner._message(answer, request.body), answer.headers)

    def _error(self, error: HttpError) -> None:
        body = {"type": "error", "error": {"type": error.error_type, "message": error.message}}
        self._json(error.status, {**body, "request_id": _id("req")}, error.headers)

    def _json(self, status: int, value: JSON, headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("request-id", _id("req"))
        self.send_header("connection", "close")
        for name, value_ in (headers or {}).items():
            self.send_header(name, value_)
        self.end_headers()
        self.wfile.write(data)
        self.close_connection = True
