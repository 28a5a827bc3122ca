"""Fan-in: wait for other runs (children, sub-agents) to end."""

from __future__ import annotations

from ..models import WaitForRunsInput, WaitForRunsResult
from ..runtime import Engine
from ..services.events import Progress
from ._base import SAFE_WRITE, engine_tool


@engine_tool(
    WaitForRunsInput,
    WaitForRunsResult,
    title="Wait for runs to end",
    annotations=SAFE_WRITE,
    blocking=True,
)
async def wait_for_runs(engine: Engine, args: WaitForRunsInput, progress: Progress) -> WaitForRunsResult:
    """Fan-in: wait until all (mode="all") or any (mode="any") of some runs have ended.

    Use it after starting child runs to collect their results. Give your own run_id and a step to
    make the wait a durable step of your run (it survives this session, its timeout is enforced
    without you, and once done it is memoized); without them the call only watches. Blocks at most
    `block_s`, then returns status="waiting"; call again with the same arguments to keep waiting.
    A client that takes MCP tasks gets a task at once instead, ending with this answer.

    Returns `status` (done, waiting or timed_out) and `runs`: each run as it is now, with the
    output or error of those that ended.

    Example: wait_for_runs(run_ids=["01K...", "01M..."], run_id="01J...", step="collect-reviews")
    -> {"status": "done", "runs": [{"run_id": "01K...", "status": "completed", "output": ...}, ...]}
    """
    return await engine.events.wait_for_runs(args, progress)
