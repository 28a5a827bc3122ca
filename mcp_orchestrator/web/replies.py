"""The one shape of every refusal the HTTP face sends itself: JSON ``{"error": code, "message"}``.

Pure-ASGI middleware answers before Starlette builds a request, so it sends through this.
"""

from __future__ import annotations

import json

from starlette.types import Send


async def send_error(
    send: Send, status: int, code: str, message: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Answer ``status`` with the JSON error body; ``headers`` are added (e.g. WWW-Authenticate)."""
    body = json.dumps({"error": code, "message": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
