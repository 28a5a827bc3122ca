"""The dashboard's reads (services.overview) on both stores: the run list's counts, search and nesting,
the runs an event woke, a schedule's latest firings, and the pending approvals count."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from mcp_orchestrator.errors import InvalidInput
from mcp_orchestrator.ids import prefix_range
from mcp_orchestrator.models import (
    FinishRunInput,
    ListRunsInput,
    PermissionPromptInput,
    RunStatus,
    ScheduleInput,
    SendEventInput,
    SleepInput,
    StartRunInput,
    StatusInput,
    WaitForEventInput,
    utcnow,
)
from mcp_orchestrator.permissions import ApprovalsConfig
from mcp_orchestrator.profiles import AgentsConfig
from mcp_orchestrator.runtime import Engine
from mcp_orchestrator.services.overview import ID_PREFIX_MIN
from mcp_orchestrator.services.runs import Runs
from mcp_orchestrator.services.subagents import PAUSE_STEP
from mcp_orchestrator.store import is_postgres
from mcp_orchestrator.store.base import Transaction

from .support import Clock, open_store

pytestmark = pytest.mark.anyio


@pytest.fixture
async def engine(db: str, tmp_path: Path) -> AsyncIterator[Engine]:
    """Permission requests are left pending at once (no blocking)."""
    agents = AgentsConfig(approvals=ApprovalsConfig(wait_s=0))
    async with open_store(db) as store:
        yield Engine(store, workspace=str(tmp_path), agents=agents)


async def start(engine: Engine, name: str, **fields: object) -> str:
    return (await engine.runs.start_run(StartRunInput.model_validate({"name": name, **fields}))).run.run_id


async def test_the_run_list_nests_children_under_their_parent_and_counts_them(engine: Engine) -> None:
    parent = await start(engine, "plan")
    children = [await start(engine, f"worker-{n}", parent_run_id=parent) for n in range(3)]
    grandchild = await start(engine, "helper", parent_run_id=children[0])
    alone = await start(engine, "alone")

    listed = await engine.overview.run_list(ListRunsInput(limit=50))
    assert listed.nested
    assert [row.run.run_id for row in listed.rows] == [alone, parent]  # top-level runs only, newest first
    row = listed.rows[1]
    assert row.children == 3 and [run.run_id for run in row.nested] == children[::-1]
    assert listed.rows[0].children == 0 and listed.rows[0].nested == []
    assert grandchild not in {run.run_id for row in listed.rows for run in row.nested}  # one level: its page has more

    flat = await engine.overview.run_list(ListRunsInput(status=RunStatus.RUNNING, limit=50))
    assert not flat.nested and len(flat.rows) == 6  # a status filter lists every matching run


async def test_one_search_box_finds_a_run_by_id_prefix_key_or_name(engine: Engine) -> None:
    parent = await start(engine, "plan")
    child = await start(engine, "deploy", key="deploy-2026-12", parent_run_id=parent)
    other = await start(engine, "unrelated")

    async def found(text: str) -> list[str]:
        return [row.run.run_id for row in (await engine.overview.run_list(ListRunsInput(), search=text)).rows]

    assert await found("deploy-2026-12") == [child]  # by key: a child is found, not hidden under its parent
    assert await found("unrelated") == [other]  # by name
    assert await found(child.lower()) == [child]  # a whole id (the start of one), in any case
    assert child in await found(child[:20])
    # Started together, their ids' time is alike: the characters all three share.
    shared = "".join(
        chars[0] for chars in itertools.takewhile(lambda c: len(set(c)) == 1, zip(parent, child, other, strict=True))
    )
    assert len(shared) >= ID_PREFIX_MIN
    assert await found(shared[:ID_PREFIX_MIN].lower()) == [other, child, parent]  # the shortest start taken
    assert await found(shared[: ID_PREFIX_MIN - 1]) == []  # shorter: a year of runs, not taken as ids' start
    assert await found("no-such-thing") == []
    with pytest.raises(InvalidInput, match="at most 200 characters"):
        await found("x" * 201)


async def test_a_search_or_a_filter_with_nul_or_a_lone_surrogate_says_what_to_fix(engine: Engine) -> None:
    """PostgreSQL refuses a NUL in text, SQLite takes it: both answer the same specific error."""
    await start(engine, "plan")
    for text in ("a\x00b", "\x00", "bad \ud800"):
        with pytest.raises(InvalidInput, match="the search holds"):
            await engine.overview.run_list(ListRunsInput(), search=text)


async def test_a_filter_lists_matching_children_as_rows_of_their_own(engine: Engine) -> None:
    parent = await start(engine, "plan", labels={"team": "infra"}, workspace="/repo")
    worker = await start(engine, "worker-1", parent_run_id=parent, labels={"team": "infra"})
    await start(engine, "worker-2", parent_run_id=parent)

    async def rows(**fields: object) -> tuple[bool, list[str]]:
        listed = await engine.overview.run_list(ListRunsInput.model_validate({"limit": 50, **fields}))
        return listed.nested, [row.run.run_id for row in listed.rows]

    assert await rows(name="worker-1") == (False, [worker])  # a child's name: the child, not "No runs."
    assert await rows(label="team=infra") == (False, [worker, parent])
    assert (await rows())[0] and (await rows(cursor=worker))[0]  # the cursor alone pages the nested list


async def test_a_childs_pending_approval_shows_on_its_parents_row(engine: Engine) -> None:
    parent = await start(engine, "plan")
    asking = await start(engine, "sub-agent", parent_run_id=parent)
    quiet = await start(engine, "quiet", parent_run_id=parent)
    for command in ("rm -rf build", "npm publish"):
        await engine.approvals.request(
            PermissionPromptInput(tool_name="Bash", input={"command": command}, run_id=asking)
        )
    (row,) = (await engine.overview.run_list(ListRunsInput())).rows
    assert row.run.run_id == parent and row.approvals == 0
    assert row.nested_approvals == {asking: 2} and row.approvals_total == 2
    assert quiet in {run.run_id for run in row.nested}


async def test_an_event_links_the_runs_its_cancel_trigger_ended(engine: Engine) -> None:
    doomed = (
        await engine.runs.start_run(StartRunInput.model_validate({"name": "deploy", "cancel_on": [{"event": "abort"}]}))
    ).run.run_id
    below = await start(engine, "step", parent_run_id=doomed)
    await start(engine, "bystander")
    await engine.events.send_event(SendEventInput(name="abort"))
    await engine.events.send_event(SendEventInput(name="abort"))  # nothing left to cancel
    second, first = await engine.overview.events(10)
    assert first.cancelled_run_ids == [doomed] and second.cancelled_run_ids == []  # its child went with it
    assert (await engine.runs.status(StatusInput(run_id=below))).run.status == RunStatus.CANCELLED


async def test_the_counts_say_running_waiting_paused_and_recently_failed(engine: Engine) -> None:
    await start(engine, "busy")
    waiting = await start(engine, "waits")
    await engine.events.wait_for_event(WaitForEventInput(run_id=waiting, step="go", event="go", block_s=0))
    failed = await start(engine, "breaks")
    await engine.runs.finish_run(FinishRunInput(run_id=failed, error={"message": "boom"}))
    paused = await start(engine, "limited")  # a pause at a usage limit is a sleep on a step of its own
    await engine.events.sleep(SleepInput(run_id=paused, step=f"{PAUSE_STEP}1", seconds=600, block_s=0))
    await engine.events.sleep(SleepInput(run_id=waiting, step="nap", seconds=600, block_s=0))

    counts = (await engine.overview.run_list(ListRunsInput())).counts
    assert (counts.running, counts.waiting, counts.paused, counts.failed) == (1, 1, 1, 1)

    later = Engine(engine.store, clock=lambda: utcnow() + timedelta(days=1, minutes=1))
    assert (await later.overview.run_list(ListRunsInput())).counts.failed == 0  # failed more than a day ago


async def test_an_event_links_the_runs_it_woke(engine: Engine) -> None:
    first, second = await start(engine, "a"), await start(engine, "b")
    for run_id in (first, second):
        await engine.events.wait_for_event(WaitForEventInput(run_id=run_id, step="ci", event="ci.done", block_s=0))
    sent = await engine.events.send_event(SendEventInput(name="ci.done", data={"ok": True}), source="dashboard")
    await engine.events.send_event(SendEventInput(name="nobody.listens"))

    rows = await engine.overview.events(10)
    assert [row.event.name for row in rows] == ["nobody.listens", "ci.done"]
    assert rows[0].woken_run_ids == []
    assert sorted(rows[1].woken_run_ids) == sorted([first, second]) == sorted(sent.woken_run_ids)
    assert rows[1].event.source == "dashboard"


async def test_pending_approvals_are_counted_overall_and_per_run(engine: Engine) -> None:
    asking = await start(engine, "agent")
    await start(engine, "quiet")
    assert await engine.overview.approvals_waiting() == 0
    for command in ("rm -rf build", "npm publish"):
        await engine.approvals.request(
            PermissionPromptInput(tool_name="Bash", input={"command": command}, run_id=asking)
        )
    assert await engine.overview.approvals_waiting() == 2
    rows = (await engine.overview.run_list(ListRunsInput())).rows
    assert {row.run.run_id: row.approvals for row in rows}[asking] == 2


async def test_the_search_walks_each_index_in_order_and_stops_at_a_page(db: str) -> None:
    """On a store of many runs sharing a name, the search reads a page of each alternative in index order:
    no OR of indexes, no sort of every match (SQLite's plan; PostgreSQL is given the same statement)."""
    if is_postgres(db):
        pytest.skip("the plan checked is SQLite's")
    async with open_store(db) as store:
        engine = Engine(store, workspace="/w")
        for n in range(300):
            await start(engine, "worker-1" if n % 3 else "other")
        newest = (await engine.overview.run_list(ListRunsInput(limit=5), search="worker-1")).rows
        assert len(newest) == 5 and all(row.run.name == "worker-1" for row in newest)

        def plan(tx: Transaction) -> list[str]:
            seen: list[tuple[str, Any]] = []
            read = tx._all  # type: ignore[attr-defined]
            tx._all = lambda sql, args=(): seen.append((sql, args)) or read(sql, args)  # type: ignore[attr-defined]
            query = Runs.filter_of(ListRunsInput(limit=50)).model_copy(
                update={"search_text": "worker-1", "search_ids": prefix_range(newest[0].run.run_id[:4])}
            )
            tx.list_runs(query)
            sql, args = seen[0]
            return [row[3] for row in read(f"EXPLAIN QUERY PLAN {sql}", args)]

        steps = await store.read(plan)
        assert not any("MULTI-INDEX OR" in step or "FOR ORDER BY" in step for step in steps), steps
        assert any("runs_by_name (name=?)" in step for step in steps), steps


async def test_a_schedule_shows_its_latest_firings(db: str, tmp_path: Path) -> None:
    clock = Clock()
    async with open_store(db) as store:
        engine = Engine(store, workspace=str(tmp_path), clock=clock)
        action = {"type": "send_event", "name": "nightly", "data": {"full": True}}
        await engine.schedules.schedule(ScheduleInput.model_validate({"name": "beat", "every_s": 10, "action": action}))
        for _ in range(3):
            clock.advance(10)
            assert await engine.schedules.fire_due(grace_s=30) == 1
        (row,) = await engine.overview.schedules_with_firings()
        assert row.schedule.name == "beat" and len(row.firings) == 3
        assert [firing.due_at for firing in row.firings] == sorted((f.due_at for f in row.firings), reverse=True)
        assert all(firing.outcome == "sent" and firing.event_id for firing in row.firings)
        assert row.schedule.upcoming and row.schedule.upcoming[0] > clock()


async def test_the_run_list_and_a_runs_tree_read_a_bounded_number_of_statements(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However many parents a page holds, their children are one read; a tree is one read a level."""
    statements: list[str] = []
    kind = await engine.store.read(lambda tx: type(tx))
    read = kind._all
    monkeypatch.setattr(kind, "_all", lambda tx, sql, args=(): statements.append(sql) or read(tx, sql, args))

    async def family(name: str, width: int, depth: int) -> str:
        root = await start(engine, name)
        level = [root]
        for _ in range(depth):
            level = [await start(engine, "w", parent_run_id=parent) for parent in level for _ in range(width)]
        return root

    async def listing() -> int:
        statements.clear()
        await engine.overview.run_list(ListRunsInput(limit=50))
        return len(statements)

    await family("plan-0", 2, 1)
    one = await listing()
    for n in range(1, 8):
        await family(f"plan-{n}", 3, 1)
    assert await listing() == one

    root = await family("deep", 3, 4)  # 3 + 9 + 27 + 81 runs below, four levels
    status = await engine.runs.status(StatusInput(run_id=root))
    statements.clear()
    below, cut = await engine.runs.tree_below(status.children)
    assert len(below) == 120 and not cut and len(statements) <= 4  # a read a level below the first
