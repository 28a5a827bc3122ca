"""What every service shares: the store, the clock, the default workspace, the payload limit, the run
of a sub-agent's own server, and blocking until the store says something happened."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

from ..errors import InvalidInput
from ..models import utcnow
from ..store.base import Store

DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024
DEFAULT_MAX_RESULT_BYTES = 24 * 1024  # see config.Settings.max_result_bytes
PROGRESS_EVERY_S = 3.0  # a blocked call reports progress this often
# One encoder for every payload checked: json.dumps with options other than its defaults builds one per call.
_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"), ensure_ascii=False)
T = TypeVar("T")
Progress = Callable[[float, float, str], Awaitable[None]]


class Context:
    """Handed to each service; the assembled ``Engine`` is one, so a test may set its clock once."""

    def __init__(
        self,
        store: Store,
        *,
        workspace: str | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        clock: Callable[[], datetime] = utcnow,
        subagent_run_id: str | None = None,
        max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
    ) -> None:
        self.store = store
        self.workspace = workspace
        self.subagent_run_id = subagent_run_id  # a sub-agent's own server: the run it serves
        self.max_payload_bytes = max_payload_bytes
        self.max_result_bytes = max_result_bytes  # what a result handed to a model may take (services.sizing)
        self._clock = clock

    def now(self) -> datetime:
        return self._clock()

    def check_payload(self, field: str, value: Any) -> str | None:
        """Refuse a value that is not plain JSON or is over the payload limit. Returns its JSON text (None
        for None), as the store keeps it: a write may store that rather than encode the value again."""
        if value is None:
            return None
        try:
            encoded = _ENCODER.encode(value)
        except (ValueError, TypeError, RecursionError) as exc:
            raise InvalidInput(f"{field} is not plain JSON ({exc}); NaN and Infinity are not allowed") from exc
        size = len(encoded) if encoded.isascii() else len(encoded.encode())
        if size > self.max_payload_bytes:
            raise InvalidInput(
                f"{field} is {size} bytes, over the limit of {self.max_payload_bytes} bytes; store large data "
                "in a file and record its path instead",
                field=field,
                size=size,
            )
        return encoded

    async def until(
        self,
        check: Callable[[], Awaitable[tuple[bool, T, float | None]]],
        block_s: float,
        progress: Progress | None,
        message: str,
    ) -> T:
        """Call ``check`` after every commit anywhere that may end a wait (quiet ones, such as checkpoints
        that end no run, cannot), or when it says something is due, in seconds, until it reports done or
        ``block_s`` passes; returns its last value."""
        started = reported = time.monotonic()
        while True:
            since = self.store.wake_generation  # a quiet commit (a checkpoint) ends no wait
            done, value, due_in = await check()
            elapsed = time.monotonic() - started
            if done or elapsed >= block_s:
                return value
            if progress is not None and time.monotonic() - reported >= PROGRESS_EVERY_S:
                reported = time.monotonic()
                await progress(elapsed, block_s, message)
            timeout = min(block_s - elapsed, PROGRESS_EVERY_S, due_in if due_in is not None else PROGRESS_EVERY_S)
            await self.store.wait_for_change(max(timeout, 0.0), since=since, waking=True)
