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
from ._base import SCHEMAS_FILE, TOOLS, AppContext, engine_tools, schemas_text, tool_schemas

__all__ = ["SCHEMAS_FILE", "TOOLS", "AppContext", "engine_tools", "schemas_text", "tool_schemas"]
