"""Background duties of a server process.

Timers: every server fires due waits (a transaction that re-reads what is due, so two processes
never fire one wait twice, and a wait whose time came while no server ran fires at the next start).

Two leases in the store divide the rest. The holder of the supervisor lease (one process for the
whole store) fires due schedules, exports traces when configured, and applies retention hourly.
The holder of a node's lease (one process per node: the host name, or ``MCP_ORCHESTRATOR_NODE``)
starts queued sub-agents on that node within the store-wide limits (claims are transactions, so an
agent starts once whichever node claims it), retries crashed ones after their backoff, and reaps:
the runners of its node whose pid is gone, and those of any node that stopped heartbeating (a node
that died). Leases are renewed every third of their time to live; when a holder dies, another
process takes the lease over once it expires. Sub-agents' own MCP servers never contend.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from datetime import datetime, timedelta

import anyio

from .agents.launch import Launcher, group_alive, kill_group, runner_alive
from .config import Settings
from .errors import OrchestratorError
from .ids import new_id
from .runtime import Engine
from .services.retention import collect, cutoff_for
from .services.subagents import LEASE, node_lease
from .services.tracing import export_spans, exporter_from_environment

log = logging.getLogger(__name__)

TIMER_TICK_S = 1.0  # the longest a newly registered, nearer wake time can go unnoticed
COLLECT_EVERY_S = 3600.0  # retention runs this often in the lease holder


class FailureLog:
    """Logs a duty's failure once while it repeats: a store that stays busy, unreachable or gone
    (its file removed) would otherwise fill the log every tick. Its recovery is logged too."""

    def __init__(self) -> None:
        self._failing: dict[str, str] = {}

    def failed(self, duty: str, exc: OrchestratorError) -> None:
        if self._failing.get(duty) != exc.message:
            self._failing[duty] = exc.message
            log.warning("%s failed: %s (logged again only if the failure changes)", duty, exc)

    def succeeded(self, duty: str) -> None:
        if self._failing.pop(duty, None) is not None:
            log.warning("%s works again", duty)


async def run_timers(engine: Engine) -> None:
    """End waits whose timeout passed and sleeps whose wake time came, until cancelled."""
    failures = FailureLog()
    while True:
        try:
            await engine.events.fire_due_waits()
            next_wake = await engine.events.next_wake()
            failures.succeeded("firing timers")
        except OrchestratorError as exc:  # the store is busy or gone for a moment: try again
            failures.failed("firing timers", exc)
            next_wake = None
        except Exception:  # a bug here must not take the server (and its clients) down with it
            log.exception("firing timers failed")
            next_wake = None
        delay = TIMER_TICK_S
        if next_wake is not None:
            delay = min(max((next_wake - engine.now()).total_seconds(), 0.005), TIMER_TICK_S)
        await asyncio.sleep(delay)


class Supervisor:
    """Holds (or waits for) the supervisor lease and this node's lease, and does what they entail."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.agents = engine.subagents
        self.node = settings.node
        self.holder = f"{self.node}:{os.getpid()}:{new_id()[-8:]}"
        self.leases = (LEASE, node_lease(self.node))
        self._launcher = Launcher(settings)
        self._next_collection = time.monotonic() + 60  # the first, a minute after taking the lease
        self._exporter = exporter_from_environment()
        self._failures = FailureLog()

    async def run(self) -> None:
        renew_s = self.agents.config.lease_ttl_s / 3
        try:
            while True:
                self._launcher.collect()
                held = await self._hold_leases()
                if not held:
                    await asyncio.sleep(renew_s)
                    continue
                renew_at = time.monotonic() + renew_s
                while (left := renew_at - time.monotonic()) > 0:
                    since = self.engine.store.wake_generation  # quiet commits (checkpoints) never concern it
                    try:
                        wake = await self.tick(store_wide=LEASE in held, node=node_lease(self.node) in held)
                        self._failures.succeeded("supervising")
                    except OrchestratorError as exc:
                        self._failures.failed("supervising", exc)
                        wake = None
                    except Exception:  # a bug here must not take the server (and its clients) down with it
                        log.exception("supervising failed")
                        wake = None
                    if wake is not None:
                        left = min(left, max((wake - self.engine.now()).total_seconds(), 0.005))
                    await self.engine.store.wait_for_change(left, since, waking=True)  # a spawn, an exit: early
        finally:
            self._launcher.close()
            with anyio.CancelScope(shield=True):
                for name in self.leases:
                    try:
                        await self.agents.release_lease(self.holder, name)
                    except Exception as exc:  # the store may be closing: the lease then simply expires
                        log.debug("releasing the lease %s failed: %s", name, exc)

    async def _hold_leases(self) -> set[str]:
        held = set()
        for name in self.leases:
            try:
                if await self.agents.hold_lease(self.holder, name):
                    held.add(name)
                self._failures.succeeded(f"taking the lease {name}")
            except OrchestratorError as exc:
                self._failures.failed(f"taking the lease {name}", exc)
        return held

    async def tick(self, *, store_wide: bool = True, node: bool = True) -> datetime | None:
        """The duties of the leases held: store-wide, fire due schedules, export traces and now and
        then remove what ended long ago; for the node, start what may start and handle runners that
        died. Returns when there is next something to do (a schedule, a retry's backoff)."""
        wake: list[datetime | None] = []
        if store_wide:
            await self._store_wide_duties()
            wake.append(await self.engine.schedules.next_due())
        if node:
            await self._node_duties()
            wake.append(await self.agents.next_start())
        return min(filter(None, wake), default=None)

    async def _store_wide_duties(self) -> None:
        if self._exporter is not None:
            try:
                await export_spans(self.engine, self._exporter)
            except Exception as exc:  # a collector that is down never stops the supervisor
                log.warning("exporting traces failed: %s", exc)
        days = self.agents.config.retention_days
        if days > 0 and time.monotonic() >= self._next_collection:
            self._next_collection = time.monotonic() + COLLECT_EVERY_S
            removed = await collect(self.engine, cutoff_for(self.engine, timedelta(days=days)))
            if removed.runs or removed.events or removed.firings:
                log.info("retention removed %s", removed.model_dump_json())
            await self.remove_orphan_logs(timedelta(days=days))
        # A due time later than twice the lease's life was missed while nobody held it (downtime),
        # and follows its schedule's catch_up policy; a takeover's delay stays within it.
        await self.engine.schedules.fire_due(grace_s=2 * self.agents.config.lease_ttl_s)

    async def _node_duties(self) -> None:
        for item in await self.agents.claim(self.node):
            try:
                self._launcher.launch(item)
            except OSError as exc:
                message = f"cannot start the runner: {exc.strerror or exc}"
                await self.agents.exited(
                    item.agent.run_id, item.agent.attempt, None, how="launch_failed", message=message
                )
        for agent in await self.agents.reap(self.node, runner_alive):
            if agent.host == self.node and agent.pgid is not None and group_alive(agent.pgid):
                await asyncio.to_thread(kill_group, agent.pgid, self.agents.config.kill_grace_s)
        self._launcher.collect()

    async def remove_orphan_logs(self, older_than: timedelta) -> list[str]:
        """Remove the log directories (``runs/<run_id>/``) of runs the store no longer has, once they
        are older than ``older_than``; returns the run ids."""
        cutoff = time.time() - older_than.total_seconds()
        try:
            candidates = [d for d in self.settings.runs_dir.iterdir() if d.is_dir() and d.stat().st_mtime < cutoff]
        except FileNotFoundError:
            return []
        names = [d.name for d in candidates]
        kept = await self.engine.store.read(lambda tx: {n for n in names if tx.get_run(n, payloads=False)})
        removed = [d for d in candidates if d.name not in kept]
        for directory in removed:
            await asyncio.to_thread(shutil.rmtree, directory, ignore_errors=True)
        return [d.name for d in removed]
