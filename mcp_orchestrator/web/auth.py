"""Who may call the HTTP server: the holder of its bearer token, or a webhook signed with its secret.

The token is created on first use with owner-only permissions and shown by
``mcp-orchestrator token``. Every route but ``/healthz`` (and the dashboard's sign-in page and
script) needs it, as a bearer header or as the cookie ``/login`` sets, except a ``POST /events``
that carries an HMAC signature: that route verifies the signature over the raw body itself. A
browser without either is sent to ``/login``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from http.cookies import CookieError, SimpleCookie
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import ConfigError

SIGNATURE_HEADERS = (b"x-hub-signature-256", b"x-signature-256")
OPEN_PATHS = frozenset({"/healthz", "/login", "/static/dashboard.js"})
COOKIE = "mcp_orchestrator_token"  # set by /login for the dashboard: http-only, same-site strict


def load_or_create_token(path: Path) -> str:
    """The token in ``path``, created there (0600, in a 0700 directory) if there is none."""
    try:
        return _read_token(path)
    except FileNotFoundError:
        pass
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it just now
        return _read_token(path)
    except OSError as exc:
        raise ConfigError(f"cannot create the token file {path}: {exc.strerror}") from exc
    token = secrets.token_urlsafe(32)
    with os.fdopen(descriptor, "w") as file:
        file.write(token + "\n")
    return token


def _read_token(path: Path) -> str:
    token = path.read_text().strip()
    if len(token) < 16:
        raise ConfigError(f"the token file {path} holds no usable token; delete it to get a new one")
    return token


def signature_matches(secret: str, body: bytes, header: str) -> bool:
    """``header`` is 'sha256=<hex HMAC-SHA256 of body>' (GitHub's X-Hub-Signature-256 form)."""
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), header.strip().encode())


class BearerAuth:
    """ASGI middleware: requests need ``Authorization: Bearer <token>``, with the exemptions above."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        signed_webhook = scope["path"] == "/events" and any(name in headers for name in SIGNATURE_HEADERS)
        bearer = hmac.compare_digest(headers.get(b"authorization", b""), self.expected)
        if signed_webhook or bearer or hmac.compare_digest(_cookie(headers, COOKIE), self.token):
            await self.app(scope, receive, send)
            return
        if scope["method"] == "GET" and b"text/html" in headers.get(b"accept", b""):  # a browser: sign in first
            await send({"type": "http.response.start", "status": 303, "headers": [(b"location", b"/login")]})
            await send({"type": "http.response.body", "body": b""})
            return
        reason = "missing" if b"authorization" not in headers else "wrong"
        body = json.dumps(
            {
                "error": "unauthorized",
                "message": f"bearer token {reason}: send 'Authorization: Bearer <token>' with the token that "
                "'mcp-orchestrator token' prints",
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"www-authenticate", b'Bearer realm="mcp-orchestrator"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _cookie(headers: dict[bytes, bytes], name: str) -> bytes:
    cookies = SimpleCookie()
    try:
        cookies.load(headers.get(b"cookie", b"").decode("latin-1"))
    except CookieError:
        return b""
    morsel = cookies.get(name)
    return morsel.value.encode() if morsel is not None else b""
