"""Long calls taken as MCP tasks: a durable record of the call, a view of the run it started
(spawn_subagent) or waits in (the waits). The record holds the call, not its outcome: where a task
stands is found by asking that run or wait again, so any process on the store answers for it, after
any restart, and the answer is what the tool itself would say."""

from __future__ import annotations

import secrets

from pydantic import JsonValue

from .. import transitions
from ..errors import InternalError, TaskNotFound
from ..models import Activity, SpawnSubagentResult, TaskRecord, TaskStatus, TaskTool
from ..store.base import Transaction
from .context import Context

LIVE = ("working", "input_required")  # a task's statuses before it ends


class Tasks:
    """Creating, reading, settling and cancelling task records (see the module docstring)."""

    def __init__(self, context: Context) -> None:
        self.context = context
        self.store = context.store

    async def create(
        self, tool: TaskTool, arguments: dict[str, JsonValue], run_id: str, *, created: bool | None = None
    ) -> TaskRecord:
        """Store the task before its id is handed out: a tasks/get for it resolves from then on."""
        now = self.context.now()
        task = TaskRecord(
            task_id=f"task-{secrets.token_hex(16)}",  # a bearer of the call's result: unguessable
            tool=tool,
            arguments=arguments,
            run_id=run_id,
            created_at=now,
            updated_at=now,
            created=created,
        )
        await self.store.write(lambda tx: tx.insert_task(task))
        return task

    async def get(self, task_id: str) -> TaskRecord:
        return await self.store.read(lambda tx: _get(tx, task_id))

    async def spawned(self, task: TaskRecord) -> tuple[SpawnSubagentResult, Activity | None]:
        """A spawn's run as spawn_subagent shows it, and what its agent did last: one read, for a poll
        that comes every few seconds (``status`` would read every step, child and message)."""

        def read(tx: Transaction) -> tuple[SpawnSubagentResult, Activity | None]:
            run = transitions.get_run(tx, task.run_id)
            agent = tx.get_agent(run.run_id)
            if agent is None:
                raise InternalError(f"run {run.run_id} of a spawn's task has no sub-agent record", run_id=run.run_id)
            latest = tx.read_activity(run.run_id, 1)
            result = SpawnSubagentResult(run=run, created=bool(task.created), process=agent)
            return result, latest[-1] if latest else None

        return await self.store.read(read)

    async def settle(self, task: TaskRecord, status: TaskStatus) -> TaskRecord:
        """Record a status the run or wait now shows; a task that ended (or was cancelled) stays so."""
        if status == task.status:
            return task

        def settle(tx: Transaction) -> TaskRecord:
            current = _get(tx, task.task_id)
            if current.status not in LIVE or current.status == status:
                return current
            settled = current.model_copy(update={"status": status, "updated_at": self.context.now()})
            tx.save_task(settled)
            return settled

        return await self.store.write(settle)

    async def cancel(self, task_id: str) -> TaskRecord:
        """Mark the task cancelled; a spawn's sub-agent is cancelled with it (its run and live
        descendants). A wait's run is the caller's own and goes on: its wait stays, for a later call."""

        def cancel(tx: Transaction) -> TaskRecord:
            task = _get(tx, task_id)
            if task.status not in LIVE:
                return task
            now = self.context.now()
            if task.tool == "spawn_subagent":
                run = transitions.get_run(tx, task.run_id, payloads=False)
                transitions.cancel(tx, now, run, "cancelled by the client that called spawn_subagent (tasks/cancel)")
            cancelled = task.model_copy(update={"status": "cancelled", "updated_at": now})
            tx.save_task(cancelled)
            return cancelled

        return await self.store.write(cancel)


def _get(tx: Transaction, task_id: str) -> TaskRecord:
    task = tx.get_task(task_id)
    if task is None:
        raise TaskNotFound(task_id)
    return task
