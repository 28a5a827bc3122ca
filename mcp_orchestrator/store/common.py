"""What the SQLite and PostgreSQL stores share: the commits a process has seen, and payloads as JSON."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any


class Changes:
    """The commits this process has seen, counted (``generation``), and a wait for the next.

    A store calls ``seen`` for every commit it learns of, its own or another process's. A waiter
    reads ``generation`` before it looks at the store and asks ``moved(since)`` before it waits, so
    a commit seen in between is never missed."""

    def __init__(self) -> None:
        self.generation = 0
        self._next = asyncio.Event()

    def seen(self) -> None:
        self.generation += 1
        self._next.set()
        self._next = asyncio.Event()

    def moved(self, since: int | None) -> bool:
        return since is not None and since != self.generation

    async def wait(self, timeout: float) -> None:
        """Until the next commit is seen, or ``timeout`` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._next.wait(), timeout)


def dump_json(value: Any) -> str | None:
    """The JSON text a payload is stored as (None stays NULL)."""
    return None if value is None else json.dumps(value, separators=(",", ":"), ensure_ascii=False)
