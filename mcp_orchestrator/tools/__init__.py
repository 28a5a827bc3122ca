"""The MCP face: one module per primitive group, each tool a thin call into the engine."""

from __future__ import annotations

from . import (  # noqa: F401  (importing registers the tools)
    agents,
    approvals,
    budgets,
    events,
    fan_in,
    messages,
    runs,
    schedules,
    steps,
)
from ._base import TOOLS, AppContext, engine_tools

__all__ = ["TOOLS", "AppContext", "engine_tools"]
