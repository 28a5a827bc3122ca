"""Budget tools: set or raise what a run and its descendants may spend."""

from __future__ import annotations

from mcp.types import ToolAnnotations

from ..models import SetBudgetInput, SetBudgetResult
from ..runtime import Engine
from ._base import engine_tool


@engine_tool(
    SetBudgetInput,
    SetBudgetResult,
    title="Set or raise a run's budget",
    annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True),
)
async def set_budget(engine: Engine, args: SetBudgetInput) -> SetBudgetResult:
    """Set what a run may spend: `max_budget_usd` for the run and all its descendants together,
    `max_turns` for its own sub-agent's model turns. A limit not given stays as it was.

    Use it when a sub-agent you spawned is `waiting` on a 'budget' wait (status says "budget reached:
    $X of $Y"): a run whose tree has spent its budget pauses, it does not fail, and a higher budget
    lets every paused run of the tree that now has some left go on (resumed where it stopped). Also
    use it to cap a run before it spends more. Raise a budget only when the work is worth it.

    Returns the `run` with its new `budget` and what its tree spent (`tree_usage`), and
    `resumed_run_ids`: the runs paused at a budget that went on.

    Example: set_budget(run_id="01K...", max_budget_usd=2.0) -> {"run": {"budget": {"max_budget_usd":
    2.0}, "tree_usage": {"cost_usd": 1.02, ...}, ...}, "resumed_run_ids": ["01K..."]}
    """
    return await engine.budgets.set_budget(args)
