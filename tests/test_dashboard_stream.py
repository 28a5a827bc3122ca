"""The dashboard's live-update stream (``/api/stream``): it speaks only when what a page shows
changed, and the server bounds how long a stream lives and how many are open (both stores)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path

import anyio
import httpx2
import pytest
import uvicorn
from starlette.applications import Starlette

from mcp_orchestrator.models import CheckpointInput, StartRunInput
from mcp_orchestrator.runtime import Engine
from mcp_orchestrator.services.subagents import LEASE
from mcp_orchestrator.web.dashboard import dashboard_routes

from .support import eventually, http_token

pytestmark = pytest.mark.anyio

LEASE_TTL_S = 1.5  # the server renews its leases every 0.5 s


async def lease_expiry(engine: Engine) -> datetime | None:
    lease = await engine.store.read(lambda tx: tx.get_lease(LEASE))
    return None if lease is None else lease[1]


async def held_lease(engine: Engine, timeout: float = 10.0) -> datetime:
    """When the server's supervisor lease expires, once the server holds it."""
    deadline = time.monotonic() + timeout
    while (expiry := await lease_expiry(engine)) is None:
        assert time.monotonic() < deadline, "the server never took the supervisor lease"
        await anyio.sleep(0.05)
    return expiry


async def fingerprint(client: httpx2.AsyncClient, page: str) -> str:
    """The fingerprint a freshly loaded page carries (what the browser hands the stream)."""
    html = (await client.get(page)).text
    found = re.search(r"<main data-fingerprint='([0-9a-f]+)'>", html)
    assert found, html[:500]
    return found.group(1)


async def messages(client: httpx2.AsyncClient, params: dict[str, str], within: float) -> list[str]:
    """The ``data:`` lines a stream sends within ``within`` seconds."""
    seen: list[str] = []
    with anyio.move_on_after(within):
        async with client.stream("GET", "/api/stream", params=params) as response:
            assert response.status_code == 200, await response.aread()
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    seen.append(line)
    return seen


@pytest.mark.processes
async def test_an_idle_page_hears_nothing_of_lease_renewals_and_a_checkpoint_at_once(
    engine: Engine, http_server: Callable[..., str], private_state_dir: Path, tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f"[supervisor]\nlease_ttl_s = {LEASE_TTL_S}\n")
    base = http_server(MCP_ORCHESTRATOR_CONFIG=str(config))
    run_id = (await engine.runs.start_run(StartRunInput(name="idle"))).run.run_id
    first = await held_lease(engine)
    headers = {"Authorization": f"Bearer {http_token(private_state_dir)}"}
    async with httpx2.AsyncClient(base_url=base, headers=headers, timeout=10) as client:
        params = {"page": f"/runs/{run_id}"}  # seen as it is when the stream opens
        assert await messages(client, params, within=4 * LEASE_TTL_S / 3) == []
        renewed = await lease_expiry(engine)
        assert renewed is not None and (renewed - first).total_seconds() >= LEASE_TTL_S / 3 * 2.5  # 3 renewals

        opened = anyio.Event()  # the stream answered: it has read the page as the browser saw it

        async def checkpoint_once_open() -> None:
            await opened.wait()
            await engine.runs.checkpoint(CheckpointInput(run_id=run_id, step="visible", output={"n": 1}))

        started = time.monotonic()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(checkpoint_once_open)
            async with client.stream("GET", "/api/stream", params=params) as response:
                opened.set()
                async for line in response.aiter_lines():
                    if line.startswith("data:"):
                        break
        assert time.monotonic() - started < 3.0


@asynccontextmanager
async def dashboard_server(engine: Engine, max_streams: int, lifetime_s: float) -> AsyncIterator[str]:
    """The dashboard's routes alone, on a loopback port, with small stream bounds."""
    app = Starlette(routes=dashboard_routes(engine, None, max_streams=max_streams, stream_lifetime_s=lifetime_s))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: server.started)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def test_a_stream_ends_after_its_lifetime_and_resumes_from_the_last_fingerprint(engine: Engine) -> None:
    run_id = (await engine.runs.start_run(StartRunInput(name="resumed"))).run.run_id
    async with (
        dashboard_server(engine, max_streams=4, lifetime_s=0.5) as base,
        httpx2.AsyncClient(base_url=base) as client,
    ):
        page = f"/runs/{run_id}"
        current = await fingerprint(client, page)
        started = time.monotonic()
        assert await messages(client, {"page": page, "seen": current}, within=5) == []
        assert time.monotonic() - started < 3  # the server ended it, not the test's bound
        # A browser that reconnects after missing a change hears of it at once (Last-Event-ID wins over seen).
        await engine.runs.checkpoint(CheckpointInput(run_id=run_id, step="while-away"))
        async with client.stream(
            "GET", "/api/stream", params={"page": page, "seen": "0"}, headers={"Last-Event-ID": current}
        ) as response:
            ids = [line async for line in response.aiter_lines() if line.startswith("id:")]
        assert ids == [f"id: {await fingerprint(client, page)}"]


async def test_streams_beyond_the_cap_are_refused_with_503(engine: Engine) -> None:
    async with (
        dashboard_server(engine, max_streams=2, lifetime_s=60) as base,
        httpx2.AsyncClient(base_url=base) as client,
    ):
        async with client.stream("GET", "/api/stream", params={"page": "/"}) as one:
            assert one.status_code == 200
            async with client.stream("GET", "/api/stream", params={"page": "/events"}) as two:
                assert two.status_code == 200
                refused = await client.get("/api/stream", params={"page": "/"})
                assert refused.status_code == 503
                assert refused.json()["error"] == "too_many_streams"
                assert "2 live-update streams are open" in refused.json()["message"]

        async def accepted() -> bool:
            async with client.stream("GET", "/api/stream", params={"page": "/"}) as again:
                return again.status_code == 200

        deadline = time.monotonic() + 5
        while not await accepted():  # closed streams free their places
            assert time.monotonic() < deadline
            await anyio.sleep(0.05)
        unknown = await client.get("/api/stream", params={"page": "/nowhere"})
        assert unknown.status_code == 400 and "'/nowhere' is not a dashboard page" in unknown.json()["message"]
