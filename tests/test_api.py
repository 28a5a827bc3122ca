"""The JSON API over real HTTP, checked against the store (read through an engine on the same store)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest

from mcp_orchestrator.models import (
    CheckpointInput,
    FinishRunInput,
    ListEventsInput,
    ListRunsInput,
    ScheduleInput,
    SendEventInput,
    StartRunInput,
    StatusInput,
)
from mcp_orchestrator.runtime import Engine

from .support import http_token

pytestmark = [pytest.mark.anyio, pytest.mark.processes]


@pytest.fixture
async def api(http_server: Callable[..., str], private_state_dir: Path) -> AsyncIterator[httpx2.AsyncClient]:
    base = http_server()
    headers = {"Authorization": f"Bearer {http_token(private_state_dir)}", "Content-Type": "application/json"}
    async with httpx2.AsyncClient(base_url=base, headers=headers) as client:
        yield client


async def get(api: httpx2.AsyncClient, path: str, **params: Any) -> Any:
    response = await api.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def test_runs_run_events_and_schedules_match_the_store(engine: Engine, api: httpx2.AsyncClient) -> None:
    parent = (await engine.runs.start_run(StartRunInput(name="release", labels={"repo": "api"}))).run
    child = (await engine.runs.start_run(StartRunInput(name="notes", parent_run_id=parent.run_id))).run
    await engine.runs.checkpoint(CheckpointInput(run_id=parent.run_id, step="build", output={"image": "v2"}))
    await engine.runs.finish_run(FinishRunInput(run_id=child.run_id, output="written"))
    await engine.events.send_event(SendEventInput(name="deploy.done", data={"ok": True}, id="d-1"))
    await engine.schedules.schedule(
        ScheduleInput.model_validate(
            {"name": "nightly", "cron": "0 2 * * *", "action": {"type": "send_event", "name": "n"}}
        )
    )

    listed = await get(api, "/api/runs", status=["running", "completed"], limit=1)
    stored = await engine.runs.list_runs(ListRunsInput(status=["running", "completed"], limit=1))
    assert listed == stored.model_dump(mode="json")
    assert listed["next_cursor"] is not None
    assert [run["name"] for run in (await get(api, "/api/runs", label="repo=api"))["runs"]] == ["release"]
    assert [run["run_id"] for run in (await get(api, "/api/runs", parent=parent.run_id))["runs"]] == [child.run_id]

    shown = await get(api, f"/api/runs/{parent.run_id}", journal=5)
    stored_status = await engine.runs.status(StatusInput(run_id=parent.run_id, journal_limit=5))
    assert shown == stored_status.model_dump(mode="json")
    assert shown["steps"][0]["output"] == {"image": "v2"} and shown["children"][0]["status"] == "completed"

    events = await get(api, "/api/events")
    assert events == (await engine.events.list_events(ListEventsInput())).model_dump(mode="json")
    assert events["events"][0]["event_id"] == "d-1"
    schedules = (await get(api, "/api/schedules"))["schedules"]
    assert [s["name"] for s in schedules] == ["nightly"] and len(schedules[0]["upcoming"]) == 3


async def test_actions_cancel_retry_pause_resume(engine: Engine, api: httpx2.AsyncClient) -> None:
    run = (await engine.runs.start_run(StartRunInput(name="long"))).run
    cancelled = await api.post(f"/api/runs/{run.run_id}/cancel", json={"reason": "from the API"})
    assert cancelled.status_code == 200 and cancelled.json()["cancelled_run_ids"] == [run.run_id]
    assert (await engine.runs.status(StatusInput(run_id=run.run_id))).run.error == {"reason": "from the API"}
    retried = await api.post(f"/api/runs/{run.run_id}/retry")
    assert retried.status_code == 200 and retried.json()["run"]["status"] == "running"

    await engine.schedules.schedule(
        ScheduleInput.model_validate({"name": "beat", "every_s": 60, "action": {"type": "send_event", "name": "b"}})
    )
    paused = await api.post("/api/schedules/beat/pause")
    assert paused.status_code == 200 and paused.json()["enabled"] is False
    assert (await api.post("/api/schedules/beat/resume")).json()["enabled"] is True


async def test_bad_requests_say_what_is_wrong(api: httpx2.AsyncClient) -> None:
    for method, path, body, status, code in [
        ("GET", "/api/runs/nope", None, 404, "run_not_found"),
        ("GET", "/api/runs?limit=0", None, 400, "invalid_input"),
        ("GET", "/api/runs?colour=red", None, 400, "invalid_input"),
        ("POST", "/api/runs/nope/cancel", None, 404, "run_not_found"),
        ("POST", "/api/schedules/nope/pause", None, 400, "invalid_input"),
        ("POST", "/api/runs/x/retry", b"[1]", 400, "invalid_input"),
    ]:
        response = await api.request(method, path, content=body)
        assert (response.status_code, response.json()["error"]) == (status, code), (path, response.text)
        assert response.json()["message"]
    response = await api.get("/api/runs", headers={"Authorization": "Bearer wrong"})
    assert response.status_code == 401
