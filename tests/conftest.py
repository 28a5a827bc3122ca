"""Shared fixtures: a fresh SQLite file per test, engines over it, and real server processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from mcp_orchestrator.engine import Engine
from mcp_orchestrator.store.sqlite import SQLiteStore


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def private_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Tests never touch the user's state directory (default store, token), nor share one."""
    state = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    return state / "mcp-orchestrator"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "store.db"


@pytest.fixture
async def engine(db_path: Path) -> AsyncIterator[Engine]:
    async with SQLiteStore(db_path) as store:
        yield Engine(store, workspace="/projects/demo")


def server_env(**extra: str) -> dict[str, str]:
    """The environment of a server subprocess: only what it needs, as an MCP client would give it."""
    env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG", "TMPDIR", "XDG_STATE_HOME") if key in os.environ}
    return {**env, **extra}


def stdio_server(db_path: Path, **env: str) -> StdioServerParameters:
    """``mcp-orchestrator serve`` over stdio, as Claude Code starts it (the db on the command line, so
    tests can find the process by it)."""
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "mcp_orchestrator", "serve", "--db", str(db_path)],
        env=server_env(**env),
    )


def cli(db_path: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the installed console script, as a person at the terminal would."""
    script = Path(sys.executable).with_name("mcp-orchestrator")  # the console script of this environment
    result = subprocess.run(
        [str(script), *args, "--db", str(db_path)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        env=server_env(),
    )
    if check and result.returncode != 0:
        raise AssertionError(f"mcp-orchestrator {' '.join(args)} exited {result.returncode}: {result.stderr}")
    return result


def server_pids(db_path: Path) -> list[int]:
    """Pids of the server processes serving this store (found by their command line)."""
    import psutil

    pids = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "serve" in cmdline and str(db_path) in cmdline:
            pids.append(process.info["pid"])
    return pids


async def eventually(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll ``check`` until it returns something truthy (or stops raising AssertionError)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await anyio.sleep(interval)


@pytest.fixture
def http_server(db_path: Path) -> Iterator[Callable[..., str]]:
    """Start ``mcp-orchestrator serve --http 127.0.0.1:0``; returns its base URL."""
    processes: list[subprocess.Popen[str]] = []

    def start(*options: str, **env: str) -> str:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mcp_orchestrator",
                "serve",
                "--http",
                "127.0.0.1:0",
                "--db",
                str(db_path),
                *options,
            ],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env=server_env(**env),
        )
        processes.append(process)
        assert process.stderr is not None
        seen = []
        for line in process.stderr:  # the address is announced once the server accepts requests
            if "MCP at " in line:
                return line.split("MCP at ")[1].split("/mcp")[0]
            seen.append(line)
        process.kill()
        raise AssertionError(f"server did not start: {''.join(seen)}")

    yield start
    for process in processes:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()


def http_token(state_dir: Path) -> str:
    """The bearer token an HTTP server created in this test's state directory."""
    return (state_dir / "token").read_text().strip()


@asynccontextmanager
async def http_client(base: str, token: str, mode: str = "auto") -> AsyncIterator[Client]:
    """An MCP client over streamable HTTP that sends the bearer token."""
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300)) as http,
        Client(streamable_http_client(f"{base}/mcp", http_client=http), mode=mode) as client,
    ):
        yield client


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    """Call a tool that must succeed; its structured result."""
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content[0].text
    assert result.structured_content is not None
    return result.structured_content
