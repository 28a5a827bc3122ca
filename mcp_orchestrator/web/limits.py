"""Size limits on every request: its headers, and its body as the body streams in.

Headers together may take ``MAX_HEADER_BYTES`` (the HTTP parser is told the same, so it stops
buffering a slow header block there; a block that arrives at once is measured here). A declared
``Content-Length`` over the body limit is refused before a byte is read; a body without one
(chunked) is counted chunk by chunk and refused the moment it passes the limit, so nothing larger
than the limit is ever held in memory. The refusal is a 413 JSON error; the route below then sees
the client as gone and whatever it answers is dropped.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..config import ENV_MAX_PAYLOAD
from .replies import send_error

MAX_HEADER_BYTES = 32 * 1024
"""All of a request's header names and values together: ample for any browser, cheap to refuse."""

PAYLOAD_MULTIPLE = 4
"""The body limit is this many times the largest stored payload (``max_payload_bytes``): a tool
call, a batch of events or a checkpoint carries one payload plus its JSON-RPC envelope and a few
siblings, and a body that could only ever be refused by the engine need not be read whole."""


def body_limit(max_payload_bytes: int) -> int:
    """The byte limit for every request body, from the store's payload limit."""
    return PAYLOAD_MULTIPLE * max_payload_bytes


class SizeLimit:
    """ASGI middleware: refuses oversized headers, and wraps ``receive`` so no route can read more
    than ``limit`` bytes of body."""

    def __init__(self, app: ASGIApp, limit: int, max_header_bytes: int = MAX_HEADER_BYTES) -> None:
        self.app = app
        self.limit = limit
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header_bytes = sum(len(name) + len(value) for name, value in scope["headers"])
        if header_bytes > self.max_header_bytes:
            message = f"the request's headers take {header_bytes} bytes; the limit is {self.max_header_bytes}"
            await send_error(send, 431, "headers_too_large", message + ": send fewer or smaller headers (cookies)")
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            await send_error(send, 413, "too_large", self._message(f"declared {int(declared)} bytes"))
            return
        seen = 0
        refused = False
        started = False

        async def limited_receive() -> Message:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    refused = True
                    if not started:
                        await send_error(send, 413, "too_large", self._message(f"more than {self.limit} bytes sent"))
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:  # the 413 went out: the route's own answer is dropped
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not refused:  # a route that fails on the "disconnect" after a 413 has nothing more to say
                raise

    def _message(self, what: str) -> str:
        return (
            f"the request body is too large ({what}); the limit is {self.limit} bytes "
            f"({PAYLOAD_MULTIPLE} x {ENV_MAX_PAYLOAD}): send less, or store large data "
            "elsewhere and send a reference"
        )
