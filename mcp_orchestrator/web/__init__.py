"""The HTTP face: MCP at /mcp, webhooks at /events, the JSON API, the dashboard, and /healthz."""

from .app import build_app

__all__ = ["build_app"]
