"""The Starlette application served by ``mcp-orchestrator serve --http``.

Every request, on every route (``/mcp`` included) and in every mode, passes the same three
pure-ASGI layers, outermost first: ``SizeLimit`` (header size, and one body limit enforced as
the body streams in), ``HostGuard`` (own Host and Origin only), ``Access`` (token or session, signed webhooks,
CSRF, JSON content type). Errors raised by any route become JSON through ``failures``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from .. import __version__
from ..config import Settings
from ..runtime import Engine
from ..server import build_server, lend
from .api import api_routes
from .auth import Access
from .dashboard import dashboard_routes
from .events import events_endpoint
from .failures import EXCEPTION_HANDLERS
from .hosts import HostGuard, own_hosts
from .limits import SizeLimit, body_limit
from .login import login_routes
from .sessions import Sessions


def build_app(settings: Settings, engine: Engine, token: str | None, host: str, port: int) -> Starlette:
    """Every route and MCP session shares ``engine``, which the caller has opened. ``host`` and
    ``port`` are the address actually bound (port 0 resolved): only they pass the Host check.
    Without a ``token`` nothing is authenticated (``serve --no-token``, loopback only)."""
    hosts = own_hosts(host, port)
    limit = body_limit(settings.max_payload_bytes)
    mcp = build_server(settings, engine_scope=lend(engine))
    # The SDK's own Host/Origin check on /mcp gets exactly our hosts (it would otherwise allow any
    # port, or switch itself off for an address other than 127.0.0.1, localhost or ::1).
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=list(hosts),
        allowed_origins=[f"http://{h}" for h in hosts],
    )
    mcp_app = mcp.streamable_http_app(
        streamable_http_path="/mcp", host=host, transport_security=security, max_request_body_size=limit
    )
    sessions = Sessions()

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "version": __version__})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with mcp.session_manager.run():
            yield

    app = Starlette(
        routes=[
            Route("/healthz", health, methods=["GET"]),
            Route("/events", events_endpoint(engine), methods=["POST"]),
            *api_routes(engine),
            *login_routes(token, sessions),  # before the dashboard's GET /login
            *dashboard_routes(engine, token),
            Mount("/", app=mcp_app),  # last: it matches every path
        ],
        middleware=[
            Middleware(SizeLimit, limit=limit),
            Middleware(HostGuard, hosts=hosts),
            Middleware(Access, token=token, sessions=sessions, webhook_secret=settings.webhook_secret),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.engine = engine
    return app
