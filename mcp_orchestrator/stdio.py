"""MCP over stdin/stdout that answers every request it receives.

The SDK's stdio reader drops a line it cannot read (JSON nested deeper than its parser allows, a
lone surrogate, an integer of thousands of digits, invalid JSON) without a reply, so the client
waits until its own timeout. Here each line is read with a bounded length, screened with the
SDK's own message model, and answered with a JSON-RPC error carrying the request's id when it
cannot be read; only lines the SDK reads are passed on to it.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import IO, Any

import anyio
import anyio.to_thread
import mcp_types as types
from mcp.server import MCPServer
from mcp.server.stdio import stdio_server
from pydantic import ValidationError

from .config import ENV_MAX_PAYLOAD

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
INVALID_PARAMS = -32602
_SMALL = 200  # longest id value worth recovering from a line that cannot be read whole
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[{}\[\],:]')
_HUGE = object()  # an integer too long for int() (Python's 4300-digit limit)


def line_limit(max_payload_bytes: int) -> int:
    """The longest line read: room for a full payload even when every character is escaped."""
    return 8 * max_payload_bytes + 64 * 1024


async def serve_stdio(mcp: MCPServer, max_line_bytes: int) -> None:
    """Serve ``mcp`` on this process's stdin and stdout until stdin ends."""
    with _claimed_std_fds() as (wire_in, wire_out):
        wire = _Wire(wire_out)
        lines = _ScreenedLines(wire_in, wire, max_line_bytes)
        async with stdio_server(stdin=lines, stdout=wire) as (read_stream, write_stream):  # type: ignore[arg-type]
            server = mcp._lowlevel_server  # what MCPServer.run_stdio_async runs, on our streams
            await server.run(read_stream, write_stream, server.create_initialization_options())


class _Wire:
    """The write side: whole lines, one writer at a time (the SDK's replies and ours share it)."""

    def __init__(self, fd: int) -> None:
        self._file: IO[bytes] = os.fdopen(fd, "wb", closefd=False)
        self._lock = anyio.Lock()

    async def write(self, text: str) -> None:
        data = text.encode("utf-8", errors="backslashreplace")  # a lone surrogate stays a JSON escape
        async with self._lock:
            await anyio.to_thread.run_sync(self._write, data, abandon_on_cancel=True)

    def _write(self, data: bytes) -> None:
        self._file.write(data)
        self._file.flush()

    async def flush(self) -> None:
        """Each write is flushed already (the SDK calls this after every message)."""

    async def reply(self, message: dict[str, Any]) -> None:
        await self.write(json.dumps(message, ensure_ascii=False, separators=(",", ":")) + "\n")


class _ScreenedLines:
    """The read side: the lines the SDK can read; the others are answered here."""

    def __init__(self, fd: int, wire: _Wire, limit: int) -> None:
        self._file: IO[bytes] = os.fdopen(fd, "rb", closefd=False)
        self._wire = wire
        self._limit = limit

    async def __aiter__(self) -> AsyncIterator[str]:
        while True:
            raw = await anyio.to_thread.run_sync(self._file.readline, self._limit, abandon_on_cancel=True)
            if not raw:
                return
            if not raw.endswith(b"\n") and len(raw) >= self._limit:
                await self._skip_rest()
                await self._wire.reply(_too_long(self._limit))
                continue
            line = raw.decode("utf-8", errors="replace")
            if not line.strip():
                continue
            problem = unreadable(line)
            if problem is None:
                yield line
                continue
            # Finding the id of a hostile line may take a while: off the event loop.
            answer = await anyio.to_thread.run_sync(answer_to, line, problem)
            if answer is not None:
                await self._wire.reply(answer)

    async def _skip_rest(self) -> None:
        """Read past the rest of an overlong line without holding it."""
        while True:
            chunk = await anyio.to_thread.run_sync(self._file.readline, self._limit, abandon_on_cancel=True)
            if not chunk or chunk.endswith(b"\n"):
                return


def unreadable(line: str) -> str | None:
    """Why the SDK cannot read ``line`` (it reads it with this same model), or None when it can."""
    try:
        types.jsonrpc_message_adapter.validate_json(line, by_name=False)
    except ValidationError as exc:
        return _first_problem(exc)
    return None


def answer_to(line: str, problem: str) -> dict[str, Any] | None:
    """The JSON-RPC error answering an unreadable line, with its id when one can be read; None
    for a notification or a response, which JSON-RPC never answers."""
    try:
        envelope = json.loads(line, parse_int=_bounded_int)
    except RecursionError:
        envelope = _shallow_fields(line)
    except ValueError as exc:
        detail = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        return _error(None, PARSE_ERROR, f"Parse error: {detail}; send one JSON-RPC message per line")
    if not isinstance(envelope, dict):
        return _error(None, INVALID_REQUEST, "Invalid Request: a JSON-RPC message is a JSON object")
    if "id" not in envelope:
        if "method" in envelope:  # a notification: never answered, even when wrong
            print(f"mcp-orchestrator: dropped an unreadable notification: {problem}", file=sys.stderr)
            return None
        return _error(None, INVALID_REQUEST, f"Invalid Request: {problem}")
    if "method" not in envelope and ("result" in envelope or "error" in envelope):
        print(f"mcp-orchestrator: dropped an unreadable response: {problem}", file=sys.stderr)
        return None
    request_id = envelope["id"]
    if not _valid_id(request_id):
        return _error(None, INVALID_REQUEST, "Invalid Request: id must be a string or an integer")
    if not isinstance(envelope.get("method"), str):
        return _error(request_id, INVALID_REQUEST, f"Invalid Request: {problem}")
    return _error(request_id, INVALID_PARAMS, f"Invalid params: {problem}")


def _first_problem(exc: ValidationError) -> str:
    """The SDK's first complaint, as a sentence that says what to send instead."""
    error = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in error["loc"][1:])  # [0] names the union member tried
    message = error["msg"]
    if error["type"] == "json_invalid":
        return (
            f"the message cannot be read ({message}); send JSON nested at most 200 levels deep, integers "
            "of at most 4300 digits and strings without lone surrogates"
        )
    return f"{where}: {message}" if where else message


def _bounded_int(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        return _HUGE


def _valid_id(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _shallow_fields(text: str) -> dict[str, Any] | None:
    """The small top-level fields (id, method) of a JSON object too deep for ``json.loads``."""
    if not text.lstrip().startswith("{"):
        return None
    fields: dict[str, Any] = {}
    depth, key, start = 0, None, 0
    for match in _TOKEN.finditer(text):
        token = match.group()
        if token[0] == '"':
            if depth == 1 and key is None:
                key = json.loads(token)
            continue
        if token in "{[":
            depth += 1
        elif depth == 1 and token == ":":
            start = match.end()
        elif depth == 1 and token in ",}":
            if key is not None:
                fields[key] = _small_value(text[start : match.start()])
            if "id" in fields and "method" in fields:
                break
            key = None
        if token in "}]":
            depth -= 1
    return fields


def _small_value(span: str) -> Any:
    if len(span) > _SMALL:
        return _HUGE
    try:
        return json.loads(span, parse_int=_bounded_int)
    except ValueError:
        return _HUGE


def _too_long(limit: int) -> dict[str, Any]:
    return _error(
        None,
        INVALID_REQUEST,
        f"Invalid Request: the line is longer than {limit} bytes (8 x {ENV_MAX_PAYLOAD} + 64 KiB); "
        "send smaller arguments",
    )


def _error(request_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


@contextmanager
def _claimed_std_fds() -> Iterator[tuple[int, int]]:
    """Private copies of fds 0 and 1 for the wire, as the SDK's transport makes: meanwhile fd 0 reads
    the null device and fd 1 writes to stderr, so a stray print or a child cannot corrupt the wire."""
    wire_in = fcntl.fcntl(0, fcntl.F_DUPFD_CLOEXEC, 3)
    wire_out = fcntl.fcntl(1, fcntl.F_DUPFD_CLOEXEC, 3)
    sys.stdout.flush()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    try:
        yield wire_in, wire_out
    finally:  # the wire copies stay open: a reader thread may still be blocked on one
        os.dup2(wire_in, 0)
        os.dup2(wire_out, 1)
