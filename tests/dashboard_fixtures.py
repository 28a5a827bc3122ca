"""Fixtures the dashboard's test modules share: a SQLite store (the browser and the server process share
its file; the store tests cover PostgreSQL), an engine whose permission requests are left pending at once
(for the test, or the page, to decide), and a folder for screenshots. A module imports those it uses."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mcp_orchestrator.permissions import ApprovalsConfig
from mcp_orchestrator.profiles import AgentsConfig
from mcp_orchestrator.runtime import Engine

from .support import open_store

__all__ = ["artifacts", "db", "engine"]


@pytest.fixture
def db(db_path: Path) -> str:
    """SQLite only: the server process and the test share the file."""
    return str(db_path)


@pytest.fixture
async def engine(db: str, tmp_path: Path) -> AsyncIterator[Engine]:
    """Permission requests never block: a request is left pending at once."""
    agents = AgentsConfig(approvals=ApprovalsConfig(wait_s=0))
    async with open_store(db) as store:
        yield Engine(store, workspace=str(tmp_path), agents=agents)


@pytest.fixture
def artifacts(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """Where a module's screenshots go: $MCP_ORCHESTRATOR_ARTIFACTS (else the test's tmp dir), in a folder
    named for the module."""
    module = request.module.__name__.rpartition(".")[2].removeprefix("test_")
    folder = Path(os.environ.get("MCP_ORCHESTRATOR_ARTIFACTS") or tmp_path) / module
    folder.mkdir(parents=True, exist_ok=True)
    return folder
