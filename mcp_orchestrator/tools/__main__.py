"""``python -m mcp_orchestrator.tools``: write ``schemas.json``, the tools' schemas made from their models,
after a change to a tool or to a model it takes or returns (a test says when it is due). With ``--check``,
write nothing and exit 1 if the file differs from what the models make (``make lint`` runs it)."""

import sys

from . import SCHEMAS_FILE, schemas_text, tool_schemas

made = schemas_text(tool_schemas())
if sys.argv[1:] == ["--check"]:
    if SCHEMAS_FILE.read_text(encoding="utf-8") != made:
        sys.exit(f"{SCHEMAS_FILE} is stale: a tool or a model it takes or returns changed; run 'make schemas'")
    print(f"{SCHEMAS_FILE} is up to date")
elif sys.argv[1:]:
    sys.exit("usage: python -m mcp_orchestrator.tools [--check]")
else:
    SCHEMAS_FILE.write_text(made, encoding="utf-8")
    print(f"wrote {SCHEMAS_FILE}")
