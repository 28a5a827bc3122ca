"""Several orchestrator nodes on one PostgreSQL database: real server processes, each a node.

Each node is ``mcp-orchestrator serve --http`` with its own ``MCP_ORCHESTRATOR_NODE`` name; they
share nothing but the database.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import anyio
import pytest

from mcp_orchestrator.models import AgentState, CheckpointInput, RunStatus, SpawnSubagentInput
from mcp_orchestrator.runtime import Engine

from .subagent_helpers import FAKE_AGENT, ended, engine_on, entries, most_at_once, until, write_config
from .support import all_steps, call, http_client, http_token, postgres_schema, server_env

pytestmark = [pytest.mark.anyio, pytest.mark.processes]

# A profile that survives the loss of its process: the run is retried (on whichever node claims it).
DURABLE = (
    f"[profiles.durable]\ncommand = {json.dumps([sys.executable, FAKE_AGENT, 'agent', '{task}', '{mcp_config}'])}\n"
    "max_attempts = 3\ntimeout_s = 60\n"
)


class Node:
    def __init__(self, name: str, process: subprocess.Popen[str], url: str) -> None:
        self.name, self.process, self.url = name, process, url


StartNode = Callable[[str], Node]


@pytest.fixture
def pg_db(postgres_database: str) -> str:
    return postgres_schema(postgres_database)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """Six sub-agents at once in all, at most two on any one node: every node must take a share."""
    config = write_config(tmp_path, extra=DURABLE, max_concurrent=6)
    config.write_text(config.read_text().replace("[limits]\n", "[limits]\nnode_max_concurrent = 2\n", 1))
    return config


@pytest.fixture
def start_node(pg_db: str, config: Path) -> Iterator[StartNode]:
    """Starts ``serve --http`` as a node of the test's database; returns it once it serves."""
    nodes: list[Node] = []

    def start(name: str) -> Node:
        command = [sys.executable, "-m", "mcp_orchestrator", "serve", "--http", "127.0.0.1:0", "--db", pg_db]
        env = server_env(MCP_ORCHESTRATOR_CONFIG=str(config), MCP_ORCHESTRATOR_NODE=name)
        process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
        assert process.stderr is not None
        seen = []
        for line in process.stderr:
            if "MCP at " in line:
                nodes.append(Node(name, process, line.split("MCP at ")[1].split("/mcp")[0]))
                return nodes[-1]
            seen.append(line)
        process.kill()
        raise AssertionError(f"node {name} did not start: {''.join(seen)}")

    yield start
    for node in nodes:
        if node.process.poll() is None:
            node.process.terminate()
            try:
                node.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait()
        if node.process.stderr:
            node.process.stderr.close()


@pytest.fixture
async def engine(pg_db: str, config: Path) -> AsyncIterator[Engine]:
    """An engine on the database that supervises nothing (the nodes do)."""
    async with engine_on(pg_db, config) as engine:
        yield engine


async def test_an_event_sent_on_one_node_wakes_a_waiter_on_another(
    start_node: StartNode, private_state_dir: Path
) -> None:
    one, two = start_node("n1"), start_node("n2")
    token = http_token(private_state_dir)
    async with http_client(one.url, token) as waiter, http_client(two.url, token) as sender:
        run_id = (await call(waiter, "start_run", name="deploy"))["run"]["run_id"]
        woken: dict[str, object] = {}

        async def wait() -> None:
            woken.update(
                await call(waiter, "wait_for_event", run_id=run_id, step="approval", event="approved", block_s=30)
            )
            woken["at"] = time.monotonic()

        async with anyio.create_task_group() as group:
            group.start_soon(wait)
            # The wait is registered on node one before the event is sent on node two.
            with anyio.fail_after(10):
                while (await call(sender, "status", run_id=run_id))["run"]["status"] != "waiting":
                    await anyio.sleep(0.02)
            sent_at = time.monotonic()
            await call(sender, "send_event", name="approved", data={"by": "ana"})
        assert woken["status"] == "received"
        assert woken["event"]["data"] == {"by": "ana"}  # type: ignore[index]
        assert float(woken["at"]) - sent_at < 2.0  # woken by the notification, not by a timeout  # type: ignore[arg-type]


async def test_three_nodes_start_each_queued_subagent_once(
    start_node: StartNode, engine: Engine, tmp_path: Path
) -> None:
    for name in ("n1", "n2", "n3"):
        start_node(name)
    run_ids = []
    for number in range(9):
        task = json.dumps({"steps": ["work"], "sleep": 1, "output": number})
        spawn = SpawnSubagentInput(prompt=task, agent="fake", key=f"job-{number}", cwd=str(tmp_path))
        run_ids.append((await engine.subagents.spawn(spawn)).run.run_id)
    results = [await until(engine, run_id, ended, timeout=90) for run_id in run_ids]

    nodes: Counter[str] = Counter()
    for result in results:
        assert result.run.status == RunStatus.COMPLETED, result.run.error
        started = entries(result.journal, "process_started")
        assert len(started) == 1, f"{result.run.run_id} started {len(started)} times"
        nodes[started[0].detail["host"]] += 1
    assert sum(nodes.values()) == 9
    assert set(nodes) == {"n1", "n2", "n3"}, nodes  # each node ran its share (two at most at a time)
    peak_by_node = {name: most_at_once([r.journal for r in results], host=name) for name in nodes}
    assert max(peak_by_node.values()) <= 2, peak_by_node
    assert most_at_once([r.journal for r in results]) <= 6


async def test_a_node_killed_loses_nothing_and_its_agents_are_taken_over(
    start_node: StartNode, engine: Engine, tmp_path: Path
) -> None:
    started = {name: start_node(name) for name in ("n1", "n2", "n3")}
    run_ids = []
    for number in range(4):
        task = json.dumps({"steps": ["report"], "sleep": 4, "output": number})
        spawn = SpawnSubagentInput(prompt=task, agent="durable", key=f"long-{number}", cwd=str(tmp_path))
        run_ids.append((await engine.subagents.spawn(spawn)).run.run_id)
    live = [
        await until(engine, run_id, lambda r: r.process is not None and r.process.state == AgentState.LIVE)
        for run_id in run_ids
    ]
    for run_id in run_ids:  # what the agents did before the crash: it must survive it
        await engine.runs.checkpoint(CheckpointInput(run_id=run_id, step="before-crash", output={"kept": run_id}))

    # The machine of the first agent's node is lost: its server and every process it started die at once.
    victim = live[0].process.host  # type: ignore[union-attr]
    os.kill(started[victim].process.pid, signal.SIGKILL)
    lost = [r.run.run_id for r in live if r.process.host == victim]  # type: ignore[union-attr]
    for result in live:
        if result.process.host == victim:  # type: ignore[union-attr]
            os.killpg(result.process.pgid, signal.SIGKILL)  # type: ignore[arg-type, union-attr]
            os.kill(result.process.pid, signal.SIGKILL)  # type: ignore[arg-type, union-attr]

    for run_id in run_ids:
        result = await until(engine, run_id, lambda r: r.run.status.terminal, timeout=60)
        assert result.run.status == RunStatus.COMPLETED, result.run.error
        steps = {step.step: step for step in result.steps}
        assert steps["before-crash"].output == {"kept": run_id}
        hosts = [entry.detail["host"] for entry in entries(result.journal, "process_started")]
        if run_id in lost:
            assert hosts[0] == victim and len(hosts) == 2 and hosts[1] != victim, hosts
            assert entries(result.journal, "process_exited")[0].detail["how"] == "lost"
        else:
            assert len(hosts) == 1 and hosts[0] != victim, hosts


async def test_connections_dropped_mid_work_lose_no_acknowledged_checkpoint(
    start_node: StartNode, pg_db: str, private_state_dir: Path
) -> None:
    """The server's PostgreSQL connections are terminated again and again while a client checkpoints:
    each call either succeeds (its step is stored, once) or fails with a message that says what is
    known; no acknowledged step is missing afterwards."""
    import asyncpg

    node = start_node("n1")
    database = pg_db.split("?")[0]
    terminated = 0

    async def drop_connections(stop: anyio.Event) -> None:
        nonlocal terminated
        admin = await asyncpg.connect(database)
        try:
            while not stop.is_set():
                terminated += await admin.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND application_name = 'mcp-orchestrator'"
                )
                await anyio.sleep(0.05)
        finally:
            await admin.close()

    acknowledged: dict[str, int] = {}
    failures: list[str] = []
    async with http_client(node.url, http_token(private_state_dir)) as client:
        run_id = (await call(client, "start_run", name="under-fire"))["run"]["run_id"]
        stop = anyio.Event()
        async with anyio.create_task_group() as group:
            group.start_soon(drop_connections, stop)
            for number in range(150):
                result = await client.call_tool(
                    "checkpoint", {"run_id": run_id, "step": f"s{number}", "output": number}
                )
                if result.is_error:
                    failures.append(result.content[0].text)
                else:
                    acknowledged[f"s{number}"] = number
            stop.set()
        stored = await all_steps(client, run_id)
    assert terminated >= 10  # the connections really were dropped, many times
    by_name = {step["step"]: step["output"] for step in stored}
    assert len(by_name) == len(stored)  # no step twice
    for step, output in acknowledged.items():
        assert by_name[step] == output
    for message in failures:  # rare: a COMMIT cut off; the caller is told the outcome is unknown
        assert "may or may not have been made" in message, message
    assert len(acknowledged) >= 140, failures
