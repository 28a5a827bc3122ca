"""Retrying a failed or cancelled run: from its last completed step, with new attempts for what failed."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcp_orchestrator.errors import RunTerminal
from mcp_orchestrator.models import (
    AgentState,
    CancelRunInput,
    CheckpointInput,
    FinishRunInput,
    RetryPolicy,
    RetryRunInput,
    RunStatus,
    SendEventInput,
    SpawnSubagentInput,
    StartRunInput,
    StatusInput,
    WaitForEventInput,
)
from mcp_orchestrator.runtime import Engine

from .support import Clock, cli

pytestmark = pytest.mark.anyio


async def test_a_failed_run_retries_from_its_last_completed_step(engine: Engine) -> None:
    run = (await engine.runs.start_run(StartRunInput(name="deploy", retry=RetryPolicy(max_attempts=1)))).run
    await engine.runs.checkpoint(CheckpointInput(run_id=run.run_id, step="build", output={"image": "v1"}))
    failed = await engine.runs.checkpoint(CheckpointInput(run_id=run.run_id, step="push", error="registry down"))
    assert failed.step.status == "failed"
    await engine.runs.finish_run(FinishRunInput(run_id=run.run_id, error="push failed"))

    retried = await engine.runs.retry_run(RetryRunInput(run_id=run.run_id, reason="registry is back"))
    assert retried.run.status == RunStatus.RUNNING and retried.run.error is None and retried.run.ended_at is None
    assert retried.reset_steps == ["push"]
    build = await engine.runs.checkpoint(CheckpointInput(run_id=run.run_id, step="build", begin=True))
    assert build.replayed and build.step.output == {"image": "v1"}  # completed work stays done
    push = await engine.runs.checkpoint(CheckpointInput(run_id=run.run_id, step="push", begin=True))
    assert not push.replayed and push.previous_outcome == "failed" and push.step.attempt == 2
    await engine.runs.checkpoint(CheckpointInput(run_id=run.run_id, step="push", output="pushed"))
    done = await engine.runs.finish_run(FinishRunInput(run_id=run.run_id, output="deployed"))
    assert done.run.status == RunStatus.COMPLETED
    journal = (await engine.runs.status(StatusInput(run_id=run.run_id))).journal
    retry_entry = next(entry for entry in journal if entry.kind == "run_retried")
    assert retry_entry.detail == {"from": "failed", "reason": "registry is back", "reset_steps": ["push"]}

    with pytest.raises(RunTerminal, match="start a new run"):
        await engine.runs.retry_run(RetryRunInput(run_id=run.run_id))
    live = (await engine.runs.start_run(StartRunInput(name="live"))).run
    with pytest.raises(RunTerminal, match="still live"):
        await engine.runs.retry_run(RetryRunInput(run_id=live.run_id))


async def test_a_cancelled_wait_starts_over_and_a_deadline_is_renewed(engine: Engine) -> None:
    clock = Clock()
    engine._clock = clock
    run = (await engine.runs.start_run(StartRunInput(name="review", timeout_s=60))).run
    waiting = WaitForEventInput(run_id=run.run_id, step="approval", event="approved", block_s=0)
    assert (await engine.events.wait_for_event(waiting)).status == "waiting"
    await engine.runs.cancel_run(CancelRunInput(run_id=run.run_id))
    clock.advance(600)
    retried = await engine.runs.retry_run(RetryRunInput(run_id=run.run_id))
    assert retried.reset_steps == ["approval"]
    assert retried.run.deadline_at == clock() + (run.deadline_at - run.created_at)  # type: ignore[operator]
    assert (await engine.events.wait_for_event(waiting)).status == "waiting"  # registered afresh
    await engine.events.send_event(SendEventInput(name="approved", data={"by": "ana"}))
    received = await engine.events.wait_for_event(waiting)
    assert received.status == "received" and received.event is not None and received.event.data == {"by": "ana"}


async def test_a_cancelled_subagent_is_queued_again(engine: Engine, tmp_path: Path) -> None:
    spawn = SpawnSubagentInput(prompt="work", agent="command", command=["true"], cwd=str(tmp_path))
    run_id = (await engine.subagents.spawn(spawn)).run.run_id
    await engine.runs.cancel_run(CancelRunInput(run_id=run_id))
    await engine.subagents.claim()  # retires the cancelled agent
    retried = await engine.runs.retry_run(RetryRunInput(run_id=run_id))
    assert retried.run.status == RunStatus.QUEUED
    (launch,) = await engine.subagents.claim()
    assert launch.agent.run_id == run_id and launch.agent.state == AgentState.STARTING and launch.agent.failures == 0


@pytest.mark.processes
async def test_retry_from_the_cli(engine: Engine, db: str) -> None:
    run = (await engine.runs.start_run(StartRunInput(name="nightly"))).run
    await engine.runs.finish_run(FinishRunInput(run_id=run.run_id, error="flaky network"))
    printed = cli(db, "retry", run.run_id, "--reason", "network is back")
    assert printed.stdout.strip() == f"run {run.run_id} is running again"
    assert (await engine.runs.status(StatusInput(run_id=run.run_id))).run.status == RunStatus.RUNNING
    refused = cli(db, "retry", run.run_id, check=False)
    assert refused.returncode == 1 and "still live" in refused.stderr
