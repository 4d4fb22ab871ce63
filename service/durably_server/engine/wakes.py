"""Sleeps that end without a commit of their own.

When a sleep's timer fires and its run sleeps on nothing else (no other timer, no wait, nothing
queued: most sleeping runs), the run is leased at once with the sleep completed in its memory, and
the completion is stored in the transaction that stores what that execution reports, not in one of
its own before it. That takes a commit off the path from a deadline to the handler's next step,
and under load every commit on that path waits for the writer's backlog.

Such a run is read back from the store `READ_AHEAD_MS` before its deadline, and its wake-up queued
to be dispatched at the deadline: the read (milliseconds on a reader thread, tens under a burst of
sleeps ending) is then off the path from the deadline to the handler's next step, and sleeps ending
within `READ_GRAIN_MS` of each other are read in one trip.

Nothing is lost if the daemon stops in between: the timer is still in the store, so it fires again
at start-up and the run is woken again. The worker may have run the steps after the sleep by then;
their results were not committed either, so they run again, as after any crash before a commit.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable

from durably_server._core import CoreError
from durably_server.engine.runs import ActiveRun, record_steps
from durably_server.model import QueueItem, StepRecord, StepStatus
from durably_server.store import records as sql

log = logging.getLogger("durably.executor")

READ_AHEAD_MS = 20
"""How long before its deadline a sleeping run is read back (up to `READ_GRAIN_MS` more): the read
takes 5-8 ms, 14-23 ms at its 90th percentile, under a burst of sleeps ending (W6); a longer lead holds
more runs in memory at once (W6 with 40: 960-1,100 B of peak daemon RSS per sleeping run against
950-965 with 20, target 1,024)."""

READ_GRAIN_MS = 10
"""Sleeps ending within this of each other are read back in one trip."""


def read_at(due_ms: int) -> int:
    """When to read back the run of a sleep ending at `due_ms`: `READ_AHEAD_MS` before it, rounded
    down to `READ_GRAIN_MS` so that neighbours fire together."""
    return (due_ms - READ_AHEAD_MS) // READ_GRAIN_MS * READ_GRAIN_MS


def due_by(read_ms: int) -> int:
    """The latest deadline of a sleep whose run is read back at `read_ms` or later (`read_at`'s bound)."""
    return read_ms + READ_AHEAD_MS + READ_GRAIN_MS


def wake_item(timer_id: int, app_id: str, function_id: str, timer: sql.Timer, now: int) -> QueueItem:
    """The discovery that wakes a run from the sleep `timer`: due at the sleep's deadline (or `now`,
    if that passed), the sleep completed then. Its id is the timer's, negated: it has no queue row,
    and no queue row has a negative id."""
    at = max(now, timer.due_ms)
    step = StepRecord(
        timer.run_id, timer.step_id, timer.name, timer.index, StepStatus.COMPLETED, b"null", None, 1, at, at
    )
    return QueueItem(-timer_id, timer.run_id, app_id, function_id, 0, at, wake=step)


def hold_wakes(run: ActiveRun, items: Iterable[QueueItem]) -> None:
    """On lease: the completed sleeps go into the run's memory (once), so that the execution carries them."""
    for item in items:
        step = item.wake
        if step is None or run.state.contains(step.id):
            continue
        try:
            record_steps(run.state, [step])
        except CoreError as exc:  # as for a sleep completed by a commit of its own (Executor._resolved)
            log.error("run %s: sleep %s completed but not held in memory: %s", run.id, step.name, exc)
        run.pending.discard(step.id)


def take_wakes(conn: sqlite3.Connection, items: Iterable[QueueItem]) -> list[StepRecord]:
    """In a report's transaction: the sleeps its items completed, to be stored before its own steps.
    Only the first transaction to take a sleep's timer gets it (a discovery may report in several
    checkpoints)."""
    return [
        item.wake for item in items if item.wake is not None and sql.drop_timer(conn, item.wake.run_id, item.wake.id)
    ]


def store_steps(conn: sqlite3.Connection, run_id: str, items: Iterable[QueueItem], steps: list[StepRecord]) -> int:
    """Store what a report or checkpoint of these items recorded: the sleeps they woke from, then
    `steps`. Returns how many sleeps."""
    woken = take_wakes(conn, items)
    if woken or steps:
        sql.insert_steps(conn, run_id, [*woken, *steps])
    return len(woken)
