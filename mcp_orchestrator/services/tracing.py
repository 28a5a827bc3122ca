"""Traces: one OpenTelemetry span per run and per step attempt, exported over OTLP when configured.

The journal is the source: the lease holder reads the entries that end a run or a step attempt
after its cursor (kept in the store, so no span is lost or sent twice when the holder changes, and
work done while nothing exported is sent later), builds finished spans and hands them to the
exporter. Ids are derived from run ids, so a child run's span is the child of its parent run's
span even though the parent's is exported later, and one tree of runs is one trace.

Enabled when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) is set and the ``otel``
extra is installed (``pip install 'mcp-orchestrator[otel]'``); the exporter reads the standard
``OTEL_*`` variables itself.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..models import Activity, JournalEntry, Run, Step
from ..store.base import Transaction
from .context import Context

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger(__name__)

CURSOR = "otel"
RUN_ENDS = {
    "run_completed": "completed",
    "run_failed": "failed",
    "run_cancelled": "cancelled",
    "run_timed_out": "failed",
}
STEP_ENDS = {"step_completed": "completed", "attempt_failed": "retrying", "step_failed": "failed"}
BATCH = 500
ACTIVITY_EVENTS = 128  # the latest activity entries of a sub-agent's run become its span's events


def exporter_from_environment(environ: Mapping[str, str] | None = None) -> SpanExporter | None:
    """An OTLP/HTTP exporter when the environment asks for one, else None."""
    env = os.environ if environ is None else environ
    if not (env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        log.warning("OTEL_EXPORTER_OTLP_ENDPOINT is set but the otel extra is not installed: no traces")
        return None
    return OTLPSpanExporter()


async def export_spans(context: Context, exporter: SpanExporter) -> int:
    """Export the spans of what ended since the cursor; returns how many. On an export failure the
    cursor stays, and the same spans are sent again next time."""
    from opentelemetry.sdk.trace.export import SpanExportResult

    sent = 0
    while True:
        cursor = await context.store.read(lambda tx: tx.get_cursor(CURSOR))
        entries, spans = await context.store.read(functools.partial(_spans_after, cursor=cursor))
        if not entries:
            return sent
        if spans and await asyncio.to_thread(exporter.export, spans) != SpanExportResult.SUCCESS:
            log.warning("exporting %d span(s) failed; they are retried later", len(spans))
            return sent
        await context.store.write(functools.partial(_set_cursor, seq=entries[-1].seq))
        sent += len(spans)


def _set_cursor(tx: Transaction, seq: int) -> None:
    tx.set_cursor(CURSOR, seq)


def _spans_after(tx: Transaction, cursor: int) -> tuple[list[JournalEntry], list[ReadableSpan]]:
    entries = tx.journal_after(cursor, [*RUN_ENDS, *STEP_ENDS], BATCH)
    roots: dict[str, str] = {}  # run id -> root run id: each tree is walked once per batch
    spans = []
    for entry in entries:
        run = tx.get_run(entry.run_id, payloads=False)
        if run is None:  # removed by retention meanwhile
            continue
        if entry.kind in RUN_ENDS:
            spans.append(_run_span(tx, run, entry, roots))
        elif entry.step is not None:
            spans.append(_step_span(tx, run, entry, tx.get_step(run.run_id, entry.step), roots))
    return entries, spans


def _run_span(tx: Transaction, run: Run, entry: JournalEntry, roots: dict[str, str]) -> ReadableSpan:
    outcome = RUN_ENDS[entry.kind]
    parent = _run_context(tx, run.parent_run_id, roots) if run.parent_run_id else None
    attributes: dict[str, Any] = {
        "mcp_orchestrator.run_id": run.run_id,
        "mcp_orchestrator.run_name": run.name,
        "outcome": outcome,
    }
    if run.usage is not None:
        attributes.update(
            {
                "mcp_orchestrator.cost_usd": run.usage.cost_usd,
                "gen_ai.usage.input_tokens": run.usage.input_tokens,
                "gen_ai.usage.output_tokens": run.usage.output_tokens,
                "mcp_orchestrator.turns": run.usage.turns,
            }
        )
    # A sub-agent's activity (what it read, ran and edited) as the span's events, in time.
    events = [_activity_event(item) for item in tx.read_activity(run.run_id, ACTIVITY_EVENTS)]
    return _span(
        f"run {run.name}",
        _run_context(tx, run.run_id, roots),
        parent,
        run.created_at,
        entry.at,
        attributes,
        outcome,
        events,
    )


def _activity_event(item: Activity) -> Any:
    from opentelemetry.sdk.trace import Event

    attributes: dict[str, Any] = {"summary": item.summary}
    for name in ("attempt", "tool", "failed", "duration_ms"):
        if (value := getattr(item, name)) is not None:
            attributes[name] = value
    return Event(f"activity.{item.kind}", attributes, timestamp=int(item.at.timestamp() * 1e9))


def _step_span(
    tx: Transaction, run: Run, entry: JournalEntry, step: Step | None, roots: dict[str, str]
) -> ReadableSpan:
    outcome = STEP_ENDS[entry.kind]
    attempt = entry.attempt or 1
    # The step row holds the latest attempt; an earlier one's start is not kept, so it is a point.
    started = step.started_at if step is not None and step.attempt == attempt else entry.at
    root = _run_context(tx, run.run_id, roots)
    context = _context(root.trace_id, f"step:{run.run_id}:{entry.step}:{attempt}")
    attributes = {
        "mcp_orchestrator.run_id": run.run_id,
        "mcp_orchestrator.step": entry.step or "",
        "mcp_orchestrator.attempt": attempt,
        "outcome": outcome,
    }
    return _span(f"step {entry.step}", context, root, started, entry.at, attributes, outcome)


def _span(
    name: str,
    context: Any,
    parent: Any,
    start: datetime,
    end: datetime,
    attributes: dict[str, Any],
    outcome: str,
    events: Sequence[Any] = (),
) -> ReadableSpan:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.trace import Status, StatusCode

    status = Status(StatusCode.OK) if outcome == "completed" else Status(StatusCode.ERROR, outcome)
    return ReadableSpan(
        name=name,
        context=context,
        parent=parent,
        resource=Resource.create({"service.name": "mcp-orchestrator"}),
        attributes=attributes,
        start_time=int(start.timestamp() * 1e9),
        end_time=int(max(end, start).timestamp() * 1e9),
        status=status,
        events=events,
    )


def _run_context(tx: Transaction, run_id: str, roots: dict[str, str]) -> Any:
    """The span context of a run's span: its trace is that of the root of its tree."""
    if run_id not in roots:
        chain, current = [run_id], run_id
        while len(chain) < 50 and current not in roots:
            run = tx.get_run(current, payloads=False)
            if run is None or run.parent_run_id is None:
                break
            current = run.parent_run_id
            chain.append(current)
        root = roots.get(current, current)
        roots.update(dict.fromkeys(chain, root))
    return _context(_number(f"trace:{roots[run_id]}", 16), f"run:{run_id}")


def _context(trace_id: int, key: str) -> Any:
    from opentelemetry.trace import SpanContext, TraceFlags

    return SpanContext(trace_id, _number(key, 8), is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))


def _number(key: str, size: int) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:size], "big") or 1
