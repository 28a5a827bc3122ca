"""A workspace's unfinished work in a few lines: what a model starting a session there should know first.

The Claude Code plugin's SessionStart hook puts this text into a new session's context, and the ``runs``
MCP prompt embeds it: one text for both. It names the runs of the workspace that need attention (a
sub-agent's permission request first, then paused, waiting, running and queued runs, then those that
failed in the last day) with their ids, names and keys, and what each waits for; newest first within
each kind, and at most ``max_lines`` lines in all, the rest counted.

Names, keys, requests and errors are stored text that anyone with access to the store can write, so each
is quoted as a JSON string and cut short: it reads as data, never as an instruction of its own.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from .models import LIST_LIMIT_MAX, Approval, ListApprovalsInput, ListRunsInput, Run, RunStatus, Wait
from .services.overview import FAILED_WITHIN  # a failed run is news for a day, here as on the dashboard
from .services.subagents import PAUSE_STEP

if TYPE_CHECKING:
    from .runtime import Engine

MAX_LINES = 15
LIVE_READ = 100  # waiting, and running or queued, runs read at most; past that the count says "more than"
FAILED_READ = 20  # the newest failed runs looked at for those that ended within FAILED_WITHIN
WAITING = RunStatus.WAITING
ACTIVE = [RunStatus.RUNNING, RunStatus.QUEUED]
# The order of the lines: what a person or the model must act on first.
_ORDER = ("approval", "paused", "waiting", "running", "queued", "failed")
_HOW = (
    "With the orchestrator MCP server's tools: start_run(name, key) with a run's name and key returns that run "
    "and its completed steps (skip those); status(run_id) shows its steps and waits; decide_approval answers a "
    "permission request when the user says so."
)


async def unfinished_work(engine: Engine, workspace: str, *, max_lines: int = MAX_LINES) -> str:
    """The summary of ``workspace``'s unfinished work, or "" when it has none."""
    now = engine.now()
    # Waiting runs apart: those that need someone come first, however many runs are running.
    waiting = await engine.runs.list_runs(ListRunsInput(status=WAITING, workspace=workspace, limit=LIVE_READ))
    active = await engine.runs.list_runs(ListRunsInput(status=ACTIVE, workspace=workspace, limit=LIVE_READ))
    failed = await engine.runs.list_runs(ListRunsInput(status=RunStatus.FAILED, workspace=workspace, limit=FAILED_READ))
    recent = [run for run in failed.runs if run.ended_at is not None and now - run.ended_at <= FAILED_WITHIN]
    runs = [*waiting.runs, *active.runs, *recent]
    if not runs:
        return ""
    waits = await engine.runs.waits([run.run_id for run in waiting.runs]) if waiting.runs else {}
    approvals = await _approvals(engine, waits)
    lines = sorted(
        (_line(run, waits.get(run.run_id, []), approvals.get(run.run_id, []), now) for run in runs),
        key=lambda ranked: ranked[0],  # stable: newest first within a kind, as listed
    )
    capped = waiting.next_cursor is not None or active.next_cursor is not None
    room = max(1, max_lines - 2)  # the header and the closing line take two
    shown = lines if len(lines) <= room else lines[: room - 1]
    text = [f"Unfinished work of this workspace ({workspace}) in mcp-orchestrator's durable store:"]
    text += [line for _, line in shown]
    if len(shown) < len(lines):
        more = len(lines) - len(shown)
        count = f"more than {more}" if capped else str(more)
        text.append(
            f"- and {count} more: list_runs(workspace={json.dumps(workspace)}, "
            'status=["waiting", "running", "queued", "failed"]) lists them'
        )
    text.append(_HOW)
    return "\n".join(text)


async def _approvals(engine: Engine, waits: dict[str, list[Wait]]) -> dict[str, list[Approval]]:
    """The pending permission requests of the runs that wait on one, by run."""
    if not any(wait.kind == "approval" for run_waits in waits.values() for wait in run_waits):
        return {}
    pending = await engine.approvals.list(ListApprovalsInput(status="pending", limit=LIST_LIMIT_MAX))
    found: dict[str, list[Approval]] = {}
    for approval in pending.approvals:
        if approval.run_id in waits:
            found.setdefault(approval.run_id, []).append(approval)
    return found


def _line(run: Run, waits: list[Wait], approvals: list[Approval], now: datetime) -> tuple[int, str]:
    """(rank, line) of one run: its kind, id, name and key, and where it stands."""
    kind, detail = _standing(run, waits, approvals, now)
    key = f" key={_quoted(run.key)}" if run.key else ""
    parent = f" (child of {run.parent_run_id})" if run.parent_run_id else ""
    return _ORDER.index(kind), f"- {kind} {run.run_id} {_quoted(run.name)}{key}{parent}: {detail}"


def _standing(run: Run, waits: list[Wait], approvals: list[Approval], now: datetime) -> tuple[str, str]:
    if run.status == RunStatus.FAILED:
        ended = _ago(now - run.ended_at) if run.ended_at else "recently"
        return "failed", f"ended {ended}: {_quoted(_error_text(run.error), 120)}"
    if run.status != RunStatus.WAITING:
        return str(run.status), f"updated {_ago(now - run.updated_at)}"
    if approvals:
        asks = "; ".join(f"{a.tool_name} {_request(a)} (approval {a.approval_id})" for a in approvals)
        return "approval", f"a sub-agent asks to use {asks}"
    if any(wait.kind == "budget" for wait in waits):
        return "paused", "reached its budget; set_budget(run_id, max_budget_usd=...) lets it go on"
    for wait in waits:
        if wait.kind == "sleep" and wait.step.startswith(PAUSE_STEP) and wait.until is not None:
            return "paused", f"at a usage limit; resumes by itself at {_until(wait.until, now)}"
    if not waits:
        return "waiting", f"updated {_ago(now - run.updated_at)}"
    return "waiting", "; ".join(_wait_words(wait, now) for wait in waits)


def _wait_words(wait: Wait, now: datetime) -> str:
    """What one wait waits for, and since when."""
    since = f", since {_ago(now - wait.created_at)}"
    if wait.kind == "event":
        gives_up = f"; gives up at {_until(wait.until, now)}" if wait.until is not None else ""
        return f"for event {' or '.join(wait.events)}{since}{gives_up}"
    if wait.kind == "sleep":
        return f"sleeping (step {_quoted(wait.step)}); wakes at {_until(wait.until, now)}"
    if wait.kind == "runs":
        return f"for {wait.mode or 'all'} of {len(wait.run_ids)} run(s) to end{since}"
    return f"for {wait.kind} ({' or '.join(wait.events)}){since}"


def _request(approval: Approval) -> str:
    """What the call asks, in a few words: the command or the path, else its input."""
    value: Any = approval.input
    if isinstance(value, dict):
        for field in ("command", "file_path", "notebook_path", "url", "path", "pattern"):
            if isinstance(value.get(field), str):
                return _quoted(value[field], 100)
    return _quoted(value if isinstance(value, str) else json.dumps(value), 100)


def _error_text(error: Any) -> str:
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    return error if isinstance(error, str) else json.dumps(error)


def _quoted(text: str, limit: int = 60) -> str:
    """``text`` as one JSON string of at most ``limit`` characters (cut with …)."""
    return json.dumps(text if len(text) <= limit else text[: limit - 1] + "…", ensure_ascii=False)


def _ago(delta: timedelta) -> str:
    return f"{_span(delta)} ago" if delta >= timedelta(minutes=1) else "just now"


def _until(at: datetime | None, now: datetime) -> str:
    """A time to come: '2026-05-01 12:00Z (in 3 h)'."""
    if at is None:
        return "a time not set"
    return f"{at:%Y-%m-%d %H:%M}Z ({f'in {_span(at - now)}' if at > now else 'due now'})"


def _span(delta: timedelta) -> str:
    """A duration in its largest whole unit: 40 s, 12 min, 3 h, 2 d."""
    seconds = int(max(delta, timedelta()).total_seconds())
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400 * 2:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"
