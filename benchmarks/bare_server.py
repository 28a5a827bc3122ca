"""Baseline for benchmarks: a bare MCP server on the same SDK with one tool that does nothing, and no
project code: what any server on this SDK costs to start and to hold (``startup.py``, ``memory.py``)."""

from mcp.server import MCPServer

server = MCPServer("bare", log_level="WARNING")


@server.tool()
async def noop(run_id: str, step: str) -> str:
    """Do nothing."""
    return step


if __name__ == "__main__":
    server.run()
