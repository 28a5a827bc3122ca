"""``python -m mcp_orchestrator.tools``: write ``schemas.json``, the tools' schemas made from their models,
after a change to a tool or to a model it takes or returns (a test says when it is due)."""

from . import SCHEMAS_FILE, schemas_text, tool_schemas

SCHEMAS_FILE.write_text(schemas_text(tool_schemas()), encoding="utf-8")
print(f"wrote {SCHEMAS_FILE}")
