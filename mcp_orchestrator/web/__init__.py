"""The HTTP face, assembled by ``app.build_app``: MCP at /mcp, webhooks at /events, the JSON API
under /api, the dashboard (pages from ``templates/``, assets from ``static/``, sign-in at /login,
live updates at /api/stream) and /healthz."""

from .app import build_app

__all__ = ["build_app"]
