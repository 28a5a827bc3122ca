"""The store's side of sub-agents' spending, activity and messages, on both stores: budgets and usage in
run documents, the activity timeline (upserts by ref, paging, trimming), messages, ancestors, retention,
and a database of the previous schema version gaining it all."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mcp_orchestrator.models import Activity, Budget, Message, Run, RunFilter, RunStatus, Usage
from mcp_orchestrator.store import Store, Transaction, is_postgres

from .support import open_store, query, run_sync

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
async def store(db: str) -> AsyncIterator[Store]:
    async with open_store(db) as opened:
        yield opened


def new_run(run_id: str, parent: str | None = None, **fields: Any) -> Run:
    return Run(
        run_id=run_id,
        name="task",
        status=RunStatus.RUNNING,
        parent_run_id=parent,
        created_at=T0,
        updated_at=T0,
        **fields,
    )


async def insert_runs(store: Store, *runs: Run) -> None:
    def insert(tx: Transaction) -> None:
        for run in runs:
            tx.insert_run(run, events_after=0)

    await store.write(insert)


def entry(summary: str, *, ref: str | None = None, kind: str = "note", minute: int = 0, **fields: Any) -> Activity:
    return Activity.model_validate(
        {"at": T0 + timedelta(minutes=minute), "kind": kind, "summary": summary, "ref": ref, **fields}
    )


def message(message_id: str, run_id: str, status: str = "queued", minute: int = 0) -> Message:
    return Message.model_validate(
        {
            "message_id": message_id,
            "run_id": run_id,
            "text": f"hello {message_id}",
            "source": "tool",
            "status": status,
            "queued_at": T0 + timedelta(minutes=minute),
        }
    )


def summaries(entries: list[Activity]) -> list[str]:
    return [item.summary for item in entries]


# Budgets and spending in run documents.


async def test_run_documents_carry_budget_usage_and_tree_usage(store: Store) -> None:
    budget = Budget(max_budget_usd=5.0, max_turns=40)
    await insert_runs(store, new_run("p", budget=budget), new_run("c", parent="p"))

    def every_document(tx: Transaction) -> list[Run]:
        lean, full = tx.get_run("p", payloads=False), tx.get_run("p")
        assert lean is not None and full is not None
        peeked = [run for run in tx.peek_runs(["p"]) if run is not None]
        return [lean, full, *peeked, *tx.list_runs(RunFilter(name="task")), *tx.list_children("p")]

    documents = await store.read(every_document)
    parent = [run for run in documents if run.run_id == "p"]
    assert len(parent) == 4 and all(run.budget == budget and run.usage is run.tree_usage is None for run in parent)
    assert [(run.budget, run.usage) for run in documents if run.run_id == "c"] == [(None, None)] * 2

    own = Usage(cost_usd=0.25, input_tokens=100, output_tokens=20, turns=2, model="m")
    tree = own.plus(Usage(cost_usd=1.5, turns=3))
    await store.write(lambda tx: tx.set_run_usage("p", own, tree))
    await store.write(lambda tx: tx.set_run_budget("p", Budget(max_budget_usd=9.5)))
    for run in await store.read(lambda tx: [tx.get_run("p"), tx.get_run("p", payloads=False)]):
        assert run is not None
        assert (run.usage, run.tree_usage, run.budget) == (own, tree, Budget(max_budget_usd=9.5))

    def clear(tx: Transaction) -> None:
        tx.set_run_usage("p", None, None)
        tx.set_run_budget("p", None)

    await store.write(clear)
    run = await store.read(lambda tx: tx.get_run("p"))
    assert run is not None and run.usage is run.tree_usage is run.budget is None


async def test_a_run_inserted_with_spending_keeps_it(store: Store) -> None:
    usage = Usage(cost_usd=0.5, turns=1)
    await insert_runs(store, new_run("r", usage=usage, tree_usage=usage))
    run = await store.read(lambda tx: tx.get_run("r"))
    assert run is not None and (run.usage, run.tree_usage, run.budget) == (usage, usage, None)


async def test_ancestors_come_nearest_first(store: Store) -> None:
    await insert_runs(store, new_run("a"), new_run("b", parent="a"), new_run("c", parent="b"), new_run("d", parent="c"))
    assert await store.read(lambda tx: tx.ancestor_ids("d")) == ["c", "b", "a"]
    assert await store.read(lambda tx: tx.ancestor_ids("b")) == ["a"]
    assert await store.read(lambda tx: tx.ancestor_ids("a")) == []
    assert await store.read(lambda tx: tx.ancestor_ids("nobody")) == []


# The activity timeline.


async def test_activity_round_trips_and_a_known_ref_is_replaced_in_place(store: Store) -> None:
    await insert_runs(store, new_run("r"), new_run("other"))
    call = entry("Bash: make test", ref="tool-1", kind="tool", minute=1, attempt=2, tool="Bash")
    await store.write(
        lambda tx: tx.append_activity("r", [entry("thinking", kind="turn", attempt=2), call, entry("said", minute=2)])
    )
    await store.write(lambda tx: tx.append_activity("other", [entry("elsewhere", ref="tool-1")]))
    before = await store.read(lambda tx: tx.read_activity("r", 10))
    assert summaries(before) == ["thinking", "Bash: make test", "said"]
    assert before[0].seq < before[1].seq < before[2].seq
    stored_call = before[1]
    assert stored_call.model_dump(exclude={"seq"}) == call.model_dump(exclude={"seq"})

    result = entry(
        "Bash: make test (failed)",
        ref="tool-1",
        kind="tool",
        minute=5,
        attempt=2,
        tool="Bash",
        failed=True,
        duration_ms=40,
    )
    await store.write(lambda tx: tx.append_activity("r", [result, entry("after", minute=6)]))
    after = await store.read(lambda tx: tx.read_activity("r", 10))
    assert summaries(after) == ["thinking", "Bash: make test (failed)", "said", "after"]
    replaced = after[1]
    assert (replaced.seq, replaced.at) == (stored_call.seq, stored_call.at)  # its place and its time kept
    assert (replaced.failed, replaced.duration_ms, replaced.ref) == (True, 40, "tool-1")
    assert summaries(await store.read(lambda tx: tx.read_activity("other", 10))) == ["elsewhere"]


async def test_entries_without_a_ref_are_all_kept(store: Store) -> None:
    await insert_runs(store, new_run("r"))
    await store.write(lambda tx: tx.append_activity("r", [entry("same"), entry("same")]))
    await store.write(lambda tx: tx.append_activity("r", []))
    assert summaries(await store.read(lambda tx: tx.read_activity("r", 10))) == ["same", "same"]


async def test_a_ref_twice_in_one_batch_ends_as_the_second(store: Store) -> None:
    await insert_runs(store, new_run("r"))
    await store.write(lambda tx: tx.append_activity("r", [entry("call", ref="x"), entry("result", ref="x")]))
    assert summaries(await store.read(lambda tx: tx.read_activity("r", 10))) == ["result"]


async def test_activity_pages_back_and_forth(store: Store) -> None:
    await insert_runs(store, new_run("r"))
    await store.write(lambda tx: tx.append_activity("r", [entry(str(n), minute=n) for n in range(10)]))
    latest = await store.read(lambda tx: tx.read_activity("r", 3))
    assert summaries(latest) == ["7", "8", "9"]
    earlier = await store.read(lambda tx: tx.read_activity("r", 3, before_seq=latest[0].seq))
    assert summaries(earlier) == ["4", "5", "6"]
    first = await store.read(lambda tx: tx.read_activity("r", 5, before_seq=earlier[0].seq))
    assert summaries(first) == ["0", "1", "2", "3"]

    everything = await store.read(lambda tx: tx.read_activity("r", 100))
    onward = await store.read(lambda tx: tx.read_activity("r", 4, after_seq=everything[2].seq))
    assert summaries(onward) == ["3", "4", "5", "6"]
    assert await store.read(lambda tx: tx.read_activity("r", 4, after_seq=everything[-1].seq)) == []
    from_start = await store.read(lambda tx: tx.read_activity("r", 2, after_seq=0))
    assert summaries(from_start) == ["0", "1"]
    between = await store.read(
        lambda tx: tx.read_activity("r", 10, after_seq=everything[2].seq, before_seq=everything[5].seq)
    )
    assert summaries(between) == ["3", "4"]


async def test_trimming_keeps_the_newest_and_counts_the_rest(store: Store) -> None:
    await insert_runs(store, new_run("r"), new_run("other"))
    await store.write(lambda tx: tx.append_activity("r", [entry(str(n)) for n in range(6)]))
    await store.write(lambda tx: tx.append_activity("other", [entry("kept")]))
    assert await store.write(lambda tx: tx.trim_activity("r", 10)) == 0
    assert await store.write(lambda tx: tx.trim_activity("r", 6)) == 0
    assert await store.write(lambda tx: tx.trim_activity("r", 4)) == 2
    assert summaries(await store.read(lambda tx: tx.read_activity("r", 10))) == ["2", "3", "4", "5"]
    assert await store.write(lambda tx: tx.trim_activity("r", 4)) == 0
    assert await store.write(lambda tx: tx.trim_activity("r", 1)) == 3
    assert summaries(await store.read(lambda tx: tx.read_activity("r", 10))) == ["5"]
    assert await store.write(lambda tx: tx.trim_activity("nobody", 0)) == 0
    assert summaries(await store.read(lambda tx: tx.read_activity("other", 10))) == ["kept"]


# Messages.


async def test_messages_round_trip_and_filter_by_run_and_status(store: Store) -> None:
    await insert_runs(store, new_run("a"), new_run("b"), new_run("c"))
    sent = [message("m1", "a"), message("m2", "b", minute=1), message("m3", "a", minute=2), message("m4", "c")]

    def send(tx: Transaction) -> None:
        for item in sent:
            tx.insert_message(item)

    await store.write(send)

    assert await ids_of(store, ["a", "b"], ["queued"]) == ["m1", "m2", "m3"]
    assert await ids_of(store, ["a", "b"], ["queued"], limit=2) == ["m1", "m2"]
    assert await ids_of(store, ["c"], ["queued", "delivered"]) == ["m4"]
    assert await ids_of(store, [], ["queued"]) == []
    assert await ids_of(store, ["a"], []) == []

    delivered = sent[0].model_copy(update={"status": "delivered", "delivered_at": T0, "attempt": 1, "how": "live"})
    await store.write(lambda tx: tx.save_message(delivered))
    assert await ids_of(store, ["a", "b"], ["queued"]) == ["m2", "m3"]
    assert await ids_of(store, ["a"], ["delivered", "dropped"]) == ["m1"]
    assert await store.read(lambda tx: tx.messages_of(["a"], ["delivered"], 10)) == [delivered]


async def ids_of(store: Store, run_ids: list[str], statuses: list[Any], limit: int = 10) -> list[str]:
    found = await store.read(lambda tx: tx.messages_of(run_ids, statuses, limit))
    return [item.message_id for item in found]


# Retention.


async def test_deleting_a_run_removes_its_activity_and_messages(store: Store, db: str) -> None:
    await insert_runs(store, new_run("gone"), new_run("kept"))

    def fill(tx: Transaction) -> None:
        for run_id in ("gone", "kept"):
            tx.append_activity(run_id, [entry("x", ref="r"), entry("y")])
            tx.insert_message(message(f"m-{run_id}", run_id))

    await store.write(fill)
    await store.write(lambda tx: tx.delete_runs(["gone"]))
    assert query(db, "SELECT run_id, count(*) FROM activity GROUP BY run_id") == [("kept", 2)]
    assert query(db, "SELECT run_id FROM messages") == [("kept",)]


# Migration from the previous schema version.


async def test_a_database_of_the_previous_version_gains_the_new_columns_and_tables(db: str) -> None:
    create_at_previous_version(db)
    async with open_store(db) as store:
        run = await store.read(lambda tx: tx.get_run("old"))
        assert run is not None and run.usage is run.tree_usage is run.budget is None
        assert run.retry.max_attempts == 3
        await store.write(lambda tx: tx.append_activity("old", [entry("now")]))
        await store.write(lambda tx: tx.insert_message(message("m", "old")))
        await store.write(lambda tx: tx.set_run_budget("old", Budget(max_turns=3)))
        assert summaries(await store.read(lambda tx: tx.read_activity("old", 5))) == ["now"]
        assert len(await store.read(lambda tx: tx.messages_of(["old"], ["queued"], 5))) == 1
        run = await store.read(lambda tx: tx.get_run("old"))
        assert run is not None and run.budget == Budget(max_turns=3)


def create_at_previous_version(db: str) -> None:
    """The store's database as the release before this schema left it, with one run."""
    run = (
        "INSERT INTO runs (run_id, name, status, retry, created_at) "
        "VALUES ('old', 'old', 'running', '{\"max_attempts\": 3}', '2026-01-01T00:00:00.000000+00:00')"
    )
    if not is_postgres(db):
        from mcp_orchestrator.store.sqlite_schema import MIGRATIONS

        with sqlite3.connect(db) as conn:
            conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
            for number, statements in enumerate(MIGRATIONS[:-1], 1):
                for statement in statements:
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version VALUES (?, 'then')", (number,))
            conn.execute(run)
        conn.close()  # the context manager commits, it does not close
        return

    import asyncpg

    from mcp_orchestrator.store.postgres_schema import CREATE_VERSION_TABLE
    from mcp_orchestrator.store.postgres_schema import MIGRATIONS as PG_MIGRATIONS

    async def create() -> None:
        conn = await asyncpg.connect(db)
        try:
            await conn.execute(CREATE_VERSION_TABLE)
            for number, statements in enumerate(PG_MIGRATIONS[:-1], 1):
                for statement in statements:
                    await conn.execute(statement)
                await conn.execute("INSERT INTO schema_version VALUES ($1, now())", number)
            await conn.execute(run)
        finally:
            await conn.close()

    run_sync(create())
