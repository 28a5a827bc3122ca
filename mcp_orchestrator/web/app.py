"""The Starlette application served by ``mcp-orchestrator serve --http``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from .. import __version__
from ..config import Settings
from ..runtime import open_engine
from ..server import build_server


def build_app(settings: Settings, host: str = "127.0.0.1") -> Starlette:
    """The engine is opened once by the app's lifespan and shared by every route and MCP session."""
    engine_holder: dict[str, object] = {}

    @asynccontextmanager
    async def lend_engine() -> AsyncIterator[object]:
        yield engine_holder["engine"]

    mcp = build_server(settings, engine_scope=lend_engine)  # type: ignore[arg-type]
    mcp_app = mcp.streamable_http_app(streamable_http_path="/mcp", host=host)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "version": __version__})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with open_engine(settings) as engine:
            engine_holder["engine"] = engine
            app.state.engine = engine
            async with mcp.session_manager.run():
                yield

    return Starlette(
        routes=[
            Route("/healthz", health, methods=["GET"]),
            Mount("/", app=mcp_app),  # last: it matches every path
        ],
        lifespan=lifespan,
    )
