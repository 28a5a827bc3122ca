"""Every answer fits a model's context, and the tool list stays small.

A run of 300 steps with 2 KB outputs (and a busy sub-agent under it) would make status and start_run
answer with about 600 KB; through the real stdio server every tool's answer stays within the result
budget and validates against the tool's published output schema. Paging walks every step once, a
preview says how to read the value whole (and that way returns it whole), and tools/list stays
under half of what it was before its schemas were compacted.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from mcp import Client

from mcp_orchestrator.config import ENV_MAX_RESULT, Settings
from mcp_orchestrator.errors import ConfigError
from mcp_orchestrator.models import (
    Activity,
    CheckpointInput,
    SendMessageInput,
    SpawnSubagentInput,
    StartRunInput,
    StatusInput,
    Step,
    StepStatus,
    WaitForRunsResult,
)
from mcp_orchestrator.runtime import Engine
from mcp_orchestrator.services.context import DEFAULT_MAX_RESULT_BYTES
from mcp_orchestrator.services.sizing import RunSteps, fit, json_size, page_steps

from .support import CONTRACT_TOOLS, RawStdio, call, stdio_server

pytestmark = pytest.mark.anyio

BUDGET = DEFAULT_MAX_RESULT_BYTES
STEPS, OUTPUT = 300, "x" * 2000
# tools/list as the server sends it (the JSON-RPC line), in bytes. Before its schemas were compacted:
# 146,847 (output schemas 100,077 of it; descriptions 16,224; input schemas 26,594); 101 KB when fewer
# tools had been added. Compacted, with output schemas the answer's own fields: about 45,000.
TOOLS_LIST_MAX = 50_500  # half of 101 KB


async def long_run(engine: Engine, tmp_path: Path) -> tuple[str, str]:
    """A run of STEPS steps with 2 KB outputs, and a busy sub-agent under it (claimed and started as a
    runner on another host would: no process here), with activity, long log lines and queued messages."""
    run_id = (await engine.runs.start_run(StartRunInput(name="long", key="long", input={"task": OUTPUT}))).run.run_id
    for index in range(STEPS):
        await engine.runs.checkpoint(
            CheckpointInput(run_id=run_id, step=f"step-{index}", output={"n": index, "text": OUTPUT})
        )
    spawn = SpawnSubagentInput(
        prompt="p" * 5000, agent="command", command=["true"], cwd=str(tmp_path), name="busy", parent_run_id=run_id
    )
    sub = (await engine.subagents.spawn(spawn)).run.run_id
    (launch,) = await engine.subagents.claim()
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "stdout.log").write_text(
        "\n".join(json.dumps({"type": "assistant", "text": "z" * 3000}) for _ in range(50))
    )
    (logs / "stderr.log").write_text("\n".join(f"warning {n}: " + "w" * 800 for n in range(50)))
    at = datetime.now(UTC)
    await engine.subagents.started(
        sub, launch.agent.attempt, pid=4242, pgid=4243, host="elsewhere", at=at, log_dir=str(logs)
    )
    activity = [
        Activity(
            at=at, kind="tool", summary=f"Bash: {'c' * 280}", tool="Bash", ref=f"t{n}", failed=False, duration_ms=5
        )
        for n in range(300)
    ]
    await engine.subagents.report(sub, launch.agent.attempt, activity=activity)
    for _ in range(20):
        await engine.messages.send(SendMessageInput(run_id=sub, text="m" * 3000), source="cli")
    return run_id, sub


def sent_size(structured: dict[str, Any]) -> int:
    return len(json.dumps(structured, separators=(",", ":"), ensure_ascii=False).encode())


@pytest.mark.processes
async def test_every_tool_answers_a_long_run_within_the_budget(engine: Engine, db: str, tmp_path: Path) -> None:
    run_id, sub = await long_run(engine, tmp_path)
    # The sub-agent's status, as the status tool reads it (before a server's supervisor reaps the agent,
    # whose runner is on no real host): each of its lists cut to its share, and said so.
    asked = StatusInput(run_id=sub, activity_limit=1000, log_lines=1000, journal_limit=1000)
    busy = fit(await engine.runs.status(asked, budget=BUDGET), BUDGET)
    assert json_size(busy) <= BUDGET and busy.activity and busy.activity_cursor and busy.log_tail["stderr"]
    assert busy.omitted is not None and "messages: the latest" in busy.omitted and "log_tail" in busy.omitted
    others = [
        (await engine.runs.start_run(StartRunInput(name=f"other-{n}", input={"text": OUTPUT}))).run.run_id
        for n in range(40)
    ]
    config = tmp_path / "config.toml"
    config.write_text("[approvals]\nwait_s = 0\n")
    sizes: dict[str, int] = {}
    async with Client(stdio_server(db, MCP_ORCHESTRATOR_CONFIG=str(config))) as client:
        schemas = {tool.name: tool.output_schema for tool in (await client.list_tools()).tools}

        async def answer(tool: str, **arguments: Any) -> dict[str, Any]:
            result = await client.call_tool(tool, arguments)
            assert not result.is_error, result.content[0].text
            if schemas[tool] is None:  # permission_prompt: one text block
                sizes[tool] = max(sizes.get(tool, 0), len(result.content[0].text.encode()))
                return json.loads(result.content[0].text)
            assert result.structured_content is not None
            jsonschema.validate(result.structured_content, schemas[tool])  # the compacted schema holds
            sizes[tool] = max(sizes.get(tool, 0), sent_size(result.structured_content))
            return result.structured_content

        # Resuming is one call: how many steps, the latest with previews, the names of all the others.
        resumed = await answer("start_run", name="long", key="long")
        assert not resumed["created"] and resumed["steps_total"] == STEPS
        shown = [step["step"] for step in resumed["steps"]]
        assert shown[-1] == f"step-{STEPS - 1}" and len(shown) >= 3
        assert list(resumed["earlier_steps"]) == [f"step-{n}" for n in range(STEPS - len(shown))]
        assert set(resumed["earlier_steps"].values()) == {"completed"}
        assert resumed["steps_cursor"] == str(STEPS - len(shown))
        latest = resumed["steps"][-1]
        assert latest["truncated"] == {"output": len(json.dumps(latest_output(STEPS - 1), separators=(",", ":")))}
        assert latest["output"].endswith("…") and "checkpoint(run_id, step, begin=true)" in resumed["omitted"]

        page = await answer("status", run_id=run_id, journal_limit=1000)
        before = await answer("status", run_id=run_id, steps_cursor=page["steps_cursor"])
        assert before["steps"][-1]["step"] == f"step-{int(page['steps_cursor']) - 1}"
        bare = await answer("status", run_id=run_id, include_outputs=False, steps_limit=50)
        assert bare["steps"][-1]["step"] == f"step-{STEPS - 1}" and 40 <= len(bare["steps"]) <= 50
        assert all(step["output"] is None and "truncated" not in step for step in bare["steps"])
        assert (await answer("status", run_id=run_id, steps_limit=0))["steps"] == []

        await answer("status", run_id=sub, activity_limit=1000, log_lines=1000, journal_limit=1000)

        whole = await answer("checkpoint", run_id=run_id, step="step-7", begin=True)
        assert whole["replayed"] and whole["step"]["output"] == latest_output(7)
        listed = await answer("list_runs", limit=200)
        assert listed["next_cursor"] is not None and "next_cursor" in listed["omitted"]
        await answer("wait_for_runs", run_ids=others, block_s=0)
        await answer("send_event", name="ping", data={"text": OUTPUT})
        await answer("wait_for_event", run_id=run_id, step="ping", event="ping", block_s=0)
        await answer("sleep", run_id=run_id, step="nap", seconds=3600, block_s=0)
        await answer("schedule", name="nightly", every_s=3600, action={"type": "send_event", "name": "tick"})
        await answer("list_schedules")
        await answer("unschedule", name="nightly")
        denied = await answer(
            "permission_prompt", tool_name="Write", input={"file_path": "/a", "content": OUTPUT}, run_id=sub
        )
        assert denied["behavior"] == "deny"  # wait_s = 0: the agent is told to wait and exit
        pending = await answer("list_approvals", run_id=run_id)
        await answer("decide_approval", approval_id=pending["approvals"][0]["approval_id"], behavior="allow")
        await answer("send_message", run_id=sub, text="m" * 3000)
        read = await answer("read_messages", run_id=sub)
        assert 0 < len(read["messages"]) < 21  # as many as fit; the rest stay queued for the next read
        assert (await answer("read_messages", run_id=sub))["messages"]
        await answer("set_budget", run_id=sub, max_budget_usd=5.0)
        await answer(
            "spawn_subagent",
            prompt="p" * 5000,
            agent="command",
            command=["true"],
            cwd=str(tmp_path),
            parent_run_id=run_id,
        )
        await answer("cancel_run", run_id=others[0], reason="done with it")
        await answer("retry_run", run_id=others[0])
        await answer("finish_run", run_id=others[1], output={"text": OUTPUT})
    assert set(sizes) == CONTRACT_TOOLS
    over = {tool: size for tool, size in sizes.items() if size > BUDGET}
    assert not over, f"answers over the {BUDGET}-byte budget: {over}"


def latest_output(index: int) -> dict[str, Any]:
    return {"n": index, "text": OUTPUT}


@pytest.mark.processes
async def test_a_value_shown_as_a_preview_comes_whole_from_checkpoint(db: str) -> None:
    big = {"log": "y" * 40_000}  # over the 8 KiB budget below, under the payload limit
    async with Client(stdio_server(db, **{ENV_MAX_RESULT: "8192"})) as client:
        run_id = (await call(client, "start_run", name="big-output"))["run"]["run_id"]
        await call(client, "checkpoint", run_id=run_id, step="build", output=big)
        shown = await call(client, "status", run_id=run_id)
        (step,) = shown["steps"]
        assert step["truncated"] == {"output": len(json.dumps(big, separators=(",", ":")))}
        assert isinstance(step["output"], str) and step["output"].startswith('{"log":"yyy')
        assert sent_size(shown) <= 8192 and "begin=true" in shown["omitted"]
        whole = await call(client, "checkpoint", run_id=run_id, step="build", begin=True)
        assert whole["replayed"] and whole["step"]["output"] == big and "truncated" not in whole["step"]
        resource = await client.read_resource(f"run://{run_id}")
        assert len(resource.contents[0].text.encode()) <= 8192  # the resource is the status tool's answer


@pytest.mark.processes
async def test_a_bad_steps_cursor_is_named(db: str) -> None:
    async with Client(stdio_server(db)) as client:
        run_id = (await call(client, "start_run", name="paged"))["run"]["run_id"]
        refused = await client.call_tool("status", {"run_id": run_id, "steps_cursor": "next"})
        assert refused.is_error and "invalid_input" in refused.content[0].text
        assert "'next' is not a steps_cursor" in refused.content[0].text
        too_many = await client.call_tool("status", {"run_id": run_id, "steps_limit": 5000})
        assert too_many.is_error and "steps_limit" in too_many.content[0].text


async def test_paging_walks_every_step_once(engine: Engine, tmp_path: Path) -> None:
    run_id, _ = await long_run(engine, tmp_path)
    seen: list[str] = []
    cursor = None
    while True:
        page = await engine.runs.status(StatusInput(run_id=run_id, steps_cursor=cursor), budget=BUDGET)
        assert json_size(page) <= BUDGET and page.steps_total == STEPS
        seen[:0] = [step.step for step in page.steps]
        if (cursor := page.steps_cursor) is None:
            break
    assert seen == [f"step-{n}" for n in range(STEPS)]

    # The terminal and the dashboard read them without a budget: every step asked for, whole.
    whole = await engine.runs.status(StatusInput(run_id=run_id))
    assert [step.step for step in whole.steps] == [f"step-{n}" for n in range(STEPS)]
    assert whole.steps[-1].output == latest_output(STEPS - 1) and whole.steps_cursor is None
    before = await engine.runs.status(StatusInput(run_id=run_id, steps_cursor="100", steps_limit=10))
    assert [step.step for step in before.steps] == [f"step-{n}" for n in range(90, 100)]
    assert before.steps_cursor == "90" and before.steps_total == STEPS


def test_a_page_of_steps_fits_and_names_the_ones_before() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    steps = [
        Step(step=f"s{n}", status=StepStatus.COMPLETED, attempt=1, output="o" * 3000, started_at=at)
        for n in range(1000)
    ]
    page = page_steps(RunSteps.of(steps), budget=8192)
    assert json_size(page.steps) + json_size(page.earlier) <= 8192
    assert page.steps[-1].step == "s999" and page.cursor == str(1000 - len(page.steps))
    assert page.earlier is not None and list(page.earlier)[-1] == f"s{999 - len(page.steps)}"
    assert all(step.truncated == {"output": 3002} for step in page.steps)
    assert page_steps(RunSteps.of(steps[:3])).steps == steps[:3]  # without a budget: whole


def test_the_guard_says_what_it_left_out() -> None:
    runs = [{"run_id": f"r{n}", "name": "n", "status": "completed", "output": "o" * 5000} for n in range(100)]
    at = datetime(2026, 1, 1, tzinfo=UTC).isoformat()
    result = WaitForRunsResult.model_validate(
        {"status": "done", "runs": [run | {"created_at": at, "updated_at": at} for run in runs]}
    )
    fitted = fit(result, 8192)
    assert json_size(fitted) <= 8192 and 0 < len(fitted.runs) < 100
    assert fitted.omitted is not None and f"runs: the first {len(fitted.runs)} of 100" in fitted.omitted
    assert fit(fitted, 10**6) is fitted  # an answer that fits is handed on as it is


def test_the_result_budget_is_a_setting() -> None:
    assert Settings.load({ENV_MAX_RESULT: "65536"}).max_result_bytes == 65536
    assert Settings.load({}).max_result_bytes == BUDGET
    with pytest.raises(ConfigError, match=ENV_MAX_RESULT):
        Settings.load({ENV_MAX_RESULT: "100"})


@pytest.mark.processes
def test_the_tool_list_stays_compact(db_path: Path) -> None:
    server = RawStdio(db_path).initialize()
    try:
        server.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        tools = server.answer(1)["result"]["tools"]
    finally:
        server.close()
    size = len(json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"tools": tools}}, separators=(",", ":")).encode())
    assert size < TOOLS_LIST_MAX, f"tools/list is {size} bytes"
    for tool in tools:
        for schema in (tool["inputSchema"], tool.get("outputSchema")):
            if schema is not None:
                jsonschema.Draft202012Validator.check_schema(schema)
                text = json.dumps(schema)
                assert '"title"' not in text, tool["name"]  # pydantic's, on every property
                for name in {part.split('"')[0] for part in text.split('"#/$defs/')[1:]}:
                    assert name in schema.get("$defs", {}), (tool["name"], name)
    start = next(tool for tool in tools if tool["name"] == "start_run")["inputSchema"]
    assert start["required"] == ["name"] and start["properties"]["key"]["type"] == "string"
    assert "description" in start["properties"]["key"]  # one line per field that is not self-evident
