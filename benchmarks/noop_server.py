"""Baseline for benchmarks: an MCP server on the same SDK whose checkpoint-shaped tool does nothing.

It takes the checkpoint tool's arguments and returns a constant of its result type, described by the
same output schema as checkpoint's (compacted, as every tool's is), so the client and the server pay
the same protocol, validation and serialization costs as for a real checkpoint, and the difference
between the two is the durable work alone. With the SDK's own, fuller schema the client would check
every field of the step on each answer, and the baseline would pay for validation that checkpoint's
answers are spared.

``--write DB RUN``: each call also commits the checkpoint's rows for run RUN to a new database file DB
through ``floor.Floor`` (an event loop handing them to one writer thread, none of the engine's code):
the least a durable checkpoint tool on this SDK can cost.
"""

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from floor import Floor
from mcp.server import MCPServer
from mcp.server.mcpserver.tools import Tool

from mcp_orchestrator.models import CheckpointResult, Step, StepStatus
from mcp_orchestrator.tools.schemas import compact_output

NOW = datetime.now(UTC)
floor: Floor | None = None  # with --write


async def noop(run_id: str, step: str, output: str | None = None) -> CheckpointResult:
    """Accept checkpoint's arguments and store nothing (with --write, commit its rows)."""
    if floor is not None:
        await floor.checkpoint(run_id, step, json.dumps(output))
    return CheckpointResult(
        step=Step(step=step, status=StepStatus.COMPLETED, attempt=1, output=output, started_at=NOW, ended_at=NOW),
        replayed=False,
    )


tool = Tool.from_function(noop)
tool.fn_metadata.output_schema = compact_output(CheckpointResult.model_json_schema())  # checkpoint's own
server = MCPServer("noop", log_level="WARNING", tools=[tool])


if __name__ == "__main__":
    if sys.argv[1:2] == ["--write"]:
        floor = Floor(Path(sys.argv[2]), runs=[sys.argv[3]])
    server.run()
