"""Runs in flight, held in memory with their memoized state.

A run is loaded from the store the first time it is dispatched after a restart and
dropped when it ends, so the store is read once per run, not once per step.
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass, field
from enum import Enum

from durably_server._core import RunState
from durably_server.engine.concurrency import Slot
from durably_server.model import Event, RunStatus
from durably_server.store import Store
from durably_server.store import records as sql


class Discovery(Enum):
    """Where the run's discovery execution is: at most one exists at a time, so that two
    executions can never both run the same new step inline."""

    NONE = "none"
    QUEUED = "queued"
    LEASED = "leased"


@dataclass(slots=True)
class ActiveRun:
    id: str
    app_id: str
    function_id: str
    event: Event
    state: RunState
    status: RunStatus
    # Planned steps not recorded yet: queued or running as targets.
    pending: set[str] = field(default_factory=set)
    discovery: Discovery = Discovery.NONE
    # A step finished while the discovery was running: it may not have seen it, so run another.
    rediscover: bool = False
    # Its places under the function's concurrency limits (worked out on first dispatch).
    slots: list[tuple[Slot, int]] | None = None
    # Results of one run are merged one at a time: check, commit, then record.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def new_state(event: Event) -> RunState:
    return RunState(base_bytes=len(event.data_json))


class ActiveRuns:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._runs: dict[str, ActiveRun] = {}

    def add(self, run: ActiveRun) -> None:
        self._runs[run.id] = run

    def cached(self, run_id: str) -> ActiveRun | None:
        return self._runs.get(run_id)

    def evict(self, run_id: str) -> None:
        self._runs.pop(run_id, None)

    async def get(self, run_id: str) -> ActiveRun | None:
        """The run with its state, from memory or else from the store (None if unknown)."""
        run = self._runs.get(run_id)
        if run is not None:
            return run
        loaded = await self._store.read(lambda conn: _load(conn, run_id))
        if loaded is None:
            return None
        # Another task may have loaded it while this one read.
        return self._runs.setdefault(run_id, loaded)


def _load(conn: sqlite3.Connection, run_id: str) -> ActiveRun | None:
    record = sql.load_run(conn, run_id, with_steps=True)
    if record is None:
        return None
    event = sql.load_event(conn, record.event_id)
    if event is None:
        return None
    state = new_state(event)
    state.record_batch([step.memo() for step in record.steps])
    run = ActiveRun(record.id, record.app_id, record.function_id, event, state, record.status)
    for target in sql.load_run_queue(conn, run_id):
        if target:
            run.pending.add(target)
        else:
            run.discovery = Discovery.QUEUED
    run.pending.update(sql.load_run_timers(conn, run_id))
    return run
