"""Streamable HTTP: uvicorn on an ephemeral loopback port, driven by the SDK client in both protocol eras."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from mcp import Client

from mcp_orchestrator.cli.serve import listening_socket

from .support import eventually, http_client, http_token, stdio_server

pytestmark = [pytest.mark.anyio, pytest.mark.processes]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_runs_over_http_are_shared_with_stdio(
    http_server: Callable[..., str], db: str, private_state_dir: Path, mode: str
) -> None:
    base = http_server()
    with urllib.request.urlopen(f"{base}/healthz", timeout=10) as response:
        assert json.load(response)["status"] == "ok"
    async with http_client(base, http_token(private_state_dir), mode) as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        assert {"start_run", "checkpoint", "status"} <= tools
        started = (await client.call_tool("start_run", {"name": "over-http", "key": f"http-{mode}"})).structured_content
        run_id = started["run"]["run_id"]
        done = await client.call_tool("checkpoint", {"run_id": run_id, "step": "one", "output": {"via": "http"}})
        assert done.structured_content["step"]["status"] == "completed"
        bad = await client.call_tool("checkpoint", {"run_id": run_id, "step": ""})
        assert bad.is_error and "at least 1 character" in bad.content[0].text

    # Another process (a stdio session) sees the same run in the same store.
    async with Client(stdio_server(db)) as other:
        status = (await other.call_tool("status", {"run_id": run_id})).structured_content
        assert [(s["step"], s["output"]) for s in status["steps"]] == [("one", {"via": "http"})]


async def test_non_local_host_header_is_refused(http_server: Callable[..., str], private_state_dir: Path) -> None:
    base = http_server()
    request = urllib.request.Request(
        f"{base}/mcp",
        data=b"{}",
        headers={
            "Host": "evil.example",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Authorization": f"Bearer {http_token(private_state_dir)}",
        },
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    refused.value.close()
    assert 400 <= refused.value.code < 500


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_client_that_drops_a_wait_over_http_loses_nothing(
    http_server: Callable[..., str], private_state_dir: Path, mode: str
) -> None:
    base = http_server()
    token = http_token(private_state_dir)
    async with http_client(base, token, mode) as client:
        started = await client.call_tool("start_run", {"name": "dropped"})
        run_id = started.structured_content["run"]["run_id"]
    async with http_client(base, token, mode) as client:
        with anyio.move_on_after(0.5):  # gives up mid-wait, then the connection goes away
            await client.call_tool("wait_for_event", {"run_id": run_id, "step": "s", "event": "go", "block_s": 30})
    request = urllib.request.Request(
        f"{base}/events",
        data=json.dumps({"name": "go", "data": mode}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.load(response)["woken_run_ids"] == [run_id]
    async with http_client(base, token, mode) as client:
        result = await client.call_tool("wait_for_event", {"run_id": run_id, "step": "s", "event": "go"})
        assert result.structured_content["status"] == "received"
        assert result.structured_content["event"]["data"] == mode


async def test_accepted_connections_send_at_once_without_waiting_for_an_ack() -> None:
    """The server's socket makes asyncio set TCP_NODELAY on every connection it accepts: without it, a
    response written in two parts waits for the client's delayed ACK on a kept-alive connection."""
    accepted: list[int] = []

    async def note(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    sock = listening_socket("127.0.0.1", 0)
    server = await asyncio.start_server(note, sock=sock)
    async with server:
        _, writer = await asyncio.open_connection(*sock.getsockname())
        await eventually(lambda: accepted)
        writer.close()
    assert accepted == [1]
