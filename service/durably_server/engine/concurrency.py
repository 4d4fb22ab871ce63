"""How many executions of a function may run at once, in all and per key.

A limit counts executing steps (a lease of N planned steps takes N places; a discovery
takes one). Work that finds its limit full waits, durably queued, in a per-key line and
goes back to the front of its function's queue when a place frees up, so a busy key
never holds up the others.
"""

from __future__ import annotations

import json
from collections import Counter

from durably_server.model import Event, FunctionSpec

# (app id, function id, index of the limit, key value)
Slot = tuple[str, str, int, str]


def key_value(path: str, event: Event) -> str:
    """The value `path` ("event.data.userId") has in `event`, as text; "" when absent."""
    if not path:
        return ""
    value: object = {"id": event.id, "name": event.name, "data": json.loads(event.data_json), "ts": event.ts_ms}
    for part in path.split(".")[1:]:
        if not isinstance(value, dict) or part not in value:
            return ""
        value = value[part]
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def slots_of(spec: FunctionSpec, event: Event) -> list[tuple[Slot, int]]:
    return [
        ((spec.app_id, spec.id, n, key_value(limit.key, event)), limit.limit)
        for n, limit in enumerate(spec.concurrency)
    ]


class Concurrency:
    def __init__(self) -> None:
        self._running: Counter[Slot] = Counter()

    def room(self, slots: list[tuple[Slot, int]]) -> tuple[int, Slot | None]:
        """How many more may start, and the slot that is full when none may."""
        room, full = 1 << 30, None
        for slot, limit in slots:
            free = limit - self._running[slot]
            if free < room:
                room, full = free, slot
        return max(0, room), full

    def take(self, slots: list[tuple[Slot, int]], n: int) -> None:
        for slot, _ in slots:
            self._running[slot] += n

    def give(self, slots: list[tuple[Slot, int]], n: int) -> list[Slot]:
        for slot, _ in slots:
            self._running[slot] -= n
            if self._running[slot] <= 0:
                del self._running[slot]
        return [slot for slot, _ in slots]
