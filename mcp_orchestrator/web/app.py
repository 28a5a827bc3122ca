"""The Starlette application served by ``mcp-orchestrator serve --http``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from .. import __version__
from ..config import Settings
from ..engine import Engine
from ..server import build_server, lend
from .api import api_routes
from .auth import BearerAuth
from .dashboard import dashboard_routes
from .events import events_endpoint


def build_app(settings: Settings, engine: Engine, token: str | None, host: str = "127.0.0.1") -> Starlette:
    """Every route and MCP session shares ``engine``, which the caller has opened. Without a
    ``token`` nothing is authenticated (``serve --no-token``, loopback only)."""
    mcp = build_server(settings, engine_scope=lend(engine))
    # DNS-rebinding protection follows ``host``: on a loopback host only local Host headers pass.
    mcp_app = mcp.streamable_http_app(streamable_http_path="/mcp", host=host)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "version": __version__})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with mcp.session_manager.run():
            yield

    app = Starlette(
        routes=[
            Route("/healthz", health, methods=["GET"]),
            Route("/events", events_endpoint(engine, settings), methods=["POST"]),
            *api_routes(engine),
            *dashboard_routes(engine, token),
            Mount("/", app=mcp_app),  # last: it matches every path
        ],
        middleware=[] if token is None else [Middleware(BearerAuth, token=token)],
        lifespan=lifespan,
    )
    app.state.engine = engine
    return app
