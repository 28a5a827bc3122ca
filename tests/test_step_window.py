"""A long run's steps are read in part. A status reads whole only the steps its answer can show
(``steps_window``), and answers exactly as if it had read every step: a run of thousands of steps costs a
page, not every output it ever recorded. The permission check and budget pauses read only the steps of
their kind."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_orchestrator.models import (
    CheckpointInput,
    Run,
    RunStatus,
    StartRunInput,
    StatusInput,
    StatusResult,
    Step,
    StepStatus,
)
from mcp_orchestrator.runtime import Engine
from mcp_orchestrator.services.sizing import (
    STEP_BYTES_MIN,
    RunSteps,
    StepsLeftOut,
    fit_status,
    json_size,
    page_steps,
    shown_step,
    steps_window,
)

AT = datetime(2026, 1, 1, tzinfo=UTC)
KINDS = ("checkpoint", "event", "sleep", "runs", "approval", "budget")


def step(index: int, output: Any, status: StepStatus = StepStatus.COMPLETED) -> Step:
    return Step(step=f"s{index}", status=status, attempt=1, output=output, started_at=AT)


def test_no_step_is_shown_in_fewer_bytes_than_the_window_assumes() -> None:
    for kind in KINDS:
        for status in StepStatus:
            for output in (None, 0, "", [], {}):
                smallest = Step(step="a", kind=kind, status=status, attempt=1, output=output, started_at=AT)
                for outputs in (True, False):
                    assert json_size(shown_step(smallest, outputs=outputs)) >= STEP_BYTES_MIN


def test_a_page_that_needs_a_step_left_out_says_so() -> None:
    steps = [step(index, "o") for index in range(10)]
    read = RunSteps([(s.step, s.status) for s in steps], steps[6:], start=6)
    assert [s.step for s in page_steps(read, limit=4).steps] == ["s6", "s7", "s8", "s9"]
    with pytest.raises(StepsLeftOut):
        page_steps(read, limit=5)


outputs = st.one_of(
    st.none(), st.integers(0, 9), st.text(max_size=3), st.builds(lambda n: "x" * n, st.integers(0, 3000))
)


@settings(max_examples=150, deadline=None)
@given(
    given_outputs=st.lists(outputs, max_size=400),
    statuses=st.lists(st.sampled_from(list(StepStatus)), min_size=400, max_size=400),
    before=st.one_of(st.none(), st.integers(0, 420)),
    limit=st.one_of(st.none(), st.integers(1, 60)),
    budget=st.one_of(st.none(), st.sampled_from([8 * 1024, 24 * 1024, 64 * 1024])),
    with_outputs=st.booleans(),
)
def test_a_read_of_the_window_answers_as_a_read_of_every_step(
    given_outputs: list[Any],
    statuses: list[StepStatus],
    before: int | None,
    limit: int | None,
    budget: int | None,
    with_outputs: bool,
) -> None:
    steps = [step(index, output, statuses[index]) for index, output in enumerate(given_outputs)]
    start, end = steps_window(len(steps), before=before, limit=limit, budget=budget)
    windowed = RunSteps([(s.step, s.status) for s in steps], steps[start:end], start)
    every = RunSteps.of(steps)
    if budget is None:
        assert page_steps(windowed, before=before, limit=limit, outputs=with_outputs) == page_steps(
            every, before=before, limit=limit, outputs=with_outputs
        )
        return
    run = Run(run_id="r", name="n", status=RunStatus.RUNNING, created_at=AT, updated_at=AT)
    result = StatusResult(run=run, steps=[], journal=[])
    fitted = fit_status(result, windowed, budget, before=before, limit=limit, outputs=with_outputs)
    assert fitted == fit_status(result, every, budget, before=before, limit=limit, outputs=with_outputs)


@pytest.mark.anyio
async def test_a_long_runs_status_is_the_one_a_read_of_every_step_gives(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On both stores: the same answers with the window as with every step read whole."""
    run_id = (await engine.runs.start_run(StartRunInput(name="long"))).run.run_id
    for index in range(400):
        await engine.runs.checkpoint(CheckpointInput(run_id=run_id, step=f"s{index}", output="o" * (index % 7 * 300)))
    names = await engine.store.read(lambda tx: tx.step_names(run_id))
    assert names == [(f"s{index}", StepStatus.COMPLETED) for index in range(400)]
    window = await engine.store.read(lambda tx: tx.steps_at(run_id, 390, 20))
    assert [s.step for s in window] == [f"s{index}" for index in range(390, 400)]
    assert window[-1].output == "o" * (399 % 7 * 300)
    asked = [
        (StatusInput(run_id=run_id), 24 * 1024),
        (StatusInput(run_id=run_id, steps_cursor="150", steps_limit=20), 24 * 1024),
        (StatusInput(run_id=run_id, include_outputs=False), 8 * 1024),
        (StatusInput(run_id=run_id, steps_limit=30), None),
        (StatusInput(run_id=run_id, steps_cursor="7"), None),
    ]
    windowed = [await engine.runs.status(question, budget=budget) for question, budget in asked]
    monkeypatch.setattr("mcp_orchestrator.services.runs.steps_window", lambda total, **_: (0, total))
    every = [await engine.runs.status(question, budget=budget) for question, budget in asked]
    assert windowed == every
    assert [answer.steps_total for answer in windowed] == [400] * len(asked)
    assert [len(answer.steps) for answer in windowed[3:]] == [30, 7]


@pytest.mark.anyio
async def test_the_steps_of_one_kind_are_read_alone_in_their_order(engine: Engine) -> None:
    run_id = (await engine.runs.start_run(StartRunInput(name="mixed"))).run.run_id
    kinds = ["checkpoint", "approval", "checkpoint", "budget", "approval", "checkpoint", "budget"]

    def record(tx: Any) -> None:
        for index, kind in enumerate(kinds):
            tx.save_step(run_id, Step(step=f"{kind}-{index}", kind=kind, status="completed", attempt=1, started_at=AT))

    await engine.store.write(record)
    for kind in ("approval", "budget", "checkpoint", "sleep"):
        found = await engine.store.read(lambda tx, kind=kind: tx.list_steps(run_id, kind=kind))
        assert [step.step for step in found] == [f"{k}-{i}" for i, k in enumerate(kinds) if k == kind]
    every = await engine.store.read(lambda tx: tx.list_steps(run_id))
    assert [step.kind for step in every] == kinds
