"""Requests over HTTP on a kept-alive connection, against the same requests each on a fresh connection.

    python benchmarks/keepalive.py [--n 300]

Starts ``mcp-orchestrator serve --http 127.0.0.1:0`` on a temporary store and measures, one request after
another:

1. ``GET /healthz`` on a new connection per request (the baseline: no connection to keep);
2. ``GET /healthz`` on one kept-alive connection;
3. the checkpoint tool over streamable HTTP from the MCP SDK's client, which keeps its connection.

A kept-alive connection should answer at least as fast as a fresh one. When the accepted sockets lack
``TCP_NODELAY``, Nagle's algorithm holds each response's body (written after its headers) until the
client's delayed ACK, and lines 2 and 3 take ~40 ms a request.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from measure import percentile


async def timed(label: str, n: int, call: Callable[[], Awaitable[object]]) -> float:
    """Run ``call`` ``n`` times one after another; print and return the median latency in ms."""
    await call()  # warm: the connection, the first request's imports
    latencies = []
    started = time.perf_counter()
    for _ in range(n):
        begun = time.perf_counter()
        await call()
        latencies.append(time.perf_counter() - begun)
    elapsed = time.perf_counter() - started
    p50 = statistics.median(latencies) * 1000
    p99 = percentile(latencies, 0.99) * 1000
    print(f"{label:<48}{n / elapsed:>8,.0f}/s  p50 {p50:>6.2f} ms  p99 {p99:>6.2f} ms")
    return p50


def start_server(directory: Path) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "XDG_STATE_HOME": str(directory / "state")}
    command = [sys.executable, "-m", "mcp_orchestrator", "serve", "--http", "127.0.0.1:0", "--db"]
    server = subprocess.Popen([*command, str(directory / "store.db")], stderr=subprocess.PIPE, text=True, env=env)
    assert server.stderr is not None
    for line in server.stderr:
        if "MCP at " in line:
            return server, line.split("MCP at ")[1].split("/mcp")[0]
    raise SystemExit(f"the server did not start (exit {server.wait()})")


async def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server, base = start_server(Path(tmp))
        try:
            token = (Path(tmp) / "state" / "mcp-orchestrator" / "token").read_text().strip()
            headers = {"Authorization": f"Bearer {token}"}

            async def fresh_healthz() -> None:
                async with httpx2.AsyncClient() as http:
                    (await http.get(f"{base}/healthz")).raise_for_status()

            fresh = await timed("GET /healthz, a new connection each", n, fresh_healthz)
            async with httpx2.AsyncClient() as http:

                async def kept_healthz() -> None:
                    (await http.get(f"{base}/healthz")).raise_for_status()

                kept = await timed("GET /healthz, one kept-alive connection", n, kept_healthz)
            async with (
                httpx2.AsyncClient(headers=headers, timeout=30) as http,
                Client(streamable_http_client(f"{base}/mcp", http_client=http)) as client,
            ):
                started = await client.call_tool("start_run", {"name": "bench"})
                run_id = started.structured_content["run"]["run_id"]  # type: ignore[index]
                steps = iter(range(n + 1))

                async def checkpoint() -> None:
                    result = await client.call_tool(
                        "checkpoint", {"run_id": run_id, "step": f"s{next(steps)}", "output": "x" * 500}
                    )
                    assert not result.is_error, result.content

                tool = await timed("checkpoint tool, SDK client (kept alive)", n, checkpoint)
        finally:
            server.terminate()
            server.wait()
    print(f"\nkept-alive /healthz vs a new connection each: {fresh / kept:.2f}x as fast (p50)")
    print(f"checkpoint over HTTP, p50 {tool:.2f} ms (target: under 3 ms)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300, help="requests per line")
    asyncio.run(main(parser.parse_args().n))
