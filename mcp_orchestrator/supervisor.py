"""Background duties of a server process.

For now one: firing timers. Every server process runs it; firing is a transaction that re-reads
what is due, so two processes never fire one wait twice, and a wait whose time came while no
server ran is fired at the next start. (Later: one lease holder runs the duties that must run once.)
"""

from __future__ import annotations

import asyncio
import logging

from .engine import Engine
from .errors import OrchestratorError
from .models import utcnow

log = logging.getLogger(__name__)

TIMER_TICK_S = 1.0  # the longest a newly registered, nearer wake time can go unnoticed


async def run_timers(engine: Engine) -> None:
    """End waits whose timeout passed and sleeps whose wake time came, until cancelled."""
    while True:
        try:
            await engine.fire_due_waits()
            next_wake = await engine.next_wake()
        except OrchestratorError as exc:  # the store is busy or gone for a moment: try again
            log.warning("firing timers failed: %s", exc)
            next_wake = None
        delay = TIMER_TICK_S
        if next_wake is not None:
            delay = min(max((next_wake - utcnow()).total_seconds(), 0.005), TIMER_TICK_S)
        await asyncio.sleep(delay)
