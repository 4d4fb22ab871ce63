"""Wake the callers of WaitForRun / WatchRun when a run changes, without polling the store."""

from __future__ import annotations

import asyncio


class RunWatch:
    def __init__(self) -> None:
        self._waiters: dict[str, asyncio.Event] = {}

    def changed(self, run_id: str) -> None:
        event = self._waiters.pop(run_id, None)
        if event is not None:
            event.set()

    def subscribe(self, run_id: str) -> asyncio.Event:
        """An event set at the next change of `run_id`; subscribe *before* reading the run."""
        event = self._waiters.get(run_id)
        if event is None:
            event = self._waiters[run_id] = asyncio.Event()
        return event
