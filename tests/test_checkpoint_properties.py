"""Property-style tests of checkpoint semantics: random sequences against a reference model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anyio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcp_orchestrator.errors import StepFailed
from mcp_orchestrator.models import CheckpointInput, RetryPolicy, StartRunInput, StatusInput, StepStatus
from mcp_orchestrator.runtime import Engine

from .support import open_store


@dataclass
class Expected:
    """What the checkpoint rules say one step should look like."""

    status: StepStatus | None = None
    attempt: int = 0
    output: Any = None

    def apply(self, op: str, value: int, retryable: bool, max_attempts: int) -> str:
        """Returns 'replayed', 'error' (StepFailed) or 'ok'."""
        if self.status == StepStatus.COMPLETED:
            return "replayed"
        if self.status == StepStatus.FAILED:
            return "replayed" if op == "fail" else "error"
        attempt = self.attempt if self.status == StepStatus.STARTED else self.attempt + 1
        if op == "begin":
            self.status, self.attempt = StepStatus.STARTED, self.attempt + 1
        elif op == "complete":
            self.status, self.attempt, self.output = StepStatus.COMPLETED, attempt, value
        else:
            self.attempt = attempt
            exhausted = attempt >= max_attempts or not retryable
            self.status = StepStatus.FAILED if exhausted else StepStatus.RETRYING
        return "ok"


operations = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),
        st.sampled_from(["begin", "complete", "fail"]),
        st.integers(0, 1000),
        st.booleans(),
    ),
    min_size=1,
    max_size=25,
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(ops=operations, max_attempts=st.integers(1, 4))
def test_checkpoints_follow_the_rules(db: str, ops: list[tuple[str, str, int, bool]], max_attempts: int) -> None:
    # Every example shares the test's store: each works on a run of its own, and looks only at it.
    anyio.run(check_sequence, db, ops, max_attempts)


async def check_sequence(db: str, ops: list[tuple[str, str, int, bool]], max_attempts: int) -> None:
    async with open_store(db) as store:
        engine = Engine(store)
        run = await engine.runs.start_run(
            StartRunInput(name="p", retry=RetryPolicy(max_attempts=max_attempts, initial_backoff_s=0, max_backoff_s=0))
        )
        run_id = run.run.run_id
        expected = {name: Expected() for name in "abc"}
        completed_outputs: dict[str, Any] = {}
        for name, op, value, retryable in ops:
            verdict = expected[name].apply(op, value, retryable, max_attempts)
            fields: dict[str, Any] = {"begin": True} if op == "begin" else {}
            if op == "complete":
                fields = {"output": value}
            elif op == "fail":
                fields = {"error": f"e{value}", "retryable": retryable}
            try:
                result = await engine.runs.checkpoint(CheckpointInput(run_id=run_id, step=name, **fields))
            except StepFailed:
                assert verdict == "error", (name, op)
                continue
            assert verdict != "error", (name, op)
            assert result.replayed == (verdict == "replayed"), (name, op)
            assert (result.step.status, result.step.attempt) == (expected[name].status, expected[name].attempt)
            if result.step.status == StepStatus.COMPLETED:
                # A completed step never changes: the first output stays.
                completed_outputs.setdefault(name, result.step.output)
                assert result.step.output == completed_outputs[name] == expected[name].output

        status = await engine.runs.status(StatusInput(run_id=run_id, journal_limit=1000))
        stored = {step.step: step for step in status.steps}
        for name, want in expected.items():
            if want.status is None:
                assert name not in stored
                continue
            assert (stored[name].status, stored[name].attempt) == (want.status, want.attempt)
            completions = [j for j in status.journal if j.kind == "step_completed" and j.step == name]
            assert len(completions) == (1 if want.status == StepStatus.COMPLETED else 0)
        seqs = [entry.seq for entry in status.journal]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
