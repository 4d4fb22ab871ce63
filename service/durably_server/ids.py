"""Identifiers and time as the executor stores them.

Run and event ids are ULIDs, made as the SDK makes the ids of the events it sends
(`durably.protocol.ids`): they sort by creation time, so "newest first" and page tokens are a
plain comparison on the primary key, with no extra index.
"""

from __future__ import annotations

import time

from durably.protocol.ids import new_id as new_id


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch: the unit of every stored time."""
    return int(time.time() * 1000)
