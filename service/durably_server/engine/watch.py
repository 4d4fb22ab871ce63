"""Wake the callers of WaitForRun / WatchRun when a run changes, without polling the store.

WaitForRun waits only for the end: waking it at every step would make it reload the whole run
once per step, O(N²) over a long run. WatchRun wants every change (a step recorded, a status).
"""

from __future__ import annotations

import asyncio


class RunWatch:
    def __init__(self) -> None:
        self._changes: dict[str, asyncio.Event] = {}
        self._ends: dict[str, asyncio.Event] = {}

    def changed(self, run_id: str, *, ended: bool = False) -> None:
        for waiters in (self._changes, self._ends) if ended else (self._changes,):
            event = waiters.pop(run_id, None)
            if event is not None:
                event.set()

    def subscribe(self, run_id: str, *, ends_only: bool = False) -> asyncio.Event:
        """An event set at the next change of `run_id` (with `ends_only`, when it ends); subscribe
        *before* reading the run."""
        waiters = self._ends if ends_only else self._changes
        event = waiters.get(run_id)
        if event is None:
            event = waiters[run_id] = asyncio.Event()
        return event
