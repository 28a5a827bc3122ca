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


def prefix_range(prefix: str) -> tuple[str, str] | None:
    """The ids starting with ``prefix`` as a range ``low <= id < high``, or None when no id can (a character
    outside the alphabet, or only its last letter). ``high`` is spelled in the alphabet too: digits and
    capitals sort alike under every database collation, punctuation does not."""
    if not prefix or any(char not in _ALPHABET for char in prefix):
        return None
    stem = prefix.rstrip(_ALPHABET[-1])
    if not stem:
        return None  # 'ZZ...': past every id (the first character of an id's time is at most '7')
    return prefix, stem[:-1] + _ALPHABET[_ALPHABET.index(stem[-1]) + 1]
