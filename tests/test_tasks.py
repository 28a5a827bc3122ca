"""The MCP tasks extension: long calls answered as tasks to clients that declare it, polled with
tasks/get from any server process on the store, after a SIGKILL; everyone else keeps blocking calls."""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, MCPError
from mcp.types import CallToolResult

from mcp_orchestrator.config import Settings
from mcp_orchestrator.server import build_server

from .subagent_helpers import write_config
from .support import call, cli, eventually, http_client, http_token, query, server_pids, stdio_server
from .tasks_client import TaskHandle, TasksClient, TaskState, handle, task_request

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def in_process(db: str, **client: Any) -> AsyncIterator[Client]:
    async with Client(build_server(Settings.load(db=db, config=None)), **client) as connected:
        yield connected


async def new_run(client: Client) -> str:
    return str((await call(client, "start_run", name="tasks"))["run"]["run_id"])


def task_rows(db: str) -> list[dict[str, Any]]:
    rows = query(db, "SELECT doc FROM tasks ORDER BY task_id")
    return [json.loads(doc) if isinstance(doc, str) else doc for (doc,) in rows]


async def test_a_declared_wait_becomes_a_task_that_ends_with_the_tools_own_answer(db: str) -> None:
    async with in_process(db, extensions=[TasksClient()]) as client:
        run_id = await new_run(client)
        task = await handle(client, "wait_for_event", run_id=run_id, step="approve", event="approved", block_s=30)
        assert isinstance(task, TaskHandle), task
        assert task.status == "working" and task.ttl_ms is None and task.poll_interval_ms == 1000
        assert re.fullmatch(r"task-[0-9a-f]{32}", task.task_id)  # unguessable: 128 random bits
        assert task.status_message == "wait_for_event: waiting"
        # Durable before it was handed out: the store has it, and the run's wait is registered.
        assert [(row["task_id"], row["tool"], row["arguments"]["block_s"]) for row in task_rows(db)] == [
            (task.task_id, "wait_for_event", 0)
        ]
        state = await task_request(client, "tasks/get", task.task_id)
        assert isinstance(state, TaskState) and state.status == "working" and state.result is None
        assert state.result_type == "complete"

        await call(client, "send_event", name="approved", data={"by": "ana"})
        done = await task_request(client, "tasks/get", task.task_id)
        assert isinstance(done, TaskState) and done.status == "completed", done
        assert done.last_updated_at > done.created_at
        result = CallToolResult.model_validate(done.result)
        assert not result.is_error and result.structured_content is not None
        assert result.structured_content["status"] == "received"
        assert result.structured_content["event"]["data"] == {"by": "ana"}
        assert json.loads(result.content[0].text) == result.structured_content  # type: ignore[union-attr]
        again = await task_request(client, "tasks/get", task.task_id)  # stays completed, the same answer
        assert isinstance(again, TaskState) and again.status == "completed" and again.result == done.result

        # A wait that has ended already is answered at once: the server makes a task only when it helps.
        direct = await handle(client, "wait_for_event", run_id=run_id, step="approve", event="approved")
        assert isinstance(direct, CallToolResult) and direct.structured_content is not None
        assert direct.structured_content["status"] == "received" and len(task_rows(db)) == 1

        # A client that resolves tasks itself sees only the final answer, as if the call had blocked.
        resolver = TasksClient()
        async with in_process(db, extensions=[resolver]) as other, anyio.create_task_group() as group:

            async def sleep_then_fan_in() -> None:
                slept = await other.call_tool("sleep", {"run_id": run_id, "step": "pause", "seconds": 0.5})
                assert slept.structured_content is not None and slept.structured_content["status"] == "done"

            group.start_soon(sleep_then_fan_in)
        assert [handle.status for handle in resolver.handles] == ["working"] and resolver.polls >= 1


async def test_clients_that_do_not_declare_it_keep_the_bounded_blocking_calls(db_path: Path) -> None:
    db = str(db_path)
    for client in ({}, {"mode": "legacy"}):
        async with in_process(db, **client) as plain:
            run_id = await new_run(plain)
            answer = await handle(plain, "wait_for_event", run_id=run_id, step="s", event="never", block_s=0.2)
            assert isinstance(answer, CallToolResult) and answer.structured_content is not None
            assert answer.structured_content["status"] == "waiting"
    assert task_rows(db) == []
    async with in_process(db, mode="legacy") as legacy:
        with pytest.raises(MCPError) as refused:
            await task_request(legacy, "tasks/get", "task-" + "0" * 32)
        assert refused.value.error.code == -32601  # tasks/* exist in the 2026-07-28 protocol only


async def test_protocol_errors_say_what_is_wrong_and_store_nothing(db_path: Path) -> None:
    db = str(db_path)
    async with in_process(db, extensions=[TasksClient()]) as client:
        for task_id, says in [
            ("task-" + "0" * 32, "task_not_found: no task has id 'task-000"),
            ("x" * 100_000, "taskId 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'... is not a task id: pass the taskId"),
            ("", "taskId '' is not a task id"),
        ]:
            with pytest.raises(MCPError) as unknown:
                await task_request(client, "tasks/get", task_id)
            assert unknown.value.error.code == -32602
            assert unknown.value.error.message.startswith(f"Failed to retrieve task: {says}")
        for method in ("tasks/update", "tasks/cancel"):
            with pytest.raises(MCPError) as missing:
                await task_request(client, method, "task-" + "0" * 32)  # type: ignore[arg-type]
            assert missing.value.error.code == -32602 and "task_not_found" in missing.value.error.message

        # Bad arguments are refused as the tool refuses them, at once: no task, no wait.
        bad = await handle(client, "wait_for_event", run_id="nope", step="s", event="e")
        assert isinstance(bad, CallToolResult) and bad.is_error
        assert bad.content[0].text.startswith("run_not_found: no run has id 'nope'")  # type: ignore[union-attr]
        typo = await handle(client, "sleep", run_id="r", step="s", secondz=3)
        assert isinstance(typo, CallToolResult) and typo.is_error and "secondz" in typo.content[0].text  # type: ignore[union-attr]
        assert task_rows(db) == []

        # tasks/update: these tasks never ask for input, so responses are acknowledged and ignored.
        run_id = await new_run(client)
        task = await handle(client, "sleep", run_id=run_id, step="nap", seconds=3600)
        assert isinstance(task, TaskHandle)
        await task_request(client, "tasks/update", task.task_id, input_responses={"x": {"action": "accept"}})
        await task_request(client, "tasks/cancel", task.task_id)
        cancelled = await task_request(client, "tasks/get", task.task_id)
        assert isinstance(cancelled, TaskState) and cancelled.status == "cancelled" and cancelled.result is None
        # The run is the caller's own: it goes on, its sleep stays for a later call with the same step.
        status = await call(client, "status", run_id=run_id)
        assert status["run"]["status"] == "waiting" and [wait["step"] for wait in status["waits"]] == ["nap"]


@pytest.mark.processes
async def test_a_task_outlives_the_server_process_that_made_it(db: str) -> None:
    async with Client(stdio_server(db), extensions=[TasksClient()]) as first:
        parent, child = await new_run(first), await new_run(first)
        fan_in = await handle(first, "wait_for_runs", run_ids=[child], run_id=parent, step="collect")
        waiting = await handle(first, "wait_for_event", run_id=child, step="deploy", event="deployed")
        assert isinstance(fan_in, TaskHandle) and isinstance(waiting, TaskHandle)
        (pid,) = server_pids(db)
        os.kill(pid, signal.SIGKILL)
        await eventually(lambda: not server_pids(db))
    async with Client(stdio_server(db), extensions=[TasksClient()]) as second:
        for task in (fan_in, waiting):
            state = await task_request(second, "tasks/get", task.task_id)
            assert isinstance(state, TaskState) and state.status == "working"
        sent = await anyio.to_thread.run_sync(lambda: cli(db, "send-event", "deployed", "--json"))
        assert json.loads(sent.stdout)["woken_run_ids"] == [child]
        done = await task_request(second, "tasks/get", waiting.task_id)
        assert isinstance(done, TaskState) and done.status == "completed", done
        assert done.result is not None and done.result["structuredContent"]["status"] == "received"
        await call(second, "finish_run", run_id=child, output={"deployed": True})
        collected = await task_request(second, "tasks/get", fan_in.task_id)
        assert isinstance(collected, TaskState) and collected.status == "completed", collected
        assert collected.result is not None
        (ended,) = collected.result["structuredContent"]["runs"]
        assert ended["run_id"] == child and ended["output"] == {"deployed": True}


@pytest.mark.processes
async def test_a_spawned_subagent_is_a_task_until_its_run_ends(
    tmp_path: Path, db: str, http_server: Callable[..., str], private_state_dir: Path
) -> None:
    base = http_server(MCP_ORCHESTRATOR_CONFIG=str(write_config(tmp_path)))
    resolver = TasksClient()
    async with http_client(base, http_token(private_state_dir), extensions=[resolver]) as client:
        parent = await new_run(client)
        prompt = json.dumps({"steps": ["read", "write"], "output": {"answer": 42}})
        # The resolving client gets the sub-agent's final answer from the one spawn_subagent call.
        done = await client.call_tool(
            "spawn_subagent", {"prompt": prompt, "agent": "fake", "parent_run_id": parent, "cwd": str(tmp_path)}
        )
        assert done.structured_content is not None, done.content
        run = done.structured_content["run"]
        assert run["status"] == "completed" and run["output"] == {"output": {"answer": 42}, "attempt": 1}
        assert done.structured_content["created"] is True and done.structured_content["process"]["profile"] == "fake"
        assert [h.status_message for h in resolver.handles] == [f"sub-agent run {run['run_id']} is queued"]

        # Cancelling the task cancels the sub-agent (and what it spawned).
        slow = json.dumps({"sleep": 60})
        task = await handle(
            client, "spawn_subagent", prompt=slow, agent="fake", parent_run_id=parent, cwd=str(tmp_path)
        )
        assert isinstance(task, TaskHandle) and task.poll_interval_ms == 2000
        await task_request(client, "tasks/cancel", task.task_id)
        state = await task_request(client, "tasks/get", task.task_id)
        assert isinstance(state, TaskState) and state.status == "cancelled"
        (child,) = [row for row in task_rows(db) if row["task_id"] == task.task_id]
        status = await call(client, "status", run_id=child["run_id"])
        assert status["run"]["status"] == "cancelled"


@pytest.mark.processes
async def test_a_subagents_permission_requests_are_asked_through_its_task(
    tmp_path: Path, db: str, http_server: Callable[..., str], private_state_dir: Path
) -> None:
    base = http_server(MCP_ORCHESTRATOR_CONFIG=str(write_config(tmp_path)))
    async with http_client(base, http_token(private_state_dir), extensions=[TasksClient()]) as client:
        parent = await new_run(client)
        slow = json.dumps({"sleep": 30})
        task = await handle(
            client, "spawn_subagent", prompt=slow, agent="fake", parent_run_id=parent, cwd=str(tmp_path)
        )
        assert isinstance(task, TaskHandle)
        (child,) = [row["run_id"] for row in task_rows(db)]
        answers: dict[str, dict[str, Any]] = {}

        async def ask(command: str) -> None:
            arguments = {"tool_name": "Bash", "input": {"command": command}, "run_id": child}
            answer = await client.call_tool("permission_prompt", arguments)
            answers[command] = json.loads(answer.content[0].text)  # type: ignore[union-attr]

        async def asking(count: int) -> TaskState:
            state = await task_request(client, "tasks/get", task.task_id)
            assert isinstance(state, TaskState)
            assert state.status == "input_required" and len(state.model_extra["inputRequests"]) == count  # type: ignore[index]
            return state

        async with anyio.create_task_group() as group:
            group.start_soon(ask, "npm test")
            group.start_soon(ask, "rm -rf build")
            state = await eventually(lambda: asking(2))
            requests = state.model_extra["inputRequests"]  # type: ignore[index]
            by_command = {}
            for approval_id, request in requests.items():
                assert request["method"] == "elicitation/create" and request["params"]["mode"] == "form"
                assert request["params"]["requestedSchema"]["properties"]["decision"]["enum"] == ["allow", "deny"]
                message = request["params"]["message"]
                assert message.startswith(f"Sub-agent run {child} asks to use Bash with ")
                by_command["npm test" if "npm test" in message else "rm -rf build"] = approval_id
            assert state.status_message is not None and "2 permission request(s)" in state.status_message
            accept = {"action": "accept", "content": {"decision": "allow", "message": "go ahead"}}
            await task_request(
                client,
                "tasks/update",
                task.task_id,
                input_responses={by_command["npm test"]: accept, by_command["rm -rf build"]: {"action": "decline"}},
            )
        assert answers["npm test"]["behavior"] == "allow"
        declined = answers["rm -rf build"]
        assert (
            declined["behavior"] == "deny"
            and "A person denied this Bash call: declined by the user" in declined["message"]
        )
        working = await task_request(client, "tasks/get", task.task_id)
        assert isinstance(working, TaskState) and working.status == "working"
        assert "inputRequests" not in (working.model_extra or {})

        # A malformed answer to an outstanding request says what to send; a dismissed one (cancel) leaves
        # the request asked; answers for keys not outstanding are ignored.
        async with anyio.create_task_group() as group:
            group.start_soon(ask, "git push")
            (pushing,) = (await eventually(lambda: asking(1))).model_extra["inputRequests"]  # type: ignore[index]
            with pytest.raises(MCPError) as malformed:
                maybe = {pushing: {"action": "accept", "content": {"decision": "maybe"}}}
                await task_request(client, "tasks/update", task.task_id, input_responses=maybe)
            assert malformed.value.error.code == -32602 and "decision: allow|deny" in malformed.value.error.message
            dismissed = {pushing: {"action": "cancel"}, "01UNKNOWN": {"action": "accept"}}
            await task_request(client, "tasks/update", task.task_id, input_responses=dismissed)
            await asking(1)
            await call(client, "decide_approval", approval_id=pushing, behavior="deny", message="not today")
        assert answers["git push"]["behavior"] == "deny" and "not today" in answers["git push"]["message"]
        await task_request(client, "tasks/cancel", task.task_id)
        assert (await call(client, "status", run_id=child))["run"]["status"] == "cancelled"

        async def reaped() -> bool:  # the sub-agent's process is killed and its exit recorded
            return (await call(client, "status", run_id=child))["process"]["state"] == "done"

        await eventually(reaped, timeout=20)
