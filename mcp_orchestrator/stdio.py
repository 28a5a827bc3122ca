"""MCP over stdin/stdout that answers every request it receives.

The SDK's stdio reader drops a line it cannot read (JSON nested deeper than its parser allows, a
lone surrogate, an integer of thousands of digits, invalid JSON) without a reply, so the client
waits until its own timeout. Here each line is read with a bounded length and parsed once, with the
SDK's own message model: what it reads goes to the SDK's server, what it cannot read is answered
with a JSON-RPC error carrying the request's id.

A pipe or a socket (what clients give) is read and written by the event loop itself, made
non-blocking while served: a call then costs no hand-over to a worker thread and back for reading
its line, nor another for writing its answer, as it does in the SDK's transport (with the second
parse, 15 % of the server's instructions per checkpoint: benchmarks/README.md). Anything else (a
terminal, a file) is read and written by worker threads, where a blocking read or write cannot stall
the event loop.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import stat
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import anyio.to_thread
import mcp_types as types
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.server import MCPServer
from mcp.shared.message import SessionMessage
from pydantic import ValidationError

from .config import ENV_MAX_PAYLOAD

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
INVALID_PARAMS = -32602
_SMALL = 200  # longest id value worth recovering from a line that cannot be read whole
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[{}\[\],:]')
_HUGE = object()  # an integer too long for int() (Python's 4300-digit limit)
_CHUNK = 64 * 1024  # bytes read at once


def line_limit(max_payload_bytes: int) -> int:
    """The longest line read: room for a full payload even when every character is escaped."""
    return 8 * max_payload_bytes + 64 * 1024


async def serve_stdio(mcp: MCPServer, max_line_bytes: int) -> None:
    """Serve ``mcp`` on this process's stdin and stdout until stdin ends."""
    with _claimed_std_fds() as (wire_in, wire_out), _polled(wire_in) as in_polled, _polled(wire_out) as out_polled:
        wire = _Wire(wire_out, out_polled)
        lines = _Lines(wire_in, in_polled, max_line_bytes)
        to_server, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
        write_stream, from_server = anyio.create_memory_object_stream[SessionMessage](0)
        server = mcp._lowlevel_server  # what MCPServer.run_stdio_async runs, on our streams
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_read_messages, lines, wire, to_server)
            tasks.start_soon(_write_messages, from_server, wire)
            await server.run(read_stream, write_stream, server.create_initialization_options())


async def _read_messages(
    lines: _Lines, wire: _Wire, to_server: MemoryObjectSendStream[SessionMessage | Exception]
) -> None:
    """Each line read, parsed once: a message to the server, or an error answered here."""
    async with to_server:
        async for raw in lines:
            if raw is None:
                await wire.reply(_too_long(lines.limit))
                continue
            line = raw.decode("utf-8", errors="replace")
            if not line.strip():
                continue
            try:
                message = types.jsonrpc_message_adapter.validate_json(line, by_name=False)
            except ValidationError as exc:
                # Finding the id of a hostile line may take a while: off the event loop.
                answer = await anyio.to_thread.run_sync(answer_to, line, _first_problem(exc))
                if answer is not None:
                    await wire.reply(answer)
                continue
            await to_server.send(SessionMessage(message))


async def _write_messages(from_server: MemoryObjectReceiveStream[SessionMessage], wire: _Wire) -> None:
    """The server's messages, one line each, as the SDK's transport writes them."""
    async with from_server:
        async for session_message in from_server:
            await wire.write(session_message.message.model_dump_json(by_alias=True, exclude_unset=True) + "\n")


class _Wire:
    """The write side: whole lines, one writer at a time (the server's answers and ours share it)."""

    def __init__(self, fd: int, polled: bool) -> None:
        self._fd = fd
        self._polled = polled
        self._lock = anyio.Lock()

    async def write(self, text: str) -> None:
        data = text.encode("utf-8", errors="backslashreplace")  # a lone surrogate stays a JSON escape
        async with self._lock:
            if not self._polled:
                await anyio.to_thread.run_sync(self._write_all, data, abandon_on_cancel=True)
                return
            view = memoryview(data)
            while view:
                try:
                    view = view[os.write(self._fd, view) :]
                except BlockingIOError:  # the client reads slower than we answer: wait for room
                    await anyio.wait_writable(self._fd)

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    async def reply(self, message: dict[str, Any]) -> None:
        await self.write(json.dumps(message, ensure_ascii=False, separators=(",", ":")) + "\n")


class _Lines:
    """The read side: each line (without its newline) as bytes, or None for a line longer than
    ``limit``, which is skipped without being held."""

    def __init__(self, fd: int, polled: bool, limit: int) -> None:
        self._fd = fd
        self._polled = polled
        self.limit = limit

    async def _read(self) -> bytes:
        """The bytes available now (waiting for some), b"" at the end."""
        if not self._polled:
            return await anyio.to_thread.run_sync(os.read, self._fd, _CHUNK, abandon_on_cancel=True)
        while True:
            try:
                return os.read(self._fd, _CHUNK)
            except BlockingIOError:
                await anyio.wait_readable(self._fd)

    async def __aiter__(self) -> AsyncIterator[bytes | None]:
        held = bytearray()
        skipping = False  # within a line over the limit
        while True:
            chunk = await self._read()
            if not chunk:
                if skipping:
                    yield None
                elif held:
                    yield bytes(held)
                return
            start = 0
            while (end := chunk.find(b"\n", start)) >= 0:
                if skipping:
                    skipping = False
                    yield None
                elif len(held) + end - start >= self.limit:
                    held.clear()
                    yield None
                else:
                    held += chunk[start:end]
                    yield bytes(held)
                    held.clear()
                start = end + 1
            if not skipping:
                held += chunk[start:]
                if len(held) >= self.limit:
                    held.clear()
                    skipping = True


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
def _polled(fd: int) -> Iterator[bool]:
    """Whether ``fd`` is served by the event loop: a pipe or a socket, made non-blocking meanwhile
    (and blocking again after, for whoever shares it then)."""
    mode = os.fstat(fd).st_mode
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        yield False
        return
    blocking = os.get_blocking(fd)
    os.set_blocking(fd, False)
    try:
        yield True
    finally:
        os.set_blocking(fd, blocking)


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
