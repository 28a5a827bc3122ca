"""The server as Claude Code runs it: a subprocess over stdio, driven by the MCP SDK client."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, MCPError

from .support import CONTRACT_TOOLS, call, stdio_server

pytestmark = [pytest.mark.anyio, pytest.mark.processes]

DESCRIPTION_MAX = 2048  # bytes of a tool description or the server's instructions that Claude Code keeps


async def call_error(client: Client, tool: str, **arguments: Any) -> str:
    result = await client.call_tool(tool, arguments)
    assert result.is_error, f"{tool}({arguments}) should have failed: {result.structured_content}"
    return result.content[0].text


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_tools_are_described_for_a_model(db: str, mode: str) -> None:
    async with Client(stdio_server(db), mode=mode) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert set(tools) == CONTRACT_TOOLS
        for tool in tools.values():
            # Claude Code's permission prompt tool must answer with a single text block: no output schema.
            assert (tool.output_schema is None) == (tool.name == "permission_prompt"), tool.name
            assert tool.annotations is not None and tool.title, tool.name
            assert "Example" in (tool.description or ""), tool.name
            # Claude Code cuts a description (and the server's instructions) past 2 KB.
            assert len((tool.description or "").encode()) < DESCRIPTION_MAX, tool.name
            assert tool.input_schema["type"] == "object" and "properties" in tool.input_schema
        assert tools["status"].annotations.read_only_hint is True
        assert tools["list_runs"].annotations.read_only_hint is True
        assert tools["cancel_run"].annotations.destructive_hint is True
        assert tools["checkpoint"].annotations.idempotent_hint is True
        assert tools["start_run"].input_schema["required"] == ["name"]
        assert tools["checkpoint"].input_schema["required"] == ["run_id", "step"]
        instructions = client.instructions or ""
        assert len(instructions.encode()) < DESCRIPTION_MAX
        assert all(name in instructions for name in ("start_run", "checkpoint", "begin=true", "finish_run"))
        templates = (await client.list_resource_templates()).resource_templates
        assert [t.uri_template for t in templates] == ["run://{run_id}", "runs://{status}"]


async def test_a_run_survives_its_session_and_resumes(db: str, tmp_path: Path) -> None:
    workspace = str(tmp_path / "project")
    async with Client(stdio_server(db, CLAUDE_PROJECT_DIR=workspace)) as first_session:
        started = await call(first_session, "start_run", name="fix-issue", key="fix-42", input={"issue": 42})
        run_id = started["run"]["run_id"]
        assert started["created"] and started["run"]["workspace"] == workspace
        await call(first_session, "checkpoint", run_id=run_id, step="plan", output={"files": ["a.py"]})
        begun = await call(first_session, "checkpoint", run_id=run_id, step="edit", begin=True)
        assert begun["step"]["status"] == "started" and begun["previous_outcome"] is None
        # The session ends here without finishing "edit": its outcome is unknown.

    async with Client(stdio_server(db), mode="legacy") as second_session:
        resumed = await call(second_session, "start_run", name="fix-issue", key="fix-42")
        assert not resumed["created"] and resumed["run"]["run_id"] == run_id
        assert [(s["step"], s["status"]) for s in resumed["steps"]] == [("plan", "completed"), ("edit", "started")]
        plan = await call(second_session, "checkpoint", run_id=run_id, step="plan", begin=True)
        assert plan["replayed"] and plan["step"]["output"] == {"files": ["a.py"]}
        edit = await call(second_session, "checkpoint", run_id=run_id, step="edit", begin=True)
        assert (edit["previous_outcome"], edit["step"]["attempt"]) == ("unknown", 2)
        await call(second_session, "checkpoint", run_id=run_id, step="edit", output="edited")
        replay = await call(second_session, "checkpoint", run_id=run_id, step="edit", output="edited twice")
        assert replay["replayed"] and replay["step"]["output"] == "edited"
        finished = await call(second_session, "finish_run", run_id=run_id, output={"pr": 1})
        assert finished["run"]["status"] == "completed" and finished["run"]["ended_at"]
        status = await call(second_session, "status", run_id=run_id)
        assert [j["kind"] for j in status["journal"]] == [
            "run_created",
            "step_completed",
            "step_started",
            "attempt_unknown",
            "step_started",
            "step_completed",
            "run_completed",
        ]
        recent = await second_session.read_resource("runs://all")
        assert json.loads(recent.contents[0].text)["runs"][0]["run_id"] == run_id
        assert json.loads((await second_session.read_resource("runs://running")).contents[0].text)["runs"] == []
        resource = await second_session.read_resource(f"run://{run_id}")
        assert json.loads(resource.contents[0].text)["run"]["status"] == "completed"


async def test_retries_cancel_cascade_list_and_paging(db: str) -> None:
    async with Client(stdio_server(db)) as client:
        policy = {"max_attempts": 2, "initial_backoff_s": 5, "max_backoff_s": 5}
        root = (await call(client, "start_run", name="root", retry=policy, labels={"team": "core"}))["run"]["run_id"]
        first = await call(client, "checkpoint", run_id=root, step="flaky", error="boom")
        assert first["retry"] is True and first["retry_at"] and first["step"]["status"] == "retrying"
        second = await call(client, "checkpoint", run_id=root, step="flaky", error={"message": "boom again"})
        assert second["retry"] is False and second["step"]["status"] == "failed"
        assert "failed for good" in await call_error(client, "checkpoint", run_id=root, step="flaky", begin=True)

        children = [
            (await call(client, "start_run", name="child", parent_run_id=root, labels={"n": str(i)}))["run"]["run_id"]
            for i in range(5)
        ]
        grandchild = (await call(client, "start_run", name="grandchild", parent_run_id=children[0]))["run"]["run_id"]
        await call(client, "finish_run", run_id=children[4], output="done")

        page1 = await call(client, "list_runs", parent_run_id=root, limit=3)
        page2 = await call(client, "list_runs", parent_run_id=root, limit=3, cursor=page1["next_cursor"])
        assert page2["next_cursor"] is None
        assert [r["run_id"] for r in page1["runs"] + page2["runs"]] == children[::-1]
        assert [r["run_id"] for r in (await call(client, "list_runs", label="team=core"))["runs"]] == [root]
        assert [r["run_id"] for r in (await call(client, "list_runs", status="completed"))["runs"]] == [children[4]]

        cancelled = await call(client, "cancel_run", run_id=root, reason="superseded")
        assert sorted(cancelled["cancelled_run_ids"]) == sorted([root, *children[:4], grandchild])
        status = await call(client, "status", run_id=root)
        assert {c["run_id"]: c["status"] for c in status["children"]} == {
            **{c: "cancelled" for c in children[:4]},
            children[4]: "completed",
        }
        assert "is cancelled" in await call_error(client, "checkpoint", run_id=root, step="more", output=1)


async def test_bad_input_is_explained_and_nothing_stored_is_lost(db: str) -> None:
    async with Client(stdio_server(db, MCP_ORCHESTRATOR_MAX_PAYLOAD_BYTES="2048")) as client:
        run_id = (await call(client, "start_run", name="keep", key="keep"))["run"]["run_id"]
        await call(client, "checkpoint", run_id=run_id, step="done", output={"kept": True})

        bad_calls: list[tuple[str, dict[str, Any], str]] = [
            ("start_run", {}, "name"),
            ("start_run", {"name": ""}, "at least 1 character"),
            ("start_run", {"name": "x" * 201}, "at most 200 characters"),
            ("start_run", {"name": "other", "key": "keep"}, "already belongs to run"),
            ("start_run", {"name": "x", "parent_run_id": "ghost"}, "parent_run_id 'ghost' names no run"),
            ("start_run", {"name": "x", "labels": {"bad key!": "v"}}, "labels"),
            ("start_run", {"name": "x", "retry": {"initial_backoff_s": 10, "max_backoff_s": 1}}, "cannot be less"),
            ("start_run", {"name": "x", "timeout_s": -1}, "timeout_s"),
            ("start_run", {"name": "x", "input": "y" * 3000}, "over the limit of 2048 bytes"),
            ("checkpoint", {"run_id": run_id}, "step"),
            ("checkpoint", {"run_id": run_id, "step": ""}, "at least 1 character"),
            ("checkpoint", {"run_id": run_id, "step": "s", "output": 1, "error": "e"}, "not both"),
            ("checkpoint", {"run_id": run_id, "step": "s", "begin": True, "output": 1}, "begin=true takes neither"),
            ("checkpoint", {"run_id": run_id, "step": "s", "output": "y" * 3000}, "over the limit of 2048 bytes"),
            ("checkpoint", {"run_id": "ghost", "step": "s"}, "no run has id 'ghost'"),
            ("checkpoint", {"run_id": run_id, "step": "s", "begin": "maybe"}, "begin"),
            ("finish_run", {"run_id": run_id, "output": 1, "error": "e"}, "not both"),
            ("status", {"run_id": "ghost"}, "no run has id 'ghost'"),
            ("list_runs", {"limit": 0}, "limit"),
            ("list_runs", {"status": "sleeping"}, "status"),
            ("list_runs", {"label": "has space"}, "must be 'key=value' or 'key'"),
            ("list_runs", {"since": "yesterday"}, "since"),
            ("cancel_run", {}, "run_id"),
            ("checkpoint", {"run_id": run_id, "step": "s", "outptu": 1}, "unknown argument(s) 'outptu'"),
        ]
        for tool, arguments, expected in bad_calls:
            message = await call_error(client, tool, **arguments)
            assert expected in message, f"{tool}({arguments}): {message}"

        with pytest.raises(MCPError, match="no run has id"):
            await client.read_resource("run://ghost")

        status = await call(client, "status", run_id=run_id)
        assert [(s["step"], s["output"]) for s in status["steps"]] == [("done", {"kept": True})]
        assert (await call(client, "list_runs"))["runs"][0]["run_id"] == run_id
        assert len((await call(client, "list_runs"))["runs"]) == 1
