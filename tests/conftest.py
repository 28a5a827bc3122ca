"""The fixtures: a fresh store per test (a SQLite file, or a schema of a throwaway PostgreSQL
database), engines over it, and real server processes. Helpers that are not fixtures live in
``support.py``, where test modules import them from.

The ``db`` fixture runs each test that takes it twice, once per store. PostgreSQL is found at
``MCP_ORCHESTRATOR_TEST_POSTGRES`` (default: the local server over loopback); a test session creates
its own database there and drops it at the end. Without a reachable server the PostgreSQL half is
skipped, except under CI, where it fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from mcp_orchestrator.ids import new_id
from mcp_orchestrator.runtime import Engine

from .support import POSTGRES_ADMIN_URL, open_store, postgres_schema, run_sync, server_env


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


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The store of a test, run once on each: a SQLite file path or a PostgreSQL URL."""
    if request.param == "sqlite":
        return str(tmp_path / "store.db")
    return postgres_schema(request.getfixturevalue("postgres_database"))


@pytest.fixture
async def engine(db: str) -> AsyncIterator[Engine]:
    async with open_store(db) as store:
        yield Engine(store, workspace="/projects/demo")


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
