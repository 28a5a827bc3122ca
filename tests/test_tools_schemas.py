"""The tools' schemas a server reads at start (``tools/schemas.json``) are the ones their models make."""

from __future__ import annotations

from mcp_orchestrator.tools import SCHEMAS_FILE, schemas_text, tool_schemas


def test_the_stored_schemas_are_the_models_schemas() -> None:
    made = schemas_text(tool_schemas())
    assert SCHEMAS_FILE.read_text(encoding="utf-8") == made, (
        "a tool or a model it takes or returns changed: run 'make schemas' (python -m mcp_orchestrator.tools)"
    )
