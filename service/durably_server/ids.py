"""Identifiers the executor hands out.

Run and event ids are ULIDs (48-bit millisecond time + 80 random bits, Crockford
base32): they sort by creation time, so "newest first" and page tokens are a plain
comparison on the primary key, with no extra index.
"""

from __future__ import annotations

import base64
import os
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _ALPHABET.encode())


def new_id(now_ms: int | None = None) -> str:
    """Return a 26-character ULID."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    # 130 bits as 26 base32 digits, in C: shifted into 17 bytes, the first digit is the (zero) top
    # bits and the 28th the one padding bit. Every run, event and queue row takes one of these.
    return base64.b32encode((value << 1).to_bytes(17, "big"))[1:27].translate(_CROCKFORD).decode()


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch: the unit of every stored time."""
    return int(time.time() * 1000)
