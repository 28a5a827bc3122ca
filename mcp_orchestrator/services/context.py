"""What every service shares: the store, the clock, the default workspace and the payload limit."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from ..errors import InvalidInput
from ..models import utcnow
from ..store.base import Store

DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024


class Context:
    """Handed to each service; the assembled ``Engine`` is one, so a test may set its clock once."""

    def __init__(
        self,
        store: Store,
        *,
        workspace: str | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.workspace = workspace
        self.max_payload_bytes = max_payload_bytes
        self._clock = clock

    def now(self) -> datetime:
        return self._clock()

    def check_payload(self, field: str, value: Any) -> None:
        """Refuse a value that is not plain JSON or is over the payload limit."""
        if value is None:
            return
        try:
            encoded = json.dumps(value, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
        except (ValueError, TypeError, RecursionError) as exc:
            raise InvalidInput(f"{field} is not plain JSON ({exc}); NaN and Infinity are not allowed") from exc
        size = len(encoded.encode())
        if size > self.max_payload_bytes:
            raise InvalidInput(
                f"{field} is {size} bytes, over the limit of {self.max_payload_bytes} bytes; store large data "
                "in a file and record its path instead",
                field=field,
                size=size,
            )
