"""Time-sortable identifiers (ULID layout, Crockford base32).

Ids sort in creation order, so the newest-first listing and its cursor need no second column.
Within one millisecond the random part is incremented, keeping ids from one process strictly
increasing.
"""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_lock = threading.Lock()
_last_ms = 0
_last_random = 0


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, digit = divmod(value, 32)
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars))


def new_id() -> str:
    """A 26-character id that sorts after every id this process made before."""
    global _last_ms, _last_random
    with _lock:
        now_ms = time.time_ns() // 1_000_000
        if now_ms <= _last_ms:
            now_ms = _last_ms
            _last_random += 1
        else:
            _last_ms = now_ms
            _last_random = int.from_bytes(os.urandom(10), "big") >> 1
        return _encode(now_ms, 10) + _encode(_last_random, 16)
