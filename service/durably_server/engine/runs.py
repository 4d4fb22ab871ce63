"""Runs in flight, held in memory with their memoized state.

A run is loaded from the store the first time it is dispatched after a restart, after it
was parked (sleeping, waiting; one woken from a sleep is read just before its sleep ends, see
`MAX_HELD_WOKEN`) or when it was created in a burst bigger than `MAX_HELD_NEW`, and dropped
when it ends or parks, so the store is read once per stretch of execution, not once per step.
Loads come in batches (`load_many`): one trip to a reader thread for up to `LOAD_BATCH` runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import TypeVar

from durably_server._core import RunState
from durably_server.engine.concurrency import Slot
from durably_server.model import Event, RunStatus, StepRecord
from durably_server.store import Store
from durably_server.store import records as sql

T = TypeVar("T")


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
    # Store failures in a row (reports not committed, results not read back) since the last committed
    # report: how long its next execution waits (engine/retry.py STORE_RETRY).
    store_failures: int = 0


MAX_HELD_NEW = 500
"""A new run is kept in memory from its creation only while fewer runs than this are held; the
others wait in the store until dispatched. 10,000 runs created at once would otherwise hold 10,000 run
objects at the same moment, memory the Python allocator keeps for good once freed. Reading them back is
cheap (four queries per `LOAD_BATCH`), so holding fewer costs little."""

MAX_HELD_WOKEN = 600
"""A run woken from a sleep (engine/wakes.py) is read back just before the sleep ends, not when its turn to
be dispatched comes, while fewer runs than this are held: the dispatcher waits for each read it
makes, leasing nothing meanwhile, and under a burst of wake-ups that wait was the lag's tail. Beyond
this the dispatcher reads them, as it does the rest. W6 (10,000 one-second sleeps), two runs each:
300 / 600 / 1,000 gave a wake-up lag p99 of 103-119 / 86-95 / 119-153 ms and 868-886 / 918-935 /
974-1,070 B of peak daemon RSS per sleeping run (target 1,024)."""

LOAD_BATCH = 64
"""Runs read from the store in one trip (see `ActiveRuns.load_many`): enough to make a trip's fixed
costs small per run; more would hold runs in memory long before their turn (bench W6 with 64, 128
and 256, W5 with 64 and 128: throughput within 3-4 %, the lowest peak RSS and wake-up lag with 64)."""

HELD_PAYLOAD_BYTES = 64 * 1024
"""A committed step payload at least this big is not held in memory: a run's state may reach 32 MiB,
and the worker that reported a result keeps it (Register.keeps_reported), so in the common case
nobody needs it again; an Execute that must carry it reads it back from the store
(`Executor._read_payloads`). Smaller ones stay, so ordinary runs never wait for that read."""


def new_state(event: Event) -> RunState:
    return RunState(base_bytes=len(event.data_json))


def record_steps(state: RunState, steps: Iterable[StepRecord]) -> None:
    """Record committed steps in a run's state, all or none (a CoreError changes nothing), holding
    only the payloads smaller than `HELD_PAYLOAD_BYTES`."""
    start = state.step_count
    state.record_batch([step.memo() for step in steps])
    state.forget_payloads(start, HELD_PAYLOAD_BYTES)


class ActiveRuns:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._runs: dict[str, ActiveRun] = {}
        # For each read of runs in flight: the runs changed in the store since it started (see `changed`).
        self._changed_during: list[set[str]] = []

    def __len__(self) -> int:
        return len(self._runs)

    def add(self, run: ActiveRun) -> None:
        self._runs[run.id] = run

    def cached(self, run_id: str) -> ActiveRun | None:
        return self._runs.get(run_id)

    def evict(self, run_id: str) -> None:
        self._runs.pop(run_id, None)

    def changed(self, run_id: str) -> None:
        """A change to a run not held (a step completed, the run ended) was committed: a read of it in
        flight may have been taken before the commit, and must not become what is held."""
        for changed in self._changed_during:
            changed.add(run_id)

    @contextlib.contextmanager
    def _changes(self) -> Iterator[set[str]]:
        """The runs changed while the block runs (a read in flight)."""
        changed: set[str] = set()
        self._changed_during.append(changed)
        try:
            yield changed
        finally:
            self._changed_during = [other for other in self._changed_during if other is not changed]

    async def load_many(self, run_ids: list[str]) -> None:
        """Hold these runs (those not held yet and still in the store), read in one trip; runs changed
        while the read was in flight are read once more, so what is held is never older than what a
        change applied to memory in the meantime assumed (it found the run not held and left it)."""
        missing = [run_id for run_id in run_ids if run_id not in self._runs]
        while missing:
            with self._changes() as changed:
                loaded = await self._store.read(functools.partial(_load, run_ids=missing))
            for run in loaded:
                if run.id not in changed:
                    self._runs.setdefault(run.id, run)
            missing = [run_id for run_id in missing if run_id in changed and run_id not in self._runs]

    async def find_and_hold(
        self, find: Callable[[sqlite3.Connection], tuple[T, list[str]]], limit: int
    ) -> tuple[T, set[str]]:
        """Run `find` (what it found, and runs to hold) and read back up to `limit` of those runs not
        held yet, in one trip to a reader thread: a woken run is then ready for dispatch one trip
        sooner. What `find` found, and the ids of the runs this read put in memory. The runs are known
        only once the trip returns, so a run changed in the meantime is not held (the dispatcher reads
        it when its turn comes), where `load_many` would read it again."""
        with self._changes() as changed:
            found, loaded = await self._store.read(
                functools.partial(_find_and_load, find=find, held=self._runs, limit=limit)
            )
        held: set[str] = set()
        for run in loaded:
            if run.id not in changed and run.id not in self._runs:
                self._runs[run.id] = run
                held.add(run.id)
        return found, held


def _find_and_load(
    conn: sqlite3.Connection,
    find: Callable[[sqlite3.Connection], tuple[T, list[str]]],
    held: dict[str, ActiveRun],
    limit: int,
) -> tuple[T, list[ActiveRun]]:
    found, run_ids = find(conn)
    # `held` is the loop's dict, looked up from this reader thread: a membership test is atomic under
    # the GIL, and a run held by someone else meanwhile is kept as it is (`find_and_hold`).
    return found, _load(conn, [run_id for run_id in run_ids if run_id not in held][:limit]) if limit > 0 else []


def _load(conn: sqlite3.Connection, run_ids: list[str]) -> list[ActiveRun]:
    """The runs as the executor holds them, read with four queries for the whole batch."""
    records = sql.load_runs(conn, run_ids)
    events = sql.load_events(conn, [record.event_id for record in records])
    runs: dict[str, ActiveRun] = {}
    for record in records:
        event = events.get(record.event_id)
        if event is None:
            continue
        state = new_state(event)
        record_steps(state, record.steps)
        runs[record.id] = ActiveRun(record.id, record.app_id, record.function_id, event, state, record.status)
    for run_id, kind, step_id in sql.run_items(conn, run_ids):
        run = runs.get(run_id)
        if run is None:
            continue
        if kind == "timer" or step_id:
            run.pending.add(step_id)
        else:
            run.discovery = Discovery.QUEUED
    return list(runs.values())
