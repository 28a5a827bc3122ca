"""Traces: spans for runs and step attempts, built from the journal, exported once each."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from mcp_orchestrator.models import CheckpointInput, FinishRunInput, RetryPolicy, StartRunInput
from mcp_orchestrator.runtime import Engine
from mcp_orchestrator.services.tracing import export_spans, exporter_from_environment

pytestmark = pytest.mark.anyio


class Unavailable(SpanExporter):
    def export(self, spans: object) -> SpanExportResult:
        return SpanExportResult.FAILURE


async def test_one_span_per_run_and_step_attempt_in_one_trace(engine: Engine) -> None:
    parent = (await engine.runs.start_run(StartRunInput(name="release", retry=RetryPolicy(max_attempts=3)))).run
    child = (await engine.runs.start_run(StartRunInput(name="notes", parent_run_id=parent.run_id))).run
    await engine.runs.checkpoint(CheckpointInput(run_id=parent.run_id, step="build", begin=True))
    await engine.runs.checkpoint(CheckpointInput(run_id=parent.run_id, step="build", error="compiler crashed"))
    await engine.runs.checkpoint(CheckpointInput(run_id=parent.run_id, step="build", output={"image": "v3"}))
    await engine.runs.finish_run(FinishRunInput(run_id=child.run_id, error="no changelog"))

    assert await export_spans(engine, Unavailable()) == 0  # a collector that is down loses nothing
    exporter = InMemorySpanExporter()
    assert await export_spans(engine, exporter) == 3
    await engine.runs.finish_run(FinishRunInput(run_id=parent.run_id, output="shipped"))
    assert await export_spans(engine, exporter) == 1
    assert await export_spans(engine, InMemorySpanExporter()) == 0  # the cursor is in the store: never twice

    spans = {span.name + " " + str(span.attributes.get("mcp_orchestrator.attempt", "")): span
             for span in exporter.get_finished_spans()}  # fmt: skip
    assert set(spans) == {"step build 1", "step build 2", "run notes ", "run release "}
    release, notes = spans["run release "], spans["run notes "]
    assert release.status.status_code == StatusCode.OK and notes.status.status_code == StatusCode.ERROR
    assert notes.parent is not None and notes.parent.span_id == release.context.span_id  # child under parent
    assert {span.context.trace_id for span in spans.values()} == {release.context.trace_id}  # one trace
    first, second = spans["step build 1"], spans["step build 2"]
    assert first.attributes["outcome"] == "retrying" and second.attributes["outcome"] == "completed"
    assert first.parent is not None and first.parent.span_id == release.context.span_id
    assert second.attributes["mcp_orchestrator.run_id"] == parent.run_id
    assert second.end_time >= second.start_time and release.end_time > release.start_time


def test_the_exporter_is_chosen_by_the_standard_environment() -> None:
    assert exporter_from_environment({}) is None
    exporter = exporter_from_environment({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert type(exporter).__name__ == "OTLPSpanExporter"
    exporter.shutdown()
