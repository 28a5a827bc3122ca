"""What the SQLite and PostgreSQL stores share besides their SQL: the commits a process has seen, the
patience of their retries, payloads as JSON, and a location as it may be shown."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit


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


class Patience:
    """How long a store keeps trying what was refused for now (a lock held elsewhere, a conflict, a
    lost connection), and the pauses between tries: random within a range (writers that collided do
    not come back in step), the range doubling after each pause up to ``most`` (by default it stays)."""

    def __init__(self, seconds: float, pauses: tuple[float, float], most: float | None = None) -> None:
        self.deadline = time.monotonic() + seconds
        self._low, self._high = pauses
        self._most = self._high if most is None else most

    def spent(self) -> bool:
        return time.monotonic() > self.deadline

    def at_least(self, pause: float) -> None:
        """Pauses of at least about ``pause`` from now on."""
        if self._high < pause:
            self._low, self._high = self._low * pause / self._high, pause

    def pause(self) -> float:
        """The next pause, in seconds."""
        pause = random.uniform(self._low, self._high)
        grow = min(2.0, self._most / self._high)
        self._low, self._high = self._low * grow, self._high * grow
        return pause


def dump_json(value: Any) -> str | None:
    """The JSON text a payload is stored as (None stays NULL)."""
    return None if value is None else json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def shown_location(location: str) -> str:
    """A store location as messages and status output may show it: a URL's password masked."""
    parts = urlsplit(location)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username}:***@{netloc.rsplit('@', 1)[1]}"
    query = urlencode([(k, "***" if k == "password" else v) for k, v in parse_qsl(parts.query)])
    return urlunsplit(parts._replace(netloc=netloc, query=query))
