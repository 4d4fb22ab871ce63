"""One timer for many due times: run timeouts, sleeps, wait and invoke expiries.

Due times live in a heap; a single task sleeps until the earliest and hands the due
payloads to the callback, up to `FIRE_BATCH` per call: 10,000 sleeps ending in the same
second then cost ten callbacks (and ten commits), not 10,000 tasks at once. What must
survive a restart is kept by the caller (timers table) or derived from the store (run
timeouts) and added back at start-up.

Due times are wall-clock milliseconds (they are stored, and must mean the same instant after a
restart), but the loop sleeps on its monotonic clock. A payload fires only once the wall clock has
reached its due time, so a clock set back never fires anything early; and the task looks at the
wall clock again at least every `MAX_WAIT_S`, so a clock set forward (or a host resumed from
suspension) fires what became due within that, not after the rest of the monotonic wait.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Generic, Protocol, TypeVar

from durably_server.ids import now_ms

log = logging.getLogger("durably.alarms")

T = TypeVar("T")

FIRE_BATCH = 1000

MAX_WAIT_S = 1.0
"""The longest the task sleeps without reading the wall clock again (see the module docstring)."""

RETRY_MS = 1000
"""Alarms whose firing failed (the store could not read or commit what they do) fire again this much
later: they are gone from the heap once fired, and would otherwise wait for the next start-up."""


Fire = Callable[[list[T]], Coroutine[Any, Any, Sequence[T] | None]]
"""Does what the due payloads call for; returns those it could not do (None: all done). Those, or all of
them if it raises, fire again `RETRY_MS` later."""


class Heap(Protocol[T]):
    """The due payloads in order: a heap, in one of the two layouts below."""

    def push(self, due_ms: int, payload: T) -> None: ...

    def earliest(self) -> int | None:
        """The earliest due time; None when empty."""

    def pop(self) -> T: ...

    def __len__(self) -> int: ...


class PayloadHeap(Generic[T]):
    """Any payloads: each entry is (due time, sequence number, payload); the number keeps payloads
    that do not compare (an enum) from ever being compared."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, T]] = []
        self._seq = itertools.count()

    def push(self, due_ms: int, payload: T) -> None:
        heapq.heappush(self._heap, (due_ms, next(self._seq), payload))

    def earliest(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def pop(self) -> T:
        return heapq.heappop(self._heap)[2]

    def __len__(self) -> int:
        return len(self._heap)


ID_BITS = 63
"""Row ids are SQLite rowids: below 2**63."""


class IdHeap:
    """Payloads that are row ids: each entry is one int, the due time above the id. A sleeping run costs
    the daemon this entry until its timer is due: 48 bytes against 168 for a tuple of three."""

    def __init__(self) -> None:
        self._heap: list[int] = []

    def push(self, due_ms: int, payload: int) -> None:
        if not 0 <= payload < 1 << ID_BITS:
            raise ValueError(f"not a row id: {payload}")
        heapq.heappush(self._heap, due_ms << ID_BITS | payload)

    def earliest(self) -> int | None:
        return self._heap[0] >> ID_BITS if self._heap else None

    def pop(self) -> int:
        return heapq.heappop(self._heap) & ((1 << ID_BITS) - 1)

    def __len__(self) -> int:
        return len(self._heap)


class Alarms(Generic[T]):
    def __init__(self, fire: Fire[T], heap: Heap[T] | None = None) -> None:
        self._fire = fire
        self._heap: Heap[T] = PayloadHeap() if heap is None else heap
        # What the task awaits: resolved by the clock or by a new earliest due time. A future and a
        # loop timer, not `wait_for` on an Event: that costs a task and a raised TimeoutError per wait,
        # and under a stream of sleeps ending (W6) the task waits about once per millisecond.
        self._wakeup: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._firing: set[asyncio.Task[None]] = set()

    def add(self, due_ms: int, payload: T) -> None:
        # Only a new earliest due time shortens the wait: waking the loop for every later one
        # (10,000 sleeps queued in a burst) would cost a wake-up and a new wait each.
        earliest = self._heap.earliest()
        if earliest is None or due_ms < earliest:
            _wake(self._wakeup)
        self._heap.push(due_ms, payload)

    def __len__(self) -> int:
        return len(self._heap)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="durably-alarms")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            earliest = self._heap.earliest()
            wait_s = None if earliest is None else (earliest - now_ms()) / 1000
            if wait_s is None or wait_s > 0:
                self._wakeup = wakeup = loop.create_future()
                timer = None if wait_s is None else loop.call_later(min(wait_s, MAX_WAIT_S), _wake, wakeup)
                try:
                    await wakeup
                finally:
                    self._wakeup = None
                    if timer is not None:
                        timer.cancel()
                continue
            # Everything due fires now, in batches that run concurrently.
            now = now_ms()
            while _is_due(self._heap.earliest(), now):
                due: list[T] = []
                while len(due) < FIRE_BATCH and _is_due(self._heap.earliest(), now):
                    due.append(self._heap.pop())
                task: asyncio.Task[None] = asyncio.create_task(self._fire_or_retry(due))
                self._firing.add(task)
                task.add_done_callback(self._fired)

    async def _fire_or_retry(self, due: list[T]) -> None:
        try:
            failed = await self._fire(due)
        except Exception:  # firing again is harmless: each alarm's work checks whether it is still due
            log.exception("%d alarms could not fire", len(due))
            failed = due
        if failed:
            log.warning("%d alarms fire again in %d ms", len(failed), RETRY_MS)
            again = now_ms() + RETRY_MS
            for payload in failed:
                self.add(again, payload)

    def _fired(self, task: asyncio.Task[None]) -> None:
        self._firing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("an alarm failed", exc_info=task.exception())


def _is_due(earliest: int | None, now: int) -> bool:
    return earliest is not None and earliest <= now


def _wake(wakeup: asyncio.Future[None] | None) -> None:
    if wakeup is not None and not wakeup.done():
        wakeup.set_result(None)
