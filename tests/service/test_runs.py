"""ActiveRuns: what the daemon holds of a run is never older than a change it applied meanwhile."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import threading
from pathlib import Path

import pytest
from durably_server.engine import runs as runs_module
from durably_server.engine.runs import ActiveRun, ActiveRuns
from durably_server.model import Event, RunRecord, RunStatus, StepRecord, StepStatus
from durably_server.store import Store
from durably_server.store import records as sql

RUN = "run-1"
STEP = hashlib.sha1(b"wait").hexdigest()  # the id of the first step named "wait"


def _seed(conn: sqlite3.Connection) -> None:
    sql.insert_event(conn, Event("ev-1", "demo/start", b"{}", 1), 1)
    sql.insert_run(conn, RunRecord(RUN, "app", "fn", "ev-1", RunStatus.WAITING, 1))


def _step_done(conn: sqlite3.Connection) -> None:
    step = StepRecord(RUN, STEP, "wait", 0, StepStatus.COMPLETED, b'{"ok":true}', None, 1, 2, 2)
    sql.insert_steps(conn, RUN, [step])


async def test_a_run_changed_while_it_is_read_is_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The dispatcher reads a parked run back while a commit completes one of its steps. The executor
    finds the run not held and leaves memory alone; the read, taken before that commit, must not
    become what is held (its Execute would lack the step, and the run would wait for it forever)."""
    store = Store(tmp_path / "runs.db", asyncio.get_running_loop())
    try:
        await store.write(_seed)
        read_once, release = threading.Event(), threading.Event()
        real_load = runs_module._load
        reads: list[list[str]] = []

        def load_then_wait(conn: sqlite3.Connection, run_ids: list[str]) -> list[ActiveRun]:
            loaded = real_load(conn, run_ids)  # the snapshot is taken here, before the step commits
            reads.append(list(run_ids))
            if len(reads) == 1:
                read_once.set()
                release.wait(10)
            return loaded

        monkeypatch.setattr(runs_module, "_load", load_then_wait)
        runs = ActiveRuns(store)
        loading = asyncio.create_task(runs.load_many([RUN]))
        assert await asyncio.to_thread(read_once.wait, 10)
        await store.write(_step_done)
        runs.changed(RUN)  # what Executor._apply does for a change to a run it does not hold
        release.set()
        await loading

        held = runs.cached(RUN)
        assert held is not None and held.state.contains(STEP)
        assert reads == [[RUN], [RUN]]
    finally:
        store.close()


async def test_a_read_with_no_change_meanwhile_is_read_once(tmp_path: Path) -> None:
    store = Store(tmp_path / "runs.db", asyncio.get_running_loop())
    try:
        await store.write(_seed)
        await store.write(_step_done)
        runs = ActiveRuns(store)
        runs.changed(RUN)  # not being read: nothing to do
        await runs.load_many([RUN])
        held = runs.cached(RUN)
        assert held is not None and held.state.contains(STEP) and held.status is RunStatus.WAITING
    finally:
        store.close()
