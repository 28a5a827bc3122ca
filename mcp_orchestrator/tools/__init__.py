"""The MCP face: one module per primitive group, each tool a thin call into the engine."""

from __future__ import annotations

from . import agents, approvals, events, fan_in, runs, schedules, steps  # noqa: F401  (importing registers the tools)
from ._base import TOOLS, AppContext, engine_tools

__all__ = ["TOOLS", "AppContext", "engine_tools"]
