"""Dashboard sessions: what the sign-in cookie holds instead of the token.

Signing in with the token creates a random session id (the cookie's value) and a random CSRF
token for the pages of that session. Sessions live in this process only: a bounded number (the
oldest goes first), each for a fixed lifetime; ``/logout`` revokes one, a restart revokes all.
A stolen cookie is therefore worth less than the token: it expires, it can be revoked, and it
never reveals the token.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

COOKIE = "mcp_orchestrator_session"  # http-only, SameSite=Strict, path /
MAX_SESSIONS = 256
LIFETIME_S = 12 * 3600.0


@dataclass(frozen=True)
class Session:
    session_id: str
    csrf_token: str
    expires_at: float  # time.monotonic()


class Sessions:
    """The live sessions of this server process, oldest first."""

    def __init__(self, max_sessions: int = MAX_SESSIONS, lifetime_s: float = LIFETIME_S) -> None:
        self.max_sessions = max_sessions
        self.lifetime_s = lifetime_s
        self._live: OrderedDict[str, Session] = OrderedDict()

    def create(self) -> Session:
        """A new session; the oldest one is dropped when there are already ``max_sessions``."""
        self._drop_expired()
        while len(self._live) >= self.max_sessions:
            self._live.popitem(last=False)
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), time.monotonic() + self.lifetime_s)
        self._live[session.session_id] = session
        return session

    def get(self, session_id: str) -> Session | None:
        """The live session with this id, or None (unknown, revoked or expired)."""
        session = self._live.get(session_id) if session_id else None
        if session is not None and session.expires_at <= time.monotonic():
            del self._live[session_id]
            return None
        return session

    def revoke(self, session_id: str) -> bool:
        """End a session; False when it was not live."""
        return self._live.pop(session_id, None) is not None

    def _drop_expired(self) -> None:
        now = time.monotonic()
        for session_id in [sid for sid, s in self._live.items() if s.expires_at <= now]:
            del self._live[session_id]


def cookie_value(header: str, name: str) -> str:
    """The value of cookie ``name`` in a ``Cookie`` header, by a plain split (no general parser:
    the standard library's is quadratic on some input); "" when it is absent."""
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value.strip().strip('"')
    return ""
