"""Schedules fired by real processes sharing one store: exactly once, through a SIGKILL, across restarts."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from itertools import pairwise
from pathlib import Path

import anyio
import pytest
from mcp import Client

from mcp_orchestrator.models import ListSchedulesInput, ScheduleInput
from mcp_orchestrator.runtime import Engine

from .subagent_helpers import engine_on, write_config
from .support import call, eventually, lease_holder, server_env, stdio_server

pytestmark = [pytest.mark.anyio, pytest.mark.processes]


Supervisor = Callable[[], "subprocess.Popen[bytes]"]


@pytest.fixture
def supervisor(db: str, tmp_path: Path) -> Iterator[Supervisor]:
    """Starts ``mcp-orchestrator supervise`` processes on the test's store (with quick leases)."""
    started: list[subprocess.Popen[bytes]] = []
    env = server_env(MCP_ORCHESTRATOR_CONFIG=str(write_config(tmp_path)))

    def start() -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "mcp_orchestrator", "supervise", "--db", db]
        started.append(subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL))
        return started[-1]

    yield start
    for process in started:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=10)


async def holder_pid(engine: Engine) -> int:
    while (holder := await lease_holder(engine)) is None:
        await anyio.sleep(0.05)
    return int(holder.split(":")[-2])


async def test_three_processes_fire_each_due_time_once_through_a_sigkill(
    db: str, tmp_path: Path, supervisor: Supervisor
) -> None:
    processes = [supervisor() for _ in range(3)]
    async with engine_on(db, write_config(tmp_path)) as engine:
        action = {"type": "send_event", "name": "beat"}
        await engine.schedules.schedule(ScheduleInput.model_validate({"name": "beat", "every_s": 1, "action": action}))
        first = await holder_pid(engine)
        await anyio.sleep(3)
        killed_at = engine.now()
        next(p for p in processes if p.pid == first).send_signal(signal.SIGKILL)
        while (second := await holder_pid(engine)) == first:
            await anyio.sleep(0.05)
        await anyio.sleep(3)
        await engine.schedules.set_enabled("beat", False)
        firings = sorted(await engine.schedules.history("beat", 1000), key=lambda firing: firing.due_at)

    assert second != first and all(firing.outcome == "sent" for firing in firings)
    dues = [firing.due_at for firing in firings]
    assert len(dues) >= 6 and len(set(dues)) == len(dues)
    assert all(later - earlier == timedelta(seconds=1) for earlier, later in pairwise(dues))  # no gap
    events = {event_id for event_id in (firing.event_id for firing in firings) if event_id}
    assert len(events) == len(firings)
    # Due times that came while nobody held the lease fired late by at most its expiry plus a tick.
    lateness = [(f.fired_at - f.due_at).total_seconds() for f in firings if f.due_at > killed_at]
    assert lateness and max(lateness) <= 3 + 1 + 1, lateness
    on_time = [(f.fired_at - f.due_at).total_seconds() for f in firings if f.due_at < killed_at]
    assert max(on_time) < 1, on_time


async def test_schedules_survive_a_restart_of_every_process_and_skip_overlaps(
    db: str, tmp_path: Path, supervisor: Supervisor
) -> None:
    spawn = {"type": "spawn_subagent", "prompt": "slow", "agent": "command", "command": ["sleep", "3"]}
    async with Client(stdio_server(db)) as client:  # a session creates it, then ends
        created = await call(client, "schedule", name="slow", every_s=1, action=spawn, overlap="skip")
        assert created["created"] and len(created["next_due"]) == 3
        refused = await client.call_tool("schedule", {"name": "x", "cron": "0 25 * * *", "action": spawn})
        assert refused.is_error and "has hour 25, out of range" in refused.content[0].text
    supervisor()
    async with engine_on(db, write_config(tmp_path)) as engine:

        async def spawned_and_skipped() -> bool:  # a 3 s agent, due every second: the next firings skip
            outcomes = {firing.outcome for firing in await engine.schedules.history("slow")}
            return {"spawned", "skipped"} <= outcomes

        await eventually(spawned_and_skipped, timeout=30, interval=0.1)  # however slowly the process starts
        await engine.schedules.set_enabled("slow", False)
        (listed,) = (await engine.schedules.list(ListSchedulesInput())).schedules
        history = sorted(await engine.schedules.history("slow"), key=lambda firing: firing.due_at)
    outcomes = [firing.outcome for firing in history]
    assert outcomes[0] == "spawned" and "skipped" in outcomes, outcomes  # a 3 s agent, due every second
    spawned = [firing.run_id for firing in history if firing.outcome == "spawned"]
    assert len(spawned) == len(set(spawned)) <= 2
    assert listed.firings == len(history) and not listed.enabled
