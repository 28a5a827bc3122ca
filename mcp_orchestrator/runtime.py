"""The one assembly point: the services built over one store, and the store opened and closed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime

from .config import Settings
from .models import utcnow
from .profiles import AgentsConfig
from .services.approvals import Approvals
from .services.budgets import Budgets
from .services.context import DEFAULT_MAX_PAYLOAD_BYTES, DEFAULT_MAX_RESULT_BYTES, Context
from .services.events import Events
from .services.messages import Messages
from .services.overview import Overview
from .services.runs import Runs
from .services.schedules import Schedules
from .services.spawns import Spawns
from .services.subagents import Subagents
from .services.tasks import Tasks
from .store import store_for
from .store.base import Store


class Engine(Context):
    """What the faces are handed: every service, sharing this context (store, clock, limits).

    ``runs`` (runs and steps), ``events`` (events, waits, sleeps, fan-ins), ``subagents``,
    ``schedules``, ``approvals`` (sub-agents' permission requests), ``messages`` (to sub-agents),
    ``budgets`` and ``tasks`` (long calls taken as MCP tasks); retention and traces are
    functions of the context (``services.retention``, ``services.tracing``)."""

    def __init__(
        self,
        store: Store,
        *,
        workspace: str | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        clock: Callable[[], datetime] = utcnow,
        agents: AgentsConfig | None = None,
        subagent_run_id: str | None = None,
        max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
    ) -> None:
        super().__init__(
            store,
            workspace=workspace,
            max_payload_bytes=max_payload_bytes,
            clock=clock,
            subagent_run_id=subagent_run_id,
            max_result_bytes=max_result_bytes,
        )
        config = agents or AgentsConfig()
        spawns = Spawns(self, config)
        self.runs = Runs(self)
        self.events = Events(self)
        self.subagents = Subagents(self, spawns)
        self.schedules = Schedules(self, spawns)
        self.approvals = Approvals(self, config)
        self.messages = Messages(self, config)
        self.budgets = Budgets(self)
        self.tasks = Tasks(self)
        self.overview = Overview(self, self.runs, self.schedules)  # the dashboard's lists


@asynccontextmanager
async def open_engine(settings: Settings) -> AsyncIterator[Engine]:
    store = store_for(settings)
    await store.open()
    try:
        yield Engine(
            store,
            workspace=settings.workspace,
            max_payload_bytes=settings.max_payload_bytes,
            agents=settings.agents,
            subagent_run_id=settings.subagent_run_id,
            max_result_bytes=settings.max_result_bytes,
        )
    finally:
        await store.close()
