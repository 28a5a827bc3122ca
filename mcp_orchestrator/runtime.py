"""The one assembly point: the services built over one store, and the store opened and closed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING

from .config import Settings
from .models import utcnow
from .profiles import AgentsConfig
from .services.context import DEFAULT_MAX_PAYLOAD_BYTES, DEFAULT_MAX_RESULT_BYTES, Context
from .store import store_for
from .store.base import Store

if TYPE_CHECKING:
    from .services.approvals import Approvals
    from .services.budgets import Budgets
    from .services.events import Events
    from .services.messages import Messages
    from .services.overview import Overview
    from .services.runs import Runs
    from .services.schedules import Schedules
    from .services.spawns import Spawns
    from .services.subagents import Subagents
    from .services.tasks import Tasks


class Engine(Context):
    """What the faces are handed: every service, sharing this context (store, clock, limits).

    ``runs`` (runs and steps), ``events`` (events, waits, sleeps, fan-ins), ``subagents``,
    ``schedules``, ``approvals`` (sub-agents' permission requests), ``messages`` (to sub-agents),
    ``budgets`` and ``tasks`` (long calls taken as MCP tasks); retention and traces are
    functions of the context (``services.retention``, ``services.tracing``).

    Each service is made, and its module imported, when first used: a command or a sub-agent's runner
    imports the services it calls, not all of them."""

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
        self.agents_config = agents or AgentsConfig()

    @cached_property
    def runs(self) -> Runs:
        from .services.runs import Runs

        return Runs(self)

    @cached_property
    def events(self) -> Events:
        from .services.events import Events

        return Events(self)

    @cached_property
    def subagents(self) -> Subagents:
        from .services.subagents import Subagents

        return Subagents(self, self._spawns)

    @cached_property
    def schedules(self) -> Schedules:
        from .services.schedules import Schedules

        return Schedules(self, self._spawns)

    @cached_property
    def approvals(self) -> Approvals:
        from .services.approvals import Approvals

        return Approvals(self, self.agents_config)

    @cached_property
    def messages(self) -> Messages:
        from .services.messages import Messages

        return Messages(self, self.agents_config)

    @cached_property
    def budgets(self) -> Budgets:
        from .services.budgets import Budgets

        return Budgets(self)

    @cached_property
    def tasks(self) -> Tasks:
        from .services.tasks import Tasks

        return Tasks(self)

    @cached_property
    def overview(self) -> Overview:
        """The dashboard's lists."""
        from .services.overview import Overview

        return Overview(self, self.runs, self.schedules)

    @cached_property
    def _spawns(self) -> Spawns:
        from .services.spawns import Spawns

        return Spawns(self, self.agents_config)


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
