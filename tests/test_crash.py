"""Crash safety: SIGKILL a server mid-work; every acknowledged checkpoint is still there, once."""

from __future__ import annotations

import json
import os
import random
import signal
from typing import Any

import anyio
import pytest
from mcp import Client

from mcp_orchestrator.store import is_postgres

from .support import all_steps, query, server_pids, stdio_server

pytestmark = [pytest.mark.anyio, pytest.mark.processes]

WRITERS = 4


@pytest.mark.parametrize("seed", [11, 22, 33])
async def test_sigkill_loses_no_acknowledged_checkpoint(db: str, seed: int) -> None:
    rng = random.Random(seed)
    acknowledged: dict[str, Any] = {}

    with anyio.fail_after(60):
        async with Client(stdio_server(db)) as client:
            started = await client.call_tool("start_run", {"name": "crash", "key": "crash"})
            run_id = started.structured_content["run"]["run_id"]
            (pid,) = server_pids(db)

            async def checkpoint_forever(writer: int) -> None:
                for i in range(1_000_000):
                    step = f"w{writer}-{i}"
                    output = {"writer": writer, "i": i, "pad": "x" * rng.randint(0, 3000)}
                    try:
                        result = await client.call_tool(
                            "checkpoint", {"run_id": run_id, "step": step, "output": output}
                        )
                    except Exception:
                        return  # the server died: this call was never acknowledged
                    if result.is_error:
                        return
                    acknowledged[step] = output

            async def kill_at_random() -> None:
                await anyio.sleep(rng.uniform(0.3, 1.5))
                os.kill(pid, signal.SIGKILL)

            try:
                async with anyio.create_task_group() as group:
                    group.start_soon(kill_at_random)
                    for writer in range(WRITERS):
                        group.start_soon(checkpoint_forever, writer)
            except Exception:
                pass  # the transport reports the dead server on its way out
    assert len(acknowledged) > 10, "the server was killed before any work was acknowledged"

    if not is_postgres(db):
        assert query(db, "PRAGMA integrity_check") == [("ok",)]

    async with Client(stdio_server(db)) as client:
        resumed = await client.call_tool("start_run", {"name": "crash", "key": "crash"})
        assert resumed.structured_content["created"] is False
        every_step = await all_steps(client, run_id)
    # status shows at most 1000 journal entries; read the whole journal from the store.
    completions = [step for (step,) in query(db, "SELECT step FROM journal WHERE kind = 'step_completed'")]
    stored = dict(query(db, f"SELECT step, output FROM steps WHERE run_id = '{run_id}'"))

    steps = {step["step"]: step for step in every_step}
    assert set(steps) == set(stored)
    for step, output in acknowledged.items():  # status previews long outputs: compare what is stored
        value = stored[step]
        assert (
            steps[step]["status"] == "completed" and (json.loads(value) if isinstance(value, str) else value) == output
        )
    unacknowledged = set(steps) - set(acknowledged)
    assert len(unacknowledged) <= WRITERS, "only calls in flight at the kill may have landed unanswered"
    assert sorted(completions) == sorted(steps), "each stored step is journaled exactly once"
