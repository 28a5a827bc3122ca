"""A SQLite store whose file is removed or replaced under a running server: every later write (and
read) is refused with an error that says so, and no process that opens the path afterwards sees a
mix of the old store and the new file. PostgreSQL has no such files: these tests are SQLite's alone.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mcp import Client

from mcp_orchestrator.errors import StoreBusy, StoreError, StoreFileGone
from mcp_orchestrator.models import CheckpointInput, StartRunInput, StatusInput, WaitForEventInput
from mcp_orchestrator.runtime import Engine
from mcp_orchestrator.store.sqlite import SQLiteStore
from mcp_orchestrator.supervisor import FailureLog

from .support import call, stdio_server

pytestmark = pytest.mark.anyio


async def started(engine: Engine, name: str = "job") -> str:
    """A run with one acknowledged checkpoint, "one"."""
    run_id = (await engine.runs.start_run(StartRunInput(name=name))).run.run_id
    await engine.runs.checkpoint(CheckpointInput(run_id=run_id, step="one", output={"n": 1}))
    return run_id


def later_runs(db_path: Path) -> dict[str, list[str]]:
    """What a process started now sees at the path: each run's name and its steps' names."""
    script = (  # an empty store (no tables yet) is fine; a half of one is not
        "import json, sqlite3, sys\n"
        "conn = sqlite3.connect(sys.argv[1])\n"
        "assert conn.execute('PRAGMA integrity_check').fetchone() == ('ok',)\n"
        "tables = {row[0] for row in conn.execute('SELECT name FROM sqlite_master')}\n"
        "sql = 'SELECT name, step FROM runs LEFT JOIN steps USING (run_id) ORDER BY steps.rowid'\n"
        "print(json.dumps(conn.execute(sql).fetchall() if 'runs' in tables else []))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(db_path)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    seen: dict[str, list[str]] = {}
    for name, step in json.loads(done.stdout):
        seen.setdefault(name, []).extend([step] if step else [])
    return seen


async def make_backup(path: Path) -> None:
    """A complete store file at ``path`` holding one run, "backup", closed (so no -wal beside it)."""
    async with SQLiteStore(path) as store:
        await Engine(store).runs.start_run(StartRunInput(name="backup"))
    assert not Path(f"{path}-wal").exists()


async def test_a_removed_store_file_refuses_the_next_write(db_path: Path) -> None:
    async with SQLiteStore(db_path) as store:
        engine = Engine(store)
        run_id = await started(engine)
        os.remove(db_path)
        with pytest.raises(StoreError) as refused:
            await engine.runs.checkpoint(CheckpointInput(run_id=run_id, step="two", output={"n": 2}))
        assert refused.value.code == "store_error"
        assert str(refused.value).startswith(
            f"the store file {db_path} was removed or replaced while this server had it open (inode "
        )
        assert "nothing is there now" in str(refused.value)
        assert "restart the server against the file you mean to use" in str(refused.value)
        with pytest.raises(StoreError, match="was removed or replaced"):  # and every write after it
            await engine.runs.start_run(StartRunInput(name="another"))
        with pytest.raises(StoreError, match="was removed or replaced"):  # reads too: the file is not the store
            await engine.runs.status(StatusInput(run_id=run_id))
        assert later_runs(db_path) == {}  # a new, empty store: no half of the old one
    assert later_runs(db_path) == {}


async def test_a_store_file_replaced_by_another_refuses_writes_and_leaves_the_other_whole(
    db_path: Path, tmp_path: Path
) -> None:
    backup = tmp_path / "backup.db"
    await make_backup(backup)
    async with SQLiteStore(db_path) as store:
        engine = Engine(store)
        run_id = await started(engine, "live")
        os.replace(backup, db_path)  # mv backup.db store.db, with the server running
        with pytest.raises(StoreError, match=r"is no longer at that path: inode \d+ is there now"):
            await engine.runs.checkpoint(CheckpointInput(run_id=run_id, step="two", output={"n": 2}))
        # The log of the store this server had open is not applied to the file now at the path.
        assert later_runs(db_path) == {"backup": []}
    assert later_runs(db_path) == {"backup": []}
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


@pytest.mark.parametrize(("suffix", "what"), [("-wal", "write-ahead log"), ("-shm", "shared-memory index")])
async def test_a_removed_log_or_index_refuses_writes_and_keeps_what_was_acknowledged(
    db_path: Path, suffix: str, what: str
) -> None:
    async with SQLiteStore(db_path) as store:
        engine = Engine(store)
        run_id = await started(engine)
        os.remove(f"{db_path}{suffix}")
        with pytest.raises(StoreError) as refused:
            await engine.runs.checkpoint(CheckpointInput(run_id=run_id, step="two", output={"n": 2}))
        assert str(refused.value).startswith(f"the store's {what} {db_path}{suffix} was removed or replaced")
    # Closed by its last user, SQLite copies the log it still held into the database file.
    assert later_runs(db_path) == {"job": ["one"]}


async def test_a_blocked_wait_meets_the_error_soon_after_the_file_goes(db_path: Path) -> None:
    async with SQLiteStore(db_path) as store:
        engine = Engine(store)
        run_id = await started(engine)
        wait = WaitForEventInput(run_id=run_id, step="approve", event="approval", block_s=20)
        began = time.monotonic()
        task = asyncio.ensure_future(engine.events.wait_for_event(wait))
        while not any(step.step == "approve" for step in (await engine.runs.status(StatusInput(run_id=run_id))).steps):
            await asyncio.sleep(0.01)  # until the wait is registered and blocks
        os.remove(db_path)
        with pytest.raises(StoreError, match="was removed or replaced"):
            await task
        assert time.monotonic() - began < 5, "woken by the file's loss, not by block_s running out"


async def test_sqlites_own_log_maintenance_is_not_a_replacement(db_path: Path) -> None:
    async with SQLiteStore(db_path) as store:
        engine = Engine(store)
        run_id = await started(engine)
        with sqlite3.connect(db_path) as other:  # another process's checkpoint empties the log in place
            other.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert os.path.getsize(f"{db_path}-wal") == 0
        await engine.runs.checkpoint(CheckpointInput(run_id=run_id, step="two", output={"n": 2}))
        assert [s.step for s in (await engine.runs.status(StatusInput(run_id=run_id))).steps] == ["one", "two"]


@pytest.mark.processes
async def test_the_checkpoint_tool_answers_an_error_once_the_file_is_gone(db_path: Path) -> None:
    async with Client(stdio_server(db_path)) as client:
        run_id = (await call(client, "start_run", name="job"))["run"]["run_id"]
        await call(client, "checkpoint", run_id=run_id, step="one", output={"n": 1})
        os.remove(db_path)
        result = await client.call_tool("checkpoint", {"run_id": run_id, "step": "two", "output": {"n": 2}})
        assert result.is_error, result.structured_content
        text = result.content[0].text
        assert f"store_error: the store file {db_path} was removed or replaced while this server had it open" in text
        assert "restart the server against the file you mean to use" in text


async def test_a_store_opened_through_a_symbolic_link_watches_the_files_beside_its_target(tmp_path: Path) -> None:
    target = tmp_path / "real" / "store.db"
    target.parent.mkdir()
    link = tmp_path / "store.db"
    link.symlink_to(target)
    async with SQLiteStore(link) as store:
        engine = Engine(store)
        run_id = await started(engine)  # the link is not mistaken for a replaced file
        os.remove(f"{target}-wal")  # SQLite keeps its log beside the target, not the link
        with pytest.raises(StoreError, match=f"the store's write-ahead log {target}-wal was removed"):
            await engine.runs.checkpoint(CheckpointInput(run_id=run_id, step="two", output={"n": 2}))


def test_a_duty_that_keeps_failing_is_logged_once_until_it_works_again(caplog: pytest.LogCaptureFixture) -> None:
    failures = FailureLog()
    gone = StoreFileGone("the store file x was removed or replaced while this server had it open")
    with caplog.at_level(logging.WARNING, logger="mcp_orchestrator.supervisor"):
        for _ in range(100):  # a store that stays gone: every tick of every duty fails the same way
            failures.failed("supervising", gone)
            failures.failed("firing timers", gone)
        failures.failed("supervising", StoreBusy("the store is busy"))  # a new failure is news
        failures.succeeded("supervising")
        failures.succeeded("supervising")
    assert [record.getMessage().split(":")[0] for record in caplog.records] == [
        "supervising failed",
        "firing timers failed",
        "supervising failed",
        "supervising works again",
    ]
