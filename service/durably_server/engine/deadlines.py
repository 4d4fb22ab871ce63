"""Where a run's start and finish timeouts fire.

Deadlines are derived from what the store already holds (a run's creation and start
times and its function's timeouts), so they need no table: the daemon rebuilds them at
start-up, and one timer wakes for the earliest.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Awaitable, Callable
from enum import Enum

from durably_server.ids import now_ms

log = logging.getLogger("durably.deadlines")


class Deadline(Enum):
    START = "start"
    FINISH = "finish"


class Deadlines:
    def __init__(self, fire: Callable[[str, Deadline], Awaitable[None]]) -> None:
        self._fire = fire
        self._heap: list[tuple[int, int, str, Deadline]] = []
        self._seq = itertools.count()
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def add(self, run_id: str, kind: Deadline, due_ms: int) -> None:
        heapq.heappush(self._heap, (due_ms, next(self._seq), run_id, kind))
        self._changed.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="durably-deadlines")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        while True:
            self._changed.clear()
            if not self._heap:
                await self._changed.wait()
                continue
            wait_s = (self._heap[0][0] - now_ms()) / 1000
            if wait_s > 0:
                try:
                    await asyncio.wait_for(self._changed.wait(), wait_s)
                except TimeoutError:
                    pass
                continue
            _, _, run_id, kind = heapq.heappop(self._heap)
            try:
                await self._fire(run_id, kind)
            except Exception:
                log.exception("timing out run %s failed", run_id)
