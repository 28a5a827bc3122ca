"""Run tools: start, finish, cancel, inspect and list durable runs."""

from __future__ import annotations

from mcp.types import ToolAnnotations

from ..models import (
    CancelRunInput,
    CancelRunResult,
    FinishRunInput,
    FinishRunResult,
    ListRunsInput,
    ListRunsResult,
    RetryRunInput,
    RetryRunResult,
    StartRunInput,
    StartRunResult,
    StatusInput,
    StatusResult,
)
from ..runtime import Engine
from ._base import READS, SAFE_WRITE, engine_tool


@engine_tool(
    StartRunInput,
    StartRunResult,
    title="Start (or resume) a durable run",
    annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False),
)
async def start_run(engine: Engine, args: StartRunInput) -> StartRunResult:
    """Start a durable run: a unit of multi-step work whose progress outlives this session.

    Use it at the beginning of any task with several steps or side effects. Pass a stable `key`
    derived from the task (e.g. "fix-issue-42"): if a run with that key exists (this or an earlier
    session started it), the same run comes back with created=false and its steps; completed
    steps are done and must not be redone.

    Returns `run` (keep its run_id for checkpoint and finish_run), `created`, `steps_total`, and
    the latest `steps` (long outputs as previews); a long run also names the steps before them with
    their statuses in `earlier_steps`, and `steps_cursor` pages back through status.

    Example: start_run(name="migrate-db", key="migrate-db-2026-11") -> {"run": {"run_id": "01J...",
    "status": "running", ...}, "created": true, "steps": []}
    """
    return await engine.runs.start_run(args, budget=engine.max_result_bytes)


@engine_tool(
    FinishRunInput,
    FinishRunResult,
    title="Finish a run",
    annotations=SAFE_WRITE,
)
async def finish_run(engine: Engine, args: FinishRunInput) -> FinishRunResult:
    """Finish a run: with `output` it becomes completed, with `error` it becomes failed.

    Call it once the task is done (or has failed for good) so that later sessions see the outcome.
    Calling it again the same way returns the stored result (replayed=true); a run that already
    ended differently, or was cancelled, is an error that names its status.

    Example: finish_run(run_id="01J...", output={"pr": 1234}) -> {"run": {"status": "completed", ...},
    "replayed": false}
    """
    return await engine.runs.finish_run(args)


@engine_tool(
    CancelRunInput,
    CancelRunResult,
    title="Cancel a run and its descendants",
    annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True),
)
async def cancel_run(engine: Engine, args: CancelRunInput) -> CancelRunResult:
    """Cancel a run and every live run under it (children, their children ...).

    Use it to stop work that is no longer wanted. Sub-agents among them have their processes
    stopped (SIGTERM, then SIGKILL) within a few seconds, from whichever process runs them. Runs
    that already ended are left as they are. Returns the `run` and `cancelled_run_ids` (empty when
    nothing was live).

    Example: cancel_run(run_id="01J...", reason="superseded") -> {"run": {"status": "cancelled", ...},
    "cancelled_run_ids": ["01J...", "01K..."]}
    """
    return await engine.runs.cancel_run(args)


@engine_tool(
    RetryRunInput,
    RetryRunResult,
    title="Retry a failed or cancelled run",
    annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False),
)
async def retry_run(engine: Engine, args: RetryRunInput) -> RetryRunResult:
    """Make a failed or cancelled run live again, from its last completed step.

    Use it when the cause of a failure is fixed (or a cancel was a mistake). Completed steps stay
    completed (memoized); steps that failed for good get a new set of attempts; waits that ended
    with the run start over when asked again. A sub-agent's process is started again (resumed).
    Its children stay as they are. Returns the `run` and the `reset_steps`.

    Example: retry_run(run_id="01J...", reason="API key rotated") -> {"run": {"status": "running",
    ...}, "reset_steps": ["deploy"]}
    """
    return await engine.runs.retry_run(args)


@engine_tool(
    StatusInput,
    StatusResult,
    title="Show a run's state",
    annotations=READS,
)
async def status(engine: Engine, args: StatusInput) -> StatusResult:
    """Show one run: its status, every step with its outcome, its children and recent journal, and
    what it cost: `run.usage` (its own sub-agent's dollars, tokens, turns, model), `run.tree_usage`
    (with all its descendants) and `run.budget`. For a sub-agent also its `process` (state, attempt,
    pid, heartbeat, exit code, worktree), the last lines of its stdout and stderr (`log_tail`), its
    latest `activity` (what it did, oldest first: turns, what it said, each tool call with whether
    it failed and how long it took) and the `messages` queued for it.

    Use it to resume work after a crash or in a new session (which steps are completed, which one
    was started and never finished), or to check on a run someone else started: what a sub-agent is
    doing now, and what it has spent. Pass `activity_cursor` back for earlier activity.

    A long run's answer is paged to fit: the latest steps (long outputs as previews; their whole
    size in `truncated`), `steps_total`, the earlier steps' statuses in `earlier_steps`; pass
    `steps_cursor` back for the page before. `omitted` says what else was left out and how to read it.

    Example: status(run_id="01J...") -> {"run": {"tree_usage": {"cost_usd": 0.42, ...}, ...},
    "steps": [{"step": "fetch", "status": "completed", "output": ...}], "activity": [{"kind": "tool",
    "summary": "Bash: npm test", "failed": false, "duration_ms": 5230}], "journal": [...]}
    """
    return await engine.runs.status(args, budget=engine.max_result_bytes)


@engine_tool(
    ListRunsInput,
    ListRunsResult,
    title="List runs",
    annotations=READS,
)
async def list_runs(engine: Engine, args: ListRunsInput) -> ListRunsResult:
    """List runs, newest first, filtered by status, name, parent, label, workspace or start time.

    Use it to find unfinished work to resume (status=["running", "waiting"], workspace=<this
    project's directory>) or to review what happened. Pages of `limit` runs; pass `next_cursor`
    back as `cursor` for the next page.

    Example: list_runs(status="running", limit=5) -> {"runs": [...], "next_cursor": "01J..."}
    """
    return await engine.runs.list_runs(args, budget=engine.max_result_bytes)
