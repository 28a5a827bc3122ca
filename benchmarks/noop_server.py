"""Baseline for benchmarks: an MCP server on the same SDK whose checkpoint-shaped tool does nothing.

It takes the checkpoint tool's arguments and returns a constant of its result type, so the client
and the server pay the same protocol, validation and serialization costs as for a real checkpoint,
and the difference between the two is the durable work alone.
"""

from datetime import UTC, datetime

from mcp.server import MCPServer

from mcp_orchestrator.models import CheckpointResult, Step, StepStatus

server = MCPServer("noop", log_level="WARNING")
NOW = datetime.now(UTC)


@server.tool()
async def noop(run_id: str, step: str, output: str | None = None) -> CheckpointResult:
    """Accept checkpoint's arguments and store nothing."""
    return CheckpointResult(
        step=Step(step=step, status=StepStatus.COMPLETED, attempt=1, output=output, started_at=NOW, ended_at=NOW),
        replayed=False,
    )


if __name__ == "__main__":
    server.run()
