"""The PostgreSQL store itself: lost connections, concurrent writers, wake-ups and claims across
stores sharing a schema, migrations, the location shown in messages, and journal gaps."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from mcp_orchestrator.errors import SchemaTooNew, StoreError
from mcp_orchestrator.models import AgentState, Run, RunStatus, SpawnSubagentInput
from mcp_orchestrator.profiles import AgentsConfig
from mcp_orchestrator.runtime import Engine
from mcp_orchestrator.store.postgres import PostgresStore, PostgresTransaction
from mcp_orchestrator.store.postgres_schema import SCHEMA_VERSION

from .support import postgres_schema, query

pytestmark = pytest.mark.anyio


@pytest.fixture
def url(postgres_database: str) -> str:
    """A fresh schema of the session's database, for this test alone."""
    return postgres_schema(postgres_database)


async def admin(url: str, sql: str, *args: Any) -> Any:
    """One statement on a connection of its own (not the store's); its first value."""
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


async def terminate(url: str, pid: int) -> None:
    """End a backend, as a DBA or a failover would, and wait until it is gone."""
    assert await admin(url, "SELECT pg_terminate_backend($1, 5000)", pid)


async def until(check: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := await check()):
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)
    return result


def new_run(run_id: str, name: str = "task") -> Run:
    now = datetime.now(UTC)
    return Run(run_id=run_id, name=name, status=RunStatus.RUNNING, created_at=now, updated_at=now)


def count(url: str, sql: str) -> int:
    return query(url, sql)[0][0]


# Lost connections.


async def test_a_connection_lost_mid_transaction_is_retried_on_a_new_one(url: str) -> None:
    """The function runs again on another backend, and the write is made exactly once."""
    backends: list[int] = []

    def fn(tx: PostgresTransaction) -> str:
        backends.append(tx._fetchval("SELECT pg_backend_pid()"))
        tx.insert_run(new_run("r1"), events_after=0)
        if len(backends) == 1:
            tx._await(terminate(url, backends[0]))
        tx.append_journal("r1", "run_created", datetime.now(UTC))
        return "done"

    async with PostgresStore(url) as store:
        assert await store.write(fn) == "done"
    assert len(backends) == 2 and backends[0] != backends[1]
    assert count(url, "SELECT count(*) FROM runs WHERE run_id = 'r1'") == 1
    assert count(url, "SELECT count(*) FROM journal WHERE run_id = 'r1'") == 1


async def test_a_commit_cut_off_before_it_was_made_is_run_again(url: str) -> None:
    """The connection is lost while the server is still working on COMMIT: the store asks the server
    what became of the transaction (aborted) and runs the function again, once."""
    async with PostgresStore(url) as store:
        # A deferred trigger holds the first COMMIT on the server until the backend is terminated (a
        # sequence counts outside transactions: the second attempt is not held).
        await admin(url, "CREATE SEQUENCE stalls")
        await admin(
            url,
            "CREATE FUNCTION stall() RETURNS trigger LANGUAGE plpgsql "
            "AS $$ BEGIN IF nextval('stalls') = 1 THEN PERFORM pg_sleep(30); END IF; RETURN NULL; END $$",
        )
        await admin(
            url,
            "CREATE CONSTRAINT TRIGGER stall_commit AFTER INSERT ON runs DEFERRABLE INITIALLY DEFERRED "
            "FOR EACH ROW EXECUTE FUNCTION stall()",
        )
        backends: list[int] = []

        def fn(tx: PostgresTransaction) -> str:
            backends.append(tx._fetchval("SELECT pg_backend_pid()"))
            tx.insert_run(new_run("r1"), events_after=0)
            return "made"

        write = asyncio.create_task(store.write(fn))

        async def committing() -> bool:
            if not backends:
                return False
            activity = await admin(
                url, "SELECT wait_event || ' ' || query FROM pg_stat_activity WHERE pid = $1", backends[0]
            )
            return activity is not None and activity.startswith("PgSleep") and "COMMIT" in activity

        await until(committing)
        await terminate(url, backends[0])
        assert await write == "made"
    assert len(backends) == 2 and backends[0] != backends[1]  # run again, on a new connection
    assert count(url, "SELECT count(*) FROM runs") == 1


@pytest.fixture
def commit_reply_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    """The next COMMIT is made on the server, then its connection breaks before the reply is read."""
    execute = asyncpg.connection.Connection.execute
    armed = [True]

    async def commit_then_break(self: asyncpg.Connection, query: str, *args: Any, **kwargs: Any) -> str:
        status = await execute(self, query, *args, **kwargs)
        if query == "COMMIT" and armed[0]:
            armed[0] = False
            self.terminate()
            raise asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation")
        return status

    monkeypatch.setattr(asyncpg.connection.Connection, "execute", commit_then_break)


@pytest.mark.usefixtures("commit_reply_lost")
async def test_a_commit_made_whose_reply_was_lost_is_answered_as_made(url: str) -> None:
    """The server says the transaction committed: the caller gets its result, and nothing runs twice."""
    calls: list[int] = []

    def fn(tx: PostgresTransaction) -> str:
        calls.append(1)
        tx.insert_run(new_run("r1"), events_after=0)
        return "made"

    async with PostgresStore(url) as store:
        assert await store.write(fn) == "made"
    assert len(calls) == 1
    assert count(url, "SELECT count(*) FROM runs") == 1


@pytest.mark.usefixtures("commit_reply_lost")
async def test_a_commit_whose_outcome_cannot_be_learned_is_reported_as_unknown(url: str) -> None:
    """If the server cannot be asked what became of the COMMIT, the caller is told the outcome is
    unknown (repeating the write could make it twice), with the store named."""

    def fn(tx: PostgresTransaction) -> None:
        tx.insert_run(new_run("r1"), events_after=0)

    async with PostgresStore(url) as store:

        async def cannot_ask(xid: int, deadline: float) -> None:
            return None

        store._transaction_status = cannot_ask  # type: ignore[method-assign]
        with pytest.raises(StoreError, match="may or may not have been made") as failure:
            await store.write(fn)
    assert store.location in str(failure.value)
    assert count(url, "SELECT count(*) FROM runs") == 1  # it was in fact made


# Concurrent writers.


async def test_concurrent_read_modify_writes_on_two_stores_lose_no_update(url: str) -> None:
    """20 writers on two stores read one row and write it back incremented: each sees the last
    one's write (each takes the row's lock before reading it, as the row may not exist yet), so
    none is lost."""

    def increment(tx: PostgresTransaction) -> int:
        tx.lock("counter")
        value = tx.get_cursor("counter")
        tx.set_cursor("counter", value + 1)
        return value + 1

    async with PostgresStore(url) as store_a, PostgresStore(url) as store_b:
        results = await asyncio.gather(*(store.write(increment) for store in [store_a, store_b] * 10))
        assert sorted(results) == list(range(1, 21))
        assert await store_b.read(lambda tx: tx.get_cursor("counter")) == 20


async def test_a_key_inserted_meanwhile_runs_the_function_again_which_then_finds_it(url: str) -> None:
    """Two stores check for a run by key at the same moment, both find none and both insert: the
    second insert meets the first's key, and its function runs again and finds the run (the
    idempotency of start_run and send_event rests on this)."""
    both_checked = asyncio.Barrier(2)
    attempts: list[str] = []

    def create(run_id: str) -> Callable[[PostgresTransaction], tuple[str, str]]:
        def write(tx: PostgresTransaction) -> tuple[str, str]:
            attempts.append(run_id)
            existing = tx.get_run_by_key("deploy-42")
            if existing is not None:
                return "found", existing.run_id
            if attempts.count(run_id) == 1:
                tx._await(asyncio.wait_for(both_checked.wait(), 5))
            tx.insert_run(new_run(run_id).model_copy(update={"key": "deploy-42"}), events_after=0)
            return "created", run_id

        return write

    async with PostgresStore(url) as store_a, PostgresStore(url) as store_b:
        outcomes = await asyncio.gather(store_a.write(create("run-a")), store_b.write(create("run-b")))
    assert sorted(outcome for outcome, _ in outcomes) == ["created", "found"]
    assert outcomes[0][1] == outcomes[1][1]  # both answer with the one run
    assert len(attempts) == 3  # the loser ran again once
    assert count(url, "SELECT count(*) FROM runs") == 1


# Wake-ups across stores.


async def test_a_commit_on_one_store_wakes_a_waiter_on_another_promptly(url: str) -> None:
    """Store B hears store A's commit by notification; a store's own notification is not counted twice."""
    async with PostgresStore(url) as store_a, PostgresStore(url) as store_b:
        heard_by_a: list[str] = []
        on_notification = store_a._on_notification

        def spy(conn: object, pid: int, channel: str, payload: str) -> None:
            heard_by_a.append(payload)
            on_notification(conn, pid, channel, payload)

        store_a._on_notification = spy  # type: ignore[method-assign]
        for store in (store_a, store_b):  # start each listener; it wakes its waiters once when it connects
            started = time.monotonic()
            await store.wait_for_change(timeout=5, since=store.generation)
            assert time.monotonic() - started < 2

        generation_a, generation_b = store_a.generation, store_b.generation
        waiter = asyncio.create_task(store_b.wait_for_change(timeout=5, since=generation_b))
        await asyncio.sleep(0.2)
        assert not waiter.done()  # nothing happened yet
        started = time.monotonic()
        await store_a.write(lambda tx: tx.insert_run(new_run("r1"), events_after=0))
        await waiter
        assert time.monotonic() - started < 2
        assert store_b.generation == generation_b + 1
        assert store_a.generation == generation_a + 1  # its own commit, counted once so far

        # A's listener hears B's next commit after its own notification (one channel, commit order):
        # once it has, A's own notification was delivered too, and ignored.
        await store_b.write(lambda tx: tx.insert_run(new_run("r2"), events_after=0))

        async def heard_b() -> bool:
            return store_b._token in heard_by_a

        await until(heard_b)
        assert heard_by_a == [store_a._token, store_b._token]
        assert store_a.generation == generation_a + 2


async def test_a_write_marked_quiet_wakes_no_waiter_on_another_store(url: str) -> None:
    """Heartbeats are written with wake=False: a waiter elsewhere sleeps through them, and still
    wakes for the next ordinary write."""
    async with PostgresStore(url) as store_a, PostgresStore(url) as store_b:
        await store_b.wait_for_change(timeout=5, since=store_b.generation)  # the listener is up
        since = store_b.generation
        waiter = asyncio.create_task(store_b.wait_for_change(timeout=10, since=since))
        await store_a.write(lambda tx: tx.set_cursor("beat", 1), wake=False)
        await asyncio.sleep(0.5)
        assert not waiter.done()
        started = time.monotonic()
        await store_a.write(lambda tx: tx.set_cursor("beat", 2))
        await asyncio.wait_for(waiter, 5)
        assert time.monotonic() - started < 2
        assert store_b.generation == since + 1


# Claims across stores.


async def test_two_stores_claiming_at_once_take_turns_and_keep_the_limit(url: str, tmp_path: Path) -> None:
    """A claim counts what is active across every node, so claims take turns: while one store's
    claim is held open, another's waits; then it finds the limit reached. No agent is claimed twice."""
    config = AgentsConfig(max_concurrent=3)
    async with PostgresStore(url) as store_a, PostgresStore(url) as store_b:
        engine_a = Engine(store_a, workspace=str(tmp_path), agents=config)
        engine_b = Engine(store_b, workspace=str(tmp_path), agents=config)
        spawned = []
        for _ in range(6):
            args = SpawnSubagentInput(prompt="task", agent="command", command=["sleep", "1"])
            spawned.append((await engine_a.subagents.spawn(args)).run.run_id)

        picked, release = asyncio.Event(), asyncio.Event()
        claim = engine_a.subagents._claim

        def held(tx: Any, node: str | None) -> Any:
            launches = claim(tx, node)
            picked.set()
            tx._await(asyncio.wait_for(release.wait(), 5))
            return launches

        engine_a.subagents._claim = held  # type: ignore[method-assign]
        first = asyncio.create_task(engine_a.subagents.claim())
        await until(lambda: asyncio.sleep(0, picked.is_set()))
        second = asyncio.create_task(engine_b.subagents.claim())
        await asyncio.sleep(0.3)
        assert not second.done()  # waiting for the first claim to end
        release.set()
        claimed_a, claimed_b = await first, await second
    assert len(claimed_a) == 3 and set(launch.agent.run_id for launch in claimed_a) <= set(spawned)
    assert claimed_b == []  # the limit is reached
    rows = query(url, "SELECT state, count(*) FROM agents GROUP BY state ORDER BY state")
    assert rows == [(AgentState.QUEUED.value, 3), (AgentState.STARTING.value, 3)]


# Opening.


@pytest.mark.parametrize(
    "given",
    [
        "postgresql://u:secret@127.0.0.1:5432/db?search_path=s",
        "postgresql://u@127.0.0.1:5432/db?password=secret&search_path=s",
        "postgresql://u:se%40secret@127.0.0.1/db",
    ],
)
def test_the_location_hides_the_password(given: str) -> None:
    """The location is shown in messages and logs; it names the server, never the password."""
    location = PostgresStore(given).location
    assert "secret" not in location
    assert "u" in location and "127.0.0.1" in location and "/db" in location


async def test_a_newer_schema_is_refused_and_left_alone(url: str) -> None:
    """A database written by a newer version is not touched: no migration, nothing dropped."""
    async with PostgresStore(url) as store:
        await store.write(lambda tx: tx.insert_run(new_run("r1"), events_after=0))
    await admin(url, "INSERT INTO schema_version (version, applied_at) VALUES ($1, now())", SCHEMA_VERSION + 1)
    with pytest.raises(SchemaTooNew, match="upgrade mcp-orchestrator"):
        await PostgresStore(url).open()
    assert count(url, "SELECT max(version) FROM schema_version") == SCHEMA_VERSION + 1
    assert count(url, "SELECT count(*) FROM runs") == 1


async def test_a_search_path_without_an_existing_schema_says_to_create_it(postgres_database: str) -> None:
    """Tables must not land in some other schema, and the user learns what to do."""
    with pytest.raises(StoreError, match=r"no_such_schema.*create it"):
        await PostgresStore(f"{postgres_database}?search_path=no_such_schema").open()


# Journal readers and gaps.


async def test_journal_after_stops_at_an_entry_of_a_transaction_still_open(url: str) -> None:
    """A journal number is taken before commit: a reader that skipped the gap would lose that entry."""
    appended, release = asyncio.Event(), asyncio.Event()

    def slow(tx: PostgresTransaction) -> None:
        tx.append_journal("r1", "step_completed", datetime.now(UTC), step="slow")
        appended.set()
        tx._await(asyncio.wait_for(release.wait(), 5))

    def read(tx: PostgresTransaction) -> list[tuple[str, str | None]]:
        return [(entry.run_id, entry.step) for entry in tx.journal_after(0, ["step_completed"], 10)]

    async with PostgresStore(url) as store:
        await store.write(lambda tx: [tx.insert_run(new_run(run_id), events_after=0) for run_id in ("r1", "r2")])
        open_write = asyncio.create_task(store.write(slow))
        try:
            await asyncio.wait_for(appended.wait(), 5)
            await store.write(lambda tx: tx.append_journal("r2", "step_completed", datetime.now(UTC), step="fast"))
            assert await store.read(read) == []  # the later entry waits behind the gap
        finally:
            release.set()
        await open_write
        assert await store.read(read) == [("r1", "slow"), ("r2", "fast")]


async def test_journal_after_passes_a_settled_gap(url: str) -> None:
    """A gap left by a rollback stops readers only until it is old enough to be no open transaction."""

    def rolled_back(tx: PostgresTransaction) -> None:
        tx.append_journal("r1", "step_completed", datetime.now(UTC), step="undone")
        raise RuntimeError("changed my mind")

    def read(tx: PostgresTransaction) -> list[str | None]:
        return [entry.step for entry in tx.journal_after(0, ["step_completed"], 10)]

    async with PostgresStore(url) as store:
        await store.write(lambda tx: tx.insert_run(new_run("r1"), events_after=0))
        with pytest.raises(RuntimeError):
            await store.write(rolled_back)
        await store.write(lambda tx: tx.append_journal("r1", "step_completed", datetime.now(UTC), step="kept"))
        assert await store.read(read) == []
        await admin(url, "UPDATE journal SET stored_at = stored_at - $1::interval", timedelta(minutes=1))
        assert await store.read(read) == ["kept"]


async def test_a_quiet_write_that_calls_wake_notifies_the_other_stores(url: str) -> None:
    """A checkpoint is written quiet (no NOTIFY: notifying commits take turns); one that turns out to end a
    run calls tx.wake(), and a waiter on another store hears it."""
    async with PostgresStore(url) as store_a, PostgresStore(url) as store_b:
        await store_b.wait_for_change(timeout=5, since=store_b.generation)  # the listener is up
        since = store_b.wake_generation
        waiter = asyncio.create_task(store_b.wait_for_change(timeout=10, since=since, waking=True))

        def found_otherwise(tx: PostgresTransaction) -> None:
            tx.set_cursor("beat", 3)
            tx.wake()

        await store_a.write(found_otherwise, wake=False)
        await asyncio.wait_for(waiter, 5)
        assert store_b.wake_generation == since + 1
