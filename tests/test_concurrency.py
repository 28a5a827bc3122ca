"""Several server processes on one store, as several Claude Code sessions would run them."""

from __future__ import annotations

import anyio
import pytest
from mcp import Client

from mcp_orchestrator.store import is_postgres

from .support import all_steps, cli, query, stdio_server

pytestmark = [pytest.mark.anyio, pytest.mark.processes]

STEPS = 60


async def test_two_servers_write_one_store_at_once(db: str) -> None:
    errors: list[str] = []
    async with Client(stdio_server(db)) as one, Client(stdio_server(db)) as two:
        shared = (await one.call_tool("start_run", {"name": "shared"})).structured_content["run"]["run_id"]
        own = {
            "one": (await one.call_tool("start_run", {"name": "own"})).structured_content["run"]["run_id"],
            "two": (await two.call_tool("start_run", {"name": "own"})).structured_content["run"]["run_id"],
        }

        async def checkpoints(client: Client, name: str, run_id: str, prefix: str) -> None:
            for i in range(STEPS):
                result = await client.call_tool("checkpoint", {"run_id": run_id, "step": f"{prefix}-{i}", "output": i})
                if result.is_error:
                    errors.append(result.content[0].text)

        async with anyio.create_task_group() as group:
            for name, client in (("one", one), ("two", two)):
                for lane in range(2):
                    group.start_soon(checkpoints, client, name, shared, f"{name}-{lane}")
                    group.start_soon(checkpoints, client, name, own[name], f"own-{lane}")
                # A person at the terminal reads while the agents write.
                group.start_soon(anyio.to_thread.run_sync, lambda: cli(db, "runs", "--json"))

        assert errors == []
        assert len(await all_steps(one, shared)) == 4 * STEPS

    assert query(db, "SELECT count(*) FROM steps") == [(8 * STEPS,)]
    assert query(db, "SELECT count(*) FROM journal WHERE kind = 'step_completed'") == [(8 * STEPS,)]
    if not is_postgres(db):
        assert query(db, "PRAGMA integrity_check") == [("ok",)]


async def test_two_servers_racing_on_the_same_steps_agree_on_one_outcome(db: str) -> None:
    async with Client(stdio_server(db)) as one, Client(stdio_server(db)) as two:
        run_id = (await one.call_tool("start_run", {"name": "race"})).structured_content["run"]["run_id"]
        outcomes: dict[str, list[dict]] = {}

        async def complete_all(client: Client, who: str) -> None:
            for i in range(STEPS // 2):
                result = await client.call_tool("checkpoint", {"run_id": run_id, "step": f"s{i}", "output": who})
                outcomes.setdefault(f"s{i}", []).append(result.structured_content)

        async with anyio.create_task_group() as group:
            group.start_soon(complete_all, one, "one")
            group.start_soon(complete_all, two, "two")

    for step, answers in outcomes.items():
        assert sorted(answer["replayed"] for answer in answers) == [False, True], step
        assert answers[0]["step"]["output"] == answers[1]["step"]["output"], step
    assert query(db, "SELECT count(*) FROM journal WHERE kind = 'step_completed'") == [(STEPS // 2,)]
