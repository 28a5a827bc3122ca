"""Signing in and out of the dashboard: the token buys a session, the cookie holds only its id.

``POST /login`` (the sign-in form, urlencoded) checks the token in constant time and sets an
http-only, ``SameSite=Strict`` cookie with a new random session id; ``POST /logout`` (JSON, with
the page's CSRF token like every other action) revokes the session and clears the cookie.
``GET /api/session`` tells a signed-in script or page its CSRF token (no other origin can read
the answer). The sign-in page itself (``GET /login``) belongs to the dashboard.
"""

from __future__ import annotations

import hmac
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from .sessions import COOKIE, Session, Sessions, cookie_value


def login_routes(token: str | None, sessions: Sessions) -> list[Route]:
    """The POST half of ``/login`` and ``/logout``; list them before the dashboard's routes."""

    async def login(request: Request) -> Response:
        if token is None:  # served without a token: nothing to sign in to
            return RedirectResponse("/", status_code=303)
        form = parse_qs((await request.body()).decode(errors="replace"))  # read under the body limit
        given = (form.get("token") or [""])[0].strip()
        if not hmac.compare_digest(given.encode(errors="replace"), token.encode()):
            from .dashboard import _login  # the dashboard renders its own sign-in page

            return _login("That is not the token. 'mcp-orchestrator token' prints it.", status=401)
        sessions.revoke(cookie_value(request.headers.get("cookie", ""), COOKIE))  # a new id on every sign-in
        session = sessions.create()
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            COOKIE,
            session.session_id,
            max_age=int(sessions.lifetime_s),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )
        return response

    async def logout(request: Request) -> Response:
        session: Session | None = getattr(request.state, "session", None)
        revoked = session is not None and sessions.revoke(session.session_id)
        response = JSONResponse({"signed_out": revoked})
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response

    async def session(request: Request) -> Response:
        current: Session | None = getattr(request.state, "session", None)
        return JSONResponse(
            {"signed_in": current is not None, "csrf_token": getattr(request.state, "csrf_token", None)}
        )

    return [
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/api/session", session, methods=["GET"]),
    ]
