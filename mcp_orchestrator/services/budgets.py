"""Budgets: what a run and its descendants may spend. Reached, a tree starts no new sub-agent and its
running ones pause (a wait of kind 'budget'); raising the budget here lets them go on."""

from __future__ import annotations

from .. import transitions
from ..models import LIVE_RUN_STATUSES, Budget, SetBudgetInput, SetBudgetResult
from ..store.base import Transaction
from .context import Context


class Budgets:
    """Setting and raising budgets (see the module docstring)."""

    def __init__(self, context: Context) -> None:
        self.context = context
        self.store = context.store

    async def set_budget(self, args: SetBudgetInput) -> SetBudgetResult:
        """Set the run's budget (the limits given; the other one kept), then resume every run of its tree
        paused at a budget that now has some left."""

        def set_budget(tx: Transaction) -> SetBudgetResult:
            now = self.context.now()
            run = transitions.get_run(tx, args.run_id, payloads=False)
            transitions.check_below(tx, run.run_id, self.context.subagent_run_id, "sets the budgets of")
            old = run.budget or Budget()
            new = Budget(
                max_budget_usd=args.max_budget_usd if args.max_budget_usd is not None else old.max_budget_usd,
                max_turns=args.max_turns if args.max_turns is not None else old.max_turns,
            )
            tx.set_run_budget(run.run_id, new)
            detail = {"from": old.model_dump(mode="json"), "to": new.model_dump(mode="json")}
            tx.append_journal(run.run_id, "budget_set", now, detail=detail)
            resumed = []
            for run_id in [run.run_id, *tx.descendant_ids(run.run_id, LIVE_RUN_STATUSES)]:
                waits = transitions.budget_waits(tx, run_id)
                paused = transitions.get_run(tx, run_id, payloads=False) if waits else None
                if paused is None or transitions.budget_left(tx, paused).reached:
                    continue
                for wait in waits:
                    transitions.end_budget_wait(tx, now, run_id, wait, f"the budget of run {run.run_id} was set")
                resumed.append(run_id)
            return SetBudgetResult(run=transitions.get_run(tx, run.run_id), resumed_run_ids=resumed)

        return await self.store.write(set_budget)
