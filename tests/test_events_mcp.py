"""Events and waits the way clients use them: server processes over stdio, the CLI, SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import anyio
import pytest
from mcp import Client

from .support import call, cli, eventually, query, server_pids, stdio_server

pytestmark = [pytest.mark.anyio, pytest.mark.processes]


def run_status(db: str, run_id: str) -> dict[str, Any]:
    return json.loads(cli(db, "status", run_id, "--json").stdout)


async def test_wait_in_one_server_wakes_on_sends_from_another_and_from_the_cli(db: str) -> None:
    async with Client(stdio_server(db)) as waiter, Client(stdio_server(db)) as sender:
        run_id = (await call(waiter, "start_run", name="review"))["run"]["run_id"]
        results: dict[str, Any] = {}
        progress: list[tuple[float, float | None, str | None]] = []

        async def wait_for(step: str, event: str, extra: dict[str, Any] | None = None) -> None:
            async def on_progress(done: float, total: float | None, message: str | None) -> None:
                progress.append((done, total, message))

            started = time.monotonic()
            result = await waiter.call_tool(
                "wait_for_event",
                {"run_id": run_id, "step": step, "event": event, "block_s": 20, **(extra or {})},
                progress_callback=on_progress,
            )
            results[step] = (result.structured_content, time.monotonic() - started)

        async with anyio.create_task_group() as group:
            group.start_soon(wait_for, "approve", "approval", {"match": {"data.pr": 42}})
            await eventually(lambda: progress)  # one progress report: the wait is registered and blocks
            miss = await call(sender, "send_event", name="approval", data={"pr": 7})
            assert miss["woken_run_ids"] == []
            hit = await call(sender, "send_event", name="approval", data={"pr": 42}, id="gh-delivery-1")
            assert hit["woken_run_ids"] == [run_id]
        approved, took = results["approve"]
        assert approved["status"] == "received" and approved["event"]["event_id"] == "gh-delivery-1"
        assert took < 10
        assert progress and "approval" in (progress[0][2] or "")

        async with anyio.create_task_group() as group:
            group.start_soon(wait_for, "deploy", "deployed")
            await eventually(lambda: anyio.to_thread.run_sync(waiting_on, db, run_id, "deploy"))
            sent = await anyio.to_thread.run_sync(
                lambda: cli(db, "send-event", "deployed", "--data", '{"env": "prod"}', "--json")
            )
            assert json.loads(sent.stdout)["woken_run_ids"] == [run_id]
        deployed, _ = results["deploy"]
        assert deployed["event"]["data"] == {"env": "prod"} and deployed["event"]["source"] == "cli"

        again = await call(waiter, "wait_for_event", run_id=run_id, step="approve", event="approval")
        assert again == approved, "a received wait is memoized"
        duplicate = await call(sender, "send_event", name="approval", data={"pr": 42}, id="gh-delivery-1")
        assert duplicate["deduplicated"] is True


async def test_a_wait_survives_a_sigkilled_server(db: str) -> None:
    async with Client(stdio_server(db)) as client:
        run_id = (await call(client, "start_run", name="patient"))["run"]["run_id"]
        (pid,) = server_pids(db)

        async def kill_soon() -> None:
            await eventually(lambda: anyio.to_thread.run_sync(waiting_on, db, run_id, "approve"))  # it blocks
            os.kill(pid, signal.SIGKILL)

        with pytest.raises(Exception):  # noqa: B017  (the transport reports the dead server)
            async with anyio.create_task_group() as group:
                group.start_soon(kill_soon)
                await client.call_tool(
                    "wait_for_event", {"run_id": run_id, "step": "approve", "event": "approval", "block_s": 30}
                )

    status = run_status(db, run_id)
    assert status["run"]["status"] == "waiting"
    assert [w["step"] for w in status["waits"]] == ["approve"]
    table = cli(db, "status", run_id).stdout
    assert "WAIT" in table and "approval" in table and "waiting" in table
    cli(db, "send-event", "approval", "--data", '{"by": "bob"}')  # while no server runs
    async with Client(stdio_server(db)) as client:
        result = await call(client, "wait_for_event", run_id=run_id, step="approve", event="approval")
    assert result["status"] == "received" and result["event"]["data"] == {"by": "bob"}


async def test_a_client_that_gives_up_mid_wait_loses_nothing(db: str) -> None:
    async with Client(stdio_server(db)) as client:
        run_id = (await call(client, "start_run", name="impatient"))["run"]["run_id"]
        with anyio.move_on_after(0.5):  # the client cancels its call (as on a timeout or Esc)
            await client.call_tool("wait_for_event", {"run_id": run_id, "step": "s", "event": "done", "block_s": 30})
        cli(db, "send-event", "done", "--data", "1")
        result = await call(client, "wait_for_event", run_id=run_id, step="s", event="done")
        assert result["status"] == "received" and result["event"]["data"] == 1
        assert (await call(client, "status", run_id=run_id))["run"]["status"] == "running"


async def test_timeouts_and_sleeps_fire_with_no_client_calling(db: str) -> None:
    async with Client(stdio_server(db)) as client:
        run_id = (await call(client, "start_run", name="timers"))["run"]["run_id"]
        pending = await call(client, "wait_for_event", run_id=run_id, step="w", event="never", timeout_s=1, block_s=0)
        assert pending["status"] == "waiting" and pending["timeout_at"]
        asleep = await call(client, "sleep", run_id=run_id, step="nap", seconds=1, block_s=0)
        assert asleep["status"] == "sleeping"

        def fired() -> bool:  # read straight from the store: only the server's own timer can fire them
            steps = {s["step"]: s for s in run_status_without_firing(db, run_id)}
            return steps["w"]["status"] == "completed" and steps["nap"]["status"] == "completed"

        await eventually(fired, timeout=10)
        assert (await call(client, "wait_for_event", run_id=run_id, step="w", event="never"))["status"] == "timed_out"
        assert (await call(client, "sleep", run_id=run_id, step="nap", seconds=1))["status"] == "done"


def waiting_on(db: str, run_id: str, step: str) -> bool:
    """Whether the run's ``step`` is a registered wait, read straight from the store: a call that wrote
    it is blocked on it."""
    return bool(query(db, f"SELECT 1 FROM waits WHERE run_id = '{run_id}' AND step = '{step}'"))


def run_status_without_firing(db: str, run_id: str) -> list[dict[str, Any]]:
    rows = query(db, f"SELECT step, status FROM steps WHERE run_id = '{run_id}'")
    return [{"step": step, "status": status} for step, status in rows]


async def test_a_timeout_that_came_due_while_no_server_ran_is_honoured(db: str) -> None:
    async with Client(stdio_server(db)) as client:
        run_id = (await call(client, "start_run", name="offline"))["run"]["run_id"]
        await call(client, "wait_for_event", run_id=run_id, step="w", event="never", timeout_s=0.5, block_s=0)
    await anyio.sleep(1)
    status = run_status(db, run_id)  # reading the run fires what is due
    assert [s["output"] for s in status["steps"]] == [{"status": "timed_out"}]
    assert status["run"]["status"] == "running" and status["waits"] == []


async def test_cancel_on_and_any_of_across_servers(db: str) -> None:
    async with Client(stdio_server(db)) as one, Client(stdio_server(db)) as two:
        bot = await call(one, "start_run", name="pr-bot", cancel_on=[{"event": "pr.closed", "match": {"data.pr": 42}}])
        bot_id = bot["run"]["run_id"]
        child_id = (await call(one, "start_run", name="reviewer", parent_run_id=bot_id))["run"]["run_id"]
        verdict_run = (await call(one, "start_run", name="verdict"))["run"]["run_id"]
        pending = await call(
            one, "wait_for_event", run_id=verdict_run, step="v", event=["approved", "rejected"], block_s=0
        )
        assert pending["status"] == "waiting"

        rejected = await call(two, "send_event", name="rejected", data={"why": "flaky"})
        assert rejected["woken_run_ids"] == [verdict_run]
        other_pr = await call(two, "send_event", name="pr.closed", data={"pr": 41})
        assert other_pr["cancelled_run_ids"] == []
        closed = await call(two, "send_event", name="pr.closed", data={"pr": 42})
        assert sorted(closed["cancelled_run_ids"]) == sorted([bot_id, child_id])

        verdict = await call(one, "wait_for_event", run_id=verdict_run, step="v", event=["approved", "rejected"])
        assert verdict["event"]["name"] == "rejected"
        assert (await call(one, "status", run_id=child_id))["run"]["status"] == "cancelled"


async def test_fan_in_over_two_servers(db: str) -> None:
    async with Client(stdio_server(db)) as planner, Client(stdio_server(db)) as workers:
        parent = (await call(planner, "start_run", name="planner"))["run"]["run_id"]
        children = [
            (await call(workers, "start_run", name=f"worker-{i}", parent_run_id=parent))["run"]["run_id"]
            for i in range(4)
        ]
        results: dict[str, Any] = {}

        async def collect() -> None:
            results["fan_in"] = await call(
                planner, "wait_for_runs", run_ids=children, run_id=parent, step="collect", block_s=20
            )

        async with anyio.create_task_group() as group:
            group.start_soon(collect)
            for i, child in enumerate(children):
                await anyio.sleep(0.1)
                await call(workers, "finish_run", run_id=child, output={"part": i})
        fan_in = results["fan_in"]
        assert fan_in["status"] == "done"
        assert [r["output"] for r in fan_in["runs"]] == [{"part": i} for i in range(4)]
        status = await call(planner, "status", run_id=parent)
        assert [s["kind"] for s in status["steps"]] == ["runs"] and status["run"]["status"] == "running"
