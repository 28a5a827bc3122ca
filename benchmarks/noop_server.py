"""Baseline for benchmarks: an MCP server on the same SDK whose checkpoint-shaped tool does nothing.

It takes the checkpoint tool's arguments and returns a constant of its result type, described by the
same output schema as checkpoint's (compacted, as every tool's is), so the client and the server pay
the same protocol, validation and serialization costs as for a real checkpoint, and the difference
between the two is the durable work alone. With the SDK's own, fuller schema the client would check
every field of the step on each answer, and the baseline would pay for validation that checkpoint's
answers are spared.
"""

from datetime import UTC, datetime

from mcp.server import MCPServer
from mcp.server.mcpserver.tools import Tool

from mcp_orchestrator.models import CheckpointResult, Step, StepStatus
from mcp_orchestrator.tools.schemas import compact_output

NOW = datetime.now(UTC)


async def noop(run_id: str, step: str, output: str | None = None) -> CheckpointResult:
    """Accept checkpoint's arguments and store nothing."""
    return CheckpointResult(
        step=Step(step=step, status=StepStatus.COMPLETED, attempt=1, output=output, started_at=NOW, ended_at=NOW),
        replayed=False,
    )


tool = Tool.from_function(noop)
tool.fn_metadata.output_schema = compact_output(CheckpointResult.model_json_schema())  # checkpoint's own
server = MCPServer("noop", log_level="WARNING", tools=[tool])


if __name__ == "__main__":
    server.run()
