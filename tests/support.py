"""What the test modules share that is not a fixture: running a coroutine, reading a store, starting
servers and the console script, MCP clients, polling for a condition, a settable clock, a raw stdio
speaker, the tool contract.

Fixtures live in ``conftest.py``, and what only the sub-agent tests share in ``subagent_helpers.py``;
test modules import helpers from these two, never from ``conftest.py`` or from one another.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import os
import queue
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.extension import ClientExtension
from mcp.client.streamable_http import streamable_http_client
from playwright.async_api import ConsoleMessage, Page, async_playwright

from mcp_orchestrator.models import StatusInput
from mcp_orchestrator.runtime import Engine
from mcp_orchestrator.services.subagents import LEASE
from mcp_orchestrator.store import Store, is_postgres, store_at

POSTGRES_ADMIN_URL = os.environ.get("MCP_ORCHESTRATOR_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
_schemas = itertools.count(1)


def run_sync(coroutine: Any) -> Any:
    """Run a coroutine to completion from sync or async code (on a thread with its own loop)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


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
    """Poll ``check`` until it returns something truthy (or stops raising AssertionError); a check
    may be a coroutine function, awaited each time."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return result
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await anyio.sleep(interval)


async def has_wait(engine: Engine, run_id: str, step: str) -> bool:
    """Whether the run's step ``step`` is a registered wait: a caller blocking on it has written it
    (and a later event or run end reaches it), so a test can go on without sleeping."""
    waits = (await engine.runs.status(StatusInput(run_id=run_id))).waits
    return any(wait.step == step for wait in waits)


async def lease_holder(engine: Engine, name: str = LEASE) -> str | None:
    """Who holds the lease (the supervisor's, by default) now: None when nobody does, or it expired."""
    lease = await engine.subagents.lease_holder(name)
    return None if lease is None else lease[0]


@contextmanager
def blocking_noticed(store: Store) -> Iterator[anyio.Event]:
    """An event set once a caller blocks in ``store.wait_for_change``: how a test knows a watcher that
    leaves no row in the store (``wait_for_runs`` without a step) is parked."""
    blocked = anyio.Event()
    original = store.wait_for_change

    async def noticing(timeout: float, since: int | None = None, *, waking: bool = False) -> None:
        blocked.set()
        await original(timeout, since, waking=waking)

    store.wait_for_change = noticing  # type: ignore[method-assign]
    try:
        yield blocked
    finally:
        del store.wait_for_change  # the class's own method again


def http_token(state_dir: Path) -> str:
    """The bearer token an HTTP server created in this test's state directory."""
    return (state_dir / "token").read_text().strip()


@asynccontextmanager
async def http_client(
    base: str, token: str, mode: str = "auto", extensions: Sequence[ClientExtension] = ()
) -> AsyncIterator[Client]:
    """An MCP client over streamable HTTP that sends the bearer token (and declares ``extensions``)."""
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300)) as http,
        Client(
            streamable_http_client(f"{base}/mcp", http_client=http), mode=mode, extensions=list(extensions)
        ) as client,
    ):
        yield client


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    """Call a tool that must succeed; its structured result."""
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content[0].text
    assert result.structured_content is not None
    return result.structured_content


async def all_steps(client: Client, run_id: str) -> list[dict[str, Any]]:
    """Every step of the run, oldest first, read page by page as status hands them out (each answer
    fits the result budget: a long run comes in several)."""
    steps: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        arguments: dict[str, Any] = {"run_id": run_id, "journal_limit": 0}
        if cursor is not None:
            arguments["steps_cursor"] = cursor
        page = await call(client, "status", **arguments)
        steps[:0] = page["steps"]
        cursor = page.get("steps_cursor")
        if cursor is None:
            assert len(steps) == page["steps_total"], (len(steps), page["steps_total"])
            return steps


class Clock:
    """A clock the test sets: engines built with it see time move only when the test says so."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def chromium() -> str:
    """Debian's chromium, which the browser tests drive (a clear failure when it is missing)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("the dashboard tests need Debian's chromium (apt-get install chromium); .ci/run installs it")
    return found


@asynccontextmanager
async def dashboard_page(
    base: str,
    token: str,
    problems: list[str],
    width: int = 1280,
    height: int = 900,
    *,
    timezone: str | None = None,
    warnings: bool = False,
) -> AsyncIterator[Page]:
    """A headless-Chromium page signed in to the dashboard at ``base`` (on its run list); the page's
    uncaught errors and console errors (with ``warnings``, its warnings too), from the sign-in page on, are
    appended to ``problems``, and its dialogs (confirmations) accepted. ``timezone``: the viewer's zone."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        page = await browser.new_page(viewport={"width": width, "height": height}, timezone_id=timezone)
        kinds = ("error", "warning") if warnings else ("error",)

        def console(message: ConsoleMessage) -> None:
            if message.type in kinds:
                problems.append(f"{message.type}: {message.text} at {message.location}")

        page.on("console", console)
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        page.on("dialog", lambda dialog: dialog.accept())
        await page.goto(f"{base}/login")
        await page.fill("input[name=token]", token)
        await page.click("button:has-text('Sign in')")
        await page.wait_for_selector("h1:has-text('Runs')")
        try:
            yield page
        finally:
            await browser.close()


async def no_sideways_scroll(page: Page) -> int:
    """How far the page is wider than its window (0: it fits, nothing scrolls sideways)."""
    return int(await page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth"))


ANSWER_WITHIN_S = 5.0


class RawStdio:
    """``mcp-orchestrator serve`` over stdio, driven line by line."""

    def __init__(self, db: str | Path, cwd: str | Path | None = None, **env: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mcp_orchestrator", "serve", "--db", str(db)],
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=server_env(**env),
        )
        self.answers: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.next_id = 1000

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.answers.put(json.loads(line))

    def send(self, line: str | bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((line.encode() if isinstance(line, str) else line) + b"\n")
        self.process.stdin.flush()

    def answer(self, request_id: Any, timeout: float = ANSWER_WITHIN_S, or_null: bool = False) -> dict[str, Any]:
        """The next answer, which must be to ``request_id`` (requests here are sent one at a time), or
        with ``or_null`` an error with id null (JSON-RPC's answer to a line whose id cannot be read)."""
        try:
            message = self.answers.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no answer to request {request_id!r} within {timeout}s") from None
        unread = or_null and message.get("id") is None and message.get("error", {}).get("code") in (-32700, -32600)
        assert message.get("id") == request_id or unread, message
        return message

    def request(
        self, method: str, params: dict[str, Any] | None = None, timeout: float = ANSWER_WITHIN_S
    ) -> dict[str, Any]:
        self.next_id += 1
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": self.next_id, "method": method}
        if params is not None:
            message["params"] = params
        self.send(json.dumps(message))
        return self.answer(self.next_id, timeout)

    def call_tool(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        return self.request("tools/call", {"name": name, "arguments": arguments})

    def initialize(self) -> RawStdio:
        client = {"name": "raw", "version": "1"}
        init = self.request(
            "initialize", {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": client}, 60
        )
        assert "result" in init, init
        self.send(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        return self

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        assert self.process.stdout is not None
        self.process.stdout.close()


# The tool names the design names a contract: clients depend on them.
CONTRACT_TOOLS = {
    "start_run",
    "spawn_subagent",
    "retry_run",
    "schedule",
    "list_schedules",
    "unschedule",
    "checkpoint",
    "finish_run",
    "cancel_run",
    "status",
    "list_runs",
    "send_event",
    "wait_for_event",
    "sleep",
    "wait_for_runs",
    "permission_prompt",
    "list_approvals",
    "decide_approval",
    "send_message",
    "read_messages",
    "set_budget",
}
