"""Identifiers the executor hands out.

Run and event ids are ULIDs (48-bit millisecond time + 80 random bits, Crockford
base32): they sort by creation time, so "newest first" and page tokens are a plain
comparison on the primary key, with no extra index.
"""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_id(now_ms: int | None = None) -> str:
    """Return a 26-character ULID."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch: the unit of every stored time."""
    return int(time.time() * 1000)
