"""Step tools: the durable checkpoint."""

from __future__ import annotations

from ..models import CheckpointInput, CheckpointResult
from ..runtime import Engine
from ._base import SAFE_WRITE, engine_tool


@engine_tool(
    CheckpointInput,
    CheckpointResult,
    title="Checkpoint a step",
    annotations=SAFE_WRITE,
    whole=True,  # the way to read a step's output whole, which other answers show as a preview
)
async def checkpoint(engine: Engine, args: CheckpointInput) -> CheckpointResult:
    """Record a step of a run durably, so no later session redoes it.

    Three uses, by argument:
    - output (or nothing): the step is completed with this result. If it was already completed,
      the first stored output comes back with replayed=true and nothing changes.
    - begin=true, before a side effect: a completed step comes back with replayed=true (skip the
      work, use its output); otherwise a new attempt is recorded. previous_outcome="unknown" means
      an earlier attempt started and never reported (a crash mid-step): check whether its side
      effect already happened before repeating it.
    - error: the attempt failed. retry=true with retry_at says the run's retry policy allows
      another attempt; retry=false means the step failed for good (retryable=false forces that).

    Example: checkpoint(run_id="01J...", step="open-pr", begin=true) -> {"step": {"status": "started",
    "attempt": 1, ...}, "replayed": false}; then checkpoint(run_id="01J...", step="open-pr",
    output={"pr": 1234}) -> {"step": {"status": "completed", ...}, "replayed": false}
    """
    return await engine.runs.checkpoint(args)
