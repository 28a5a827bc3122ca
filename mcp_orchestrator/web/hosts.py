"""Host and Origin checks on every request (DNS-rebinding and cross-origin protection).

A web page can make the browser send requests to a loopback port, and with DNS rebinding its own
name can resolve to 127.0.0.1; the browser still sends that name in ``Host``, and its own origin
in ``Origin``. So every route, in every mode, answers only a ``Host`` that is this server's own
name and port: for a loopback bind ``127.0.0.1:PORT``, ``localhost:PORT``, ``[::1]:PORT`` and the
bound address; for any other bind only the bound address and port (clients must use it as it is).
An ``Origin``, when sent, must be exactly ``http://`` + one of those. Anything else gets 403.
"""

from __future__ import annotations

import ipaddress

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from .replies import send_error

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and any loopback IP address (127.0.0.0/8, ::1)."""
    if host.strip("[]") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def own_hosts(host: str, port: int) -> tuple[str, ...]:
    """The ``Host`` values this server answers to when bound to ``host``:``port``."""
    bare = host.strip("[]").lower()
    shown = f"[{bare}]" if ":" in bare else bare
    names = [shown, *(name for name in LOOPBACK_NAMES if name != shown)] if is_loopback(bare) else [shown]
    return tuple(f"{name}:{port}" for name in names)


class HostGuard:
    """ASGI middleware: refuses a foreign ``Host`` or ``Origin`` before anything else runs."""

    def __init__(self, app: ASGIApp, hosts: tuple[str, ...]) -> None:
        self.app = app
        self.hosts = frozenset(hosts)
        self.origins = frozenset(f"http://{host}" for host in hosts)
        self.listed = ", ".join(hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if host.lower() not in self.hosts:
            message = (
                f"Host {host[:100]!r} is not this server's own address; use one of {self.listed} "
                "(requests for any other name are refused, so a web page cannot reach this server "
                "through DNS rebinding)"
            )
            await send_error(send, 403, "forbidden_host", message)
            return
        origin = headers.get("origin")
        if origin is not None and origin.lower() not in self.origins:
            message = (
                f"Origin {origin[:100]!r} is not this server's own origin; only pages served by this server "
                f"(http://{self.listed.replace(', ', ', http://')}) may send requests from a browser"
            )
            await send_error(send, 403, "forbidden_origin", message)
            return
        await self.app(scope, receive, send)
