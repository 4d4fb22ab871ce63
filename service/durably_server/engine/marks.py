"""Marks that a run is running, stored with the run's next commit rather than in one of their own.

A run leased for the first time is stored as running with its start time; one leased again after a
sleep or a wait is stored as running again. Neither is awaited. Committed on its own, a mark cost a
commit (an fsync) landing while the run's first step was under way, and that step's commit then
waited behind it: every run paid for it on its first step, a short run most (bench/README.md). So a
mark waits: the run's next report or checkpoint commits it in its own transaction, ahead of its own
changes (which may park or end the run); marks whose runs commit nothing within `DELAY_S` are
committed together then.

Until its mark is committed a started run still reads as queued in the store: the engine's memory
(`ActiveRun.status`) is what says whether it started.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable

from durably_server.model import RunStatus
from durably_server.store import records as sql

DELAY_S = 0.05
"""How long a mark waits for its run's next commit: longer than most steps take, short enough that
`GetRun` soon shows a long step's run as running."""

Mark = tuple[str, int | None]
"""A run id and its start time (None: running again after a sleep or wait)."""


class RunningMarks:
    def __init__(self, commit_alone: Callable[[list[Mark]], None]) -> None:
        self._pending: dict[str, int | None] = {}
        self._commit_alone = commit_alone
        self._timer: asyncio.TimerHandle | None = None

    def add(self, run_id: str, started_ms: int | None) -> None:
        if run_id in self._pending:  # leased again before its mark was stored: the first start counts
            earlier = self._pending[run_id]
            if earlier is not None:
                started_ms = earlier if started_ms is None else min(earlier, started_ms)
        self._pending[run_id] = started_ms
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(DELAY_S, self._due)

    def take(self, run_id: str) -> list[Mark]:
        """The run's mark, if it has one waiting, for the transaction about to commit the run's changes
        (`store_marks`); `put_back` if that transaction fails."""
        if run_id not in self._pending:
            return []
        return [(run_id, self._pending.pop(run_id))]

    def put_back(self, marks: list[Mark]) -> None:
        for run_id, started_ms in marks:
            self.add(run_id, started_ms)

    def flush(self) -> None:
        """Commit every waiting mark now (the daemon stops)."""
        if self._timer is not None:
            self._timer.cancel()
        self._due()

    def _due(self) -> None:
        self._timer = None
        marks, self._pending = list(self._pending.items()), {}
        if marks:
            self._commit_alone(marks)


def store_marks(conn: sqlite3.Connection, marks: list[Mark], ending: bool = False) -> None:
    """Store `marks` (in the caller's transaction). When the transaction also ends their run (`ending`),
    a running-again mark is left out: the end sets the status, and under a burst of sleeps ending that
    UPDATE (the run's row and its status index) was ~7 % of the writer's time."""
    for run_id, started_ms in marks:
        if started_ms is None:
            if not ending:
                sql.set_status(conn, run_id, RunStatus.RUNNING)
        else:
            sql.mark_started(conn, run_id, started_ms)
