"""Who may call the HTTP server, and which requests a browser may not forge.

Authentication (when the server has a token): ``Authorization: Bearer <token>``, or the dashboard's
session cookie (see ``sessions``; ``/login`` trades the token for one). ``GET /healthz``, the
sign-in page and the static assets are open. A signature may stand in for the token on
``POST /events`` only, only when a webhook secret is set, and only once the HMAC-SHA256 over the
exact body has been verified here. Everything else without credentials is refused before its body
is read (a browser asking for a page is sent to ``/login``).

CSRF: a request that changes something (any method but GET, HEAD, OPTIONS) and is authenticated
by the cookie, or that comes from a browser (it carries ``Origin``) to a ``--no-token`` server
(but for ``/mcp``, a protocol endpoint for programs), must carry the server's exact ``Origin``
and the session's CSRF token in ``X-CSRF-Token`` (a ``--no-token`` server has one per process).
Pages find it in ``request.state.csrf_token``. Bearer requests need neither: a browser cannot
attach that header to a cross-origin request. And every POST, PUT or PATCH but the sign-in form
must be ``Content-Type: application/json``, which a form or a ``no-cors`` fetch cannot send.

The token is created on first use with owner-only permissions; ``mcp-orchestrator token`` shows it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..config import ENV_WEBHOOK_SECRET
from .replies import send_error
from .sessions import COOKIE, Session, Sessions, cookie_value

__all__ = ["COOKIE", "Access", "signature_matches"]

SIGNATURE_HEADERS = ("x-hub-signature-256", "x-signature-256")
OPEN_PATHS = frozenset({"/healthz", "/login"})
OPEN_PREFIXES = ("/static/",)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})  # DELETE (an MCP session's end) carries no body
FORM_PATHS = frozenset({"/login"})  # the sign-in form posts urlencoded, not JSON
MCP_PATH = "/mcp"
CSRF_HEADER = "x-csrf-token"


def signature_matches(secret: str, body: bytes, header: str) -> bool:
    """``header`` is 'sha256=<hex HMAC-SHA256 of body>' (GitHub's X-Hub-Signature-256 form)."""
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), header.strip().encode(errors="replace"))


def is_json(headers: Headers) -> bool:
    """True when the body is declared ``application/json`` (parameters such as charset allowed)."""
    return headers.get("content-type", "").split(";")[0].strip().lower() == "application/json"


Refusal = Callable[[Send], Awaitable[None]]


class Access:
    """ASGI middleware: authentication, CSRF and the JSON content type, for every route."""

    def __init__(self, app: ASGIApp, token: str | None, sessions: Sessions, webhook_secret: str | None) -> None:
        self.app = app
        self.expected = None if token is None else f"Bearer {token}".encode()
        self.sessions = sessions
        self.webhook_secret = webhook_secret
        self.process_csrf = secrets.token_urlsafe(32)  # --no-token: one CSRF token for the process

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        path, method = scope["path"], scope["method"]
        if method == "POST" and path == "/events" and any(name in headers for name in SIGNATURE_HEADERS):
            await self._signed_webhook(scope, receive, send, headers)
            return
        bearer = self.expected is not None and hmac.compare_digest(
            headers.get("authorization", "").encode(errors="replace"), self.expected
        )
        session = None if bearer else self.sessions.get(cookie_value(headers.get("cookie", ""), COOKIE))
        if self.expected is not None and not bearer and session is None and not _open(path):
            await _unauthenticated(send, method, headers)
            return
        csrf = session.csrf_token if session else self.process_csrf if self.expected is None else None
        state = scope.setdefault("state", {})
        if csrf is not None:
            state["csrf_token"] = csrf
        if session is not None:
            state["session"] = session
        if method not in SAFE_METHODS:
            refusal = self._refusal(method, path, headers, session)
            if refusal is not None:
                await refusal(send)
                return
        await self.app(scope, receive, send)

    def _refusal(self, method: str, path: str, headers: Headers, session: Session | None) -> Refusal | None:
        """Why a state-changing request is refused (CSRF, content type), or None."""
        # Without a token, a request that carries Origin comes from a browser: from one of this
        # server's own pages (HostGuard refused every other origin), so it must show the page's token.
        # /mcp is left to programs: MCP clients may send their own Origin, and it takes JSON only.
        page = self.expected is None and "origin" in headers and path != MCP_PATH
        browser = session is not None or page
        if browser and path not in FORM_PATHS:
            own = "http://" + headers.get("host", "").lower()  # HostGuard has checked Host already
            given = headers.get("origin")
            if given is None or given.lower() != own:
                why = "no Origin header" if given is None else f"Origin {given[:100]!r}"
                message = (
                    f"a browser request that changes something must come from this server's own pages "
                    f"(Origin {own}); this one has {why}"
                )
                return lambda send: send_error(send, 403, "csrf_refused", message)
            expected = session.csrf_token if session is not None else self.process_csrf
            if not hmac.compare_digest(headers.get(CSRF_HEADER, "").encode(errors="replace"), expected.encode()):
                message = (
                    "the X-CSRF-Token header is missing or wrong: send the value of the page's "
                    '<meta name="csrf-token"> (or use the bearer token instead of the cookie)'
                )
                return lambda send: send_error(send, 403, "csrf_refused", message)
        if method in BODY_METHODS and path not in FORM_PATHS and not is_json(headers):
            given = headers.get("content-type")
            message = (
                f"Content-Type {given[:100]!r} is not accepted here" if given else "no Content-Type"
            ) + "; send the body as JSON with 'Content-Type: application/json' (an empty body may be {})"
            return lambda send: send_error(send, 415, "unsupported_media_type", message)
        return None

    async def _signed_webhook(self, scope: Scope, receive: Receive, send: Send, headers: Headers) -> None:
        """A signed ``POST /events``: verify the HMAC over the exact body, then pass that body on."""
        if self.webhook_secret is None:
            message = f"a signed request, but no webhook secret is set ({ENV_WEBHOOK_SECRET}): send the bearer token"
            await send_error(send, 401, "unauthorized", message)
            return
        if not is_json(headers):
            given = headers.get("content-type") or "none"
            message = f"Content-Type {given[:100]!r}: a webhook must send 'Content-Type: application/json'"
            await send_error(send, 415, "unsupported_media_type", message)
            return
        body = await _read_body(receive)
        if body is None:  # the client went away, or the body passed the size limit (already answered)
            return
        signature = headers.get("x-hub-signature-256") or headers.get("x-signature-256", "")
        if not signature_matches(self.webhook_secret, body, signature):
            why = "the signature does not match the body (want 'sha256=<hex HMAC-SHA256 of the raw body>')"
            await send_error(send, 401, "bad_signature", why)
            return
        scope.setdefault("state", {})["signed_webhook"] = True
        await self.app(scope, _replay(body, receive), send)


def _open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


async def _unauthenticated(send: Send, method: str, headers: Headers) -> None:
    if method == "GET" and "text/html" in headers.get("accept", ""):  # a browser: sign in first
        await send({"type": "http.response.start", "status": 303, "headers": [(b"location", b"/login")]})
        await send({"type": "http.response.body", "body": b""})
        return
    given = headers.get("authorization", "").strip()
    # "Bearer " with nothing after it (a shell that found no `mcp-orchestrator token`) is a missing token.
    reason = "missing" if given.lower() in ("", "bearer") else "wrong"
    message = (
        f"bearer token {reason}: send 'Authorization: Bearer <token>' with the token that "
        "'mcp-orchestrator token' prints"
    )
    await send_error(send, 401, "unauthorized", message, [(b"www-authenticate", b'Bearer realm="mcp-orchestrator"')])


async def _read_body(receive: Receive) -> bytes | None:
    """The whole body (``receive`` enforces the size limit), or None if the client disconnected."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the already-read body to the route, then waits as the server does."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay
