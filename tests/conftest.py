"""Shared fixtures: a fresh store per test (a SQLite file, or a schema of a throwaway PostgreSQL
database), engines over it, and real server processes.

The ``db`` fixture runs each test that takes it twice, once per store. PostgreSQL is found at
``MCP_ORCHESTRATOR_TEST_POSTGRES`` (default: the local server over loopback); a test session creates
its own database there and drops it at the end. Without a reachable server the PostgreSQL half is
skipped, except under CI, where it fails.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from mcp_orchestrator.engine import Engine
from mcp_orchestrator.ids import new_id
from mcp_orchestrator.store import Store, is_postgres, store_at

POSTGRES_ADMIN_URL = os.environ.get("MCP_ORCHESTRATOR_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
_schemas = itertools.count(1)


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
    """A SQLite file, for the tests that are about SQLite itself."""
    return tmp_path / "store.db"


def run_sync(coroutine: Any) -> Any:
    """Run a coroutine to completion from sync or async code (on a thread with its own loop)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A database of its own for this test session on the local PostgreSQL server, dropped after."""
    import asyncpg

    name = f"mcp_orchestrator_test_{new_id().lower()}"

    async def admin(statement: str) -> None:
        conn = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    try:
        run_sync(admin(f"CREATE DATABASE {name}"))
    except (OSError, asyncpg.PostgresError) as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {exc}")
    yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    run_sync(admin(f"DROP DATABASE {name} WITH (FORCE)"))


def postgres_schema(database: str) -> str:
    """A fresh, empty schema in the session's database; the URL that selects it."""
    import asyncpg

    schema = f"t{next(_schemas)}"

    async def create() -> None:
        conn = await asyncpg.connect(database)
        try:
            await conn.execute(f"CREATE SCHEMA {schema}")
        finally:
            await conn.close()

    run_sync(create())
    return f"{database}?search_path={schema}"


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The store of a test, run once on each: a SQLite file path or a PostgreSQL URL."""
    if request.param == "sqlite":
        return str(tmp_path / "store.db")
    return postgres_schema(request.getfixturevalue("postgres_database"))


def open_store(db: str | Path) -> Store:
    return store_at(str(db))


def query(db: str | Path, sql: str) -> list[tuple[Any, ...]]:
    """Rows of a literal SQL query, read straight from the store's database (either kind)."""
    if not is_postgres(str(db)):
        with sqlite3.connect(db) as conn:
            return conn.execute(sql).fetchall()

    async def fetch() -> list[tuple[Any, ...]]:
        import asyncpg

        conn = await asyncpg.connect(str(db))
        try:
            return [tuple(row) for row in await conn.fetch(sql)]
        finally:
            await conn.close()

    return run_sync(fetch())


@pytest.fixture
async def engine(db: str) -> AsyncIterator[Engine]:
    async with open_store(db) as store:
        yield Engine(store, workspace="/projects/demo")


def server_env(**extra: str) -> dict[str, str]:
    """The environment of a server subprocess: only what it needs, as an MCP client would give it."""
    env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG", "TMPDIR", "XDG_STATE_HOME") if key in os.environ}
    return {**env, **extra}


def stdio_server(db: str | Path, **env: str) -> StdioServerParameters:
    """``mcp-orchestrator serve`` over stdio, as Claude Code starts it (the db on the command line, so
    tests can find the process by it)."""
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "mcp_orchestrator", "serve", "--db", str(db)],
        env=server_env(**env),
    )


def cli(db: str | Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the installed console script, as a person at the terminal would."""
    script = Path(sys.executable).with_name("mcp-orchestrator")  # the console script of this environment
    result = subprocess.run(
        [str(script), *args, "--db", str(db)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        env=server_env(),
    )
    if check and result.returncode != 0:
        raise AssertionError(f"mcp-orchestrator {' '.join(args)} exited {result.returncode}: {result.stderr}")
    return result


def server_pids(db: str | Path) -> list[int]:
    """Pids of the server processes serving this store (found by their command line)."""
    import psutil

    pids = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "serve" in cmdline and str(db) in cmdline:
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
def http_server(db: str) -> Iterator[Callable[..., str]]:
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
                db,
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
