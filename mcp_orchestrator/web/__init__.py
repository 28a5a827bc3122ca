"""The HTTP face: the MCP endpoint at /mcp and a health check (later: webhooks, API, dashboard)."""

from .app import build_app

__all__ = ["build_app"]
