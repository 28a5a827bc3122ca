"""The runner with a Claude Code-like agent (tests/fake_agent.py): activity reaches the store in batches,
one write a heartbeat however busy the agent; with live input (stream-json on stdin) a message sent while
the agent works is written to it and marked delivered, and stdin is closed once the agent has answered,
so that it exits by itself, successfully."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from mcp_orchestrator.models import AgentState, Message, SendMessageInput, SpawnSubagentInput, StatusInput
from mcp_orchestrator.runner import LiveInput, user_line
from mcp_orchestrator.runtime import Engine
from mcp_orchestrator.store import is_postgres

from .subagent_helpers import FAKE_AGENT, ended, engine_on, entries, until, write_config
from .support import eventually, query

pytestmark = [pytest.mark.anyio, pytest.mark.processes]

HEARTBEAT_S = 0.2  # subagent_helpers.FAST_SUPERVISOR's


def live_profile(script: dict[str, Any]) -> str:
    """A profile like the built-in claude one (stream-json in and out) whose agent is the fake listener."""
    command = json.dumps([sys.executable, FAKE_AGENT, "listen", json.dumps(script)])
    return (
        f'[profiles.live]\ncommand = {command}\nstdin = "{{task}}"\ninput = "claude-stream-json"\n'
        'output = "claude-json"\nmax_attempts = 1\ntimeout_s = 60\n'
    )


def count_agent_writes(db: str) -> None:
    """A trigger that records the heartbeat time of every write of an agent row: each transaction that
    beats (start, session id, report) gives it a new one, so distinct times count those writes."""
    if is_postgres(db):
        statements = [
            "CREATE TABLE agent_writes (run_id text, beat text)",
            "CREATE FUNCTION agent_written() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "INSERT INTO agent_writes VALUES (NEW.run_id, NEW.doc->>'heartbeat_at'); RETURN NULL; END $$",
            "CREATE TRIGGER agent_written AFTER UPDATE ON agents FOR EACH ROW EXECUTE FUNCTION agent_written()",
        ]
    else:
        statements = [
            "CREATE TABLE agent_writes (run_id TEXT, beat TEXT)",
            "CREATE TRIGGER agent_written AFTER UPDATE ON agents BEGIN "
            "INSERT INTO agent_writes VALUES (NEW.run_id, json_extract(NEW.doc, '$.heartbeat_at')); END",
        ]
    for statement in statements:
        query(db, statement)


def beating_writes(db: str, run_id: str) -> int:
    rows = query(db, f"SELECT COUNT(DISTINCT beat) FROM agent_writes WHERE run_id = '{run_id}' AND beat IS NOT NULL")
    return int(rows[0][0])


async def messages_of(engine: Engine, run_id: str) -> list[Message]:
    return await engine.store.read(lambda tx: tx.messages_of([run_id], ["queued", "delivered", "dropped"], 100))


async def spawn_live(engine: Engine, cwd: Path, prompt: str) -> str:
    spawned = await engine.subagents.spawn(SpawnSubagentInput(prompt=prompt, agent="live", cwd=str(cwd)))
    return spawned.run.run_id


async def test_a_busy_agents_activity_reaches_the_store_in_batches(
    tmp_path: Path, db: str, http_server: Callable[..., str]
) -> None:
    calls = 150
    config = write_config(tmp_path, extra=live_profile({"tools": calls, "pause_s": 0.01, "cost": 0.25}))
    http_server(MCP_ORCHESTRATOR_CONFIG=str(config))
    async with engine_on(db, config) as engine:
        count_agent_writes(db)
        began = time.monotonic()
        run_id = await spawn_live(engine, tmp_path, "fix the views")

        # Activity arrives while the agent works, not only when it exits.
        working = await until(engine, run_id, lambda result: ended(result) or bool(result.activity))
        assert working.process is not None and working.process.state == AgentState.LIVE, working.process

        await until(engine, run_id, ended)
        elapsed = time.monotonic() - began
        done = await engine.runs.status(StatusInput(run_id=run_id, journal_limit=100, activity_limit=1000))

    assert done.run.status == "completed" and done.run.output == "echo: fix the views"
    assert done.process is not None and done.process.exit_code == 0
    assert [entry.detail["how"] for entry in entries(done.journal, "process_exited")] == ["exited"]
    tools = [entry for entry in done.activity if entry.kind == "tool"]
    assert len(tools) == calls and all(entry.failed is False for entry in tools)
    assert [entry.tool for entry in tools[:3]] == ["Read", "Grep", "Bash"] and "src/app/models.py" in tools[0].summary
    assert done.run.usage is not None and done.run.usage.cost_usd == pytest.approx(0.25)

    # One write a heartbeat (plus the start and the session id), however many lines the agent printed.
    writes = beating_writes(db, run_id)
    assert 2 <= writes <= elapsed / HEARTBEAT_S + 5, (writes, elapsed)
    assert len(done.activity) > 3 * writes, (len(done.activity), writes)


async def test_a_message_sent_while_the_agent_works_is_written_to_it_then_stdin_closes(
    tmp_path: Path, db: str, http_server: Callable[..., str]
) -> None:
    hold = tmp_path / "hold"  # the agent answers its prompt once this exists
    config = write_config(tmp_path, extra=live_profile({"tools": 2, "hold_file": str(hold)}))
    http_server(MCP_ORCHESTRATOR_CONFIG=str(config))
    async with engine_on(db, config) as engine:
        run_id = await spawn_live(engine, tmp_path, "fix the views")
        await until(engine, run_id, lambda result: result.process is not None and result.process.session_id is not None)

        sent = await engine.messages.send(SendMessageInput(run_id=run_id, text="also update the changelog"), "test")
        assert sent.message.status == "queued" and "written to the running agent" in sent.delivery

        async def delivered() -> Message | None:
            message = (await messages_of(engine, run_id))[0]
            return message if message.status == "delivered" else None

        message = await eventually(delivered, timeout=30)
        assert message.attempt == 1 and message.how == "live", message
        hold.touch()

        done = await until(engine, run_id, ended)
        stdout = (Path(done.process.log_dir or "") / "stdout.log").read_text() if done.process else ""
        stderr = (Path(done.process.log_dir or "") / "stderr.log").read_text() if done.process else ""

    # The agent answered both lines, then saw its stdin end and exited by itself.
    assert done.run.status == "completed" and done.run.output == "echo: also update the changelog"
    assert done.process is not None and done.process.exit_code == 0 and done.process.attempt == 1
    assert [entry.detail["how"] for entry in entries(done.journal, "process_exited")] == ["exited"]
    answers = [json.loads(line)["result"] for line in stdout.splitlines() if '"type": "result"' in line]
    assert answers == ["echo: fix the views", "echo: also update the changelog"]
    assert "stdin closed: ending the session" in stderr


# The writer of live input on its own, over a plain pipe.


def test_a_user_line_is_one_line_of_stream_json() -> None:
    line = user_line('say "hi"\nthen stop \x00 \udc80')
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    message = json.loads(line)
    assert message == {
        "type": "user",
        "message": {"role": "user", "content": [{"type": "text", "text": 'say "hi"\nthen stop \x00 \udc80'}]},
    }


async def test_live_input_writes_in_order_and_reports_what_was_written() -> None:
    read_end, write_end = os.pipe()
    results = [0]
    stdin = LiveInput(os.fdopen(write_end, "wb"), lambda: results[0])
    with os.fdopen(read_end, "rb") as agent:
        stdin.send(None, "the prompt")
        stdin.send("m1", "a message")
        stdin.send("m1", "the same message again")  # written once
        lines = [json.loads(agent.readline())["message"]["content"][0]["text"] for _ in range(2)]
        assert lines == ["the prompt", "a message"]
        await eventually(lambda: stdin.take_written() == ["m1"])
        assert not stdin.is_new("m1") and stdin.take_written() == []
        assert not stdin.answered()  # no result since the last line
        results[0] = 1
        assert stdin.answered()
        stdin.close()
        assert agent.read() == b""  # closed: the agent sees the end of its input
        stdin.send("m2", "too late")
        assert stdin.take_written() == [] and stdin.is_new("m2")


async def test_live_input_never_blocks_on_a_full_pipe_and_stops_when_the_agent_is_gone() -> None:
    read_end, write_end = os.pipe()
    stdin = LiveInput(os.fdopen(write_end, "wb"), lambda: 0)
    big = "x" * (1 << 20)  # more than a pipe holds: the writer waits, the caller does not
    started = time.monotonic()
    stdin.send("m1", big)
    stdin.send("m2", "after it")
    assert time.monotonic() - started < 0.5
    await anyio.sleep(0.1)
    assert stdin.take_written() == [] and not stdin.answered()
    os.close(read_end)  # the agent is gone
    await eventually(lambda: stdin.closed or None)
    assert stdin.take_written() == []  # neither was delivered
