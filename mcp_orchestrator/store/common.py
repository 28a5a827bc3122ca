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

    A store calls ``seen`` for every commit it learns of, its own or another process's, saying whether
    it may concern a waiter of consequences (``wakes``: it may end a wait or start or stop work) or is
    quiet (a heartbeat, a checkpoint that ends no run). ``generation`` counts every commit and
    ``wakes`` only those that may concern such a waiter: a page watching everything follows the one,
    the supervisor and blocked waits the other. A waiter reads the count before it looks at the store
    and asks ``moved(since)`` before it waits, so a commit seen in between is never missed."""

    def __init__(self) -> None:
        self.generation = 0
        self.wakes = 0
        self._next = asyncio.Event()
        self._next_waking = asyncio.Event()

    def seen(self, wakes: bool = True) -> None:
        self.generation += 1
        self._next.set()
        self._next = asyncio.Event()
        if wakes:
            self.wakes += 1
            self._next_waking.set()
            self._next_waking = asyncio.Event()

    def count(self, waking: bool) -> int:
        return self.wakes if waking else self.generation

    def moved(self, since: int | None, waking: bool = False) -> bool:
        return since is not None and since != self.count(waking)

    async def wait(self, timeout: float, waking: bool = False) -> None:
        """Until the next commit is seen (the next that may wake, with ``waking``), or ``timeout`` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for((self._next_waking if waking else self._next).wait(), timeout)


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


# One encoder for every payload: json.dumps with options other than its defaults builds a new one per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def dump_json(value: Any) -> str | None:
    """The JSON text a payload is stored as (None stays NULL)."""
    return None if value is None else _ENCODER.encode(value)


def shown_location(location: str) -> str:
    """A store location as messages and status output may show it: a URL's password masked."""
    parts = urlsplit(location)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username}:***@{netloc.rsplit('@', 1)[1]}"
    query = urlencode([(k, "***" if k == "password" else v) for k, v in parse_qsl(parts.query)])
    return urlunsplit(parts._replace(netloc=netloc, query=query))
