"""Event and run ids: ULIDs (48-bit millisecond time + 80 random bits, Crockford base32), so they sort
by creation time and "newest first" is a comparison on the key. Both ends make them: the executor for
runs (and for events that come without an id), the SDK for every event it sends without one, so that
a SendEvents the SDK retries after a lost answer stores each event once (its id deduplicates)."""

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
