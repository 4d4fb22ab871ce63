"""ActiveRuns: what the daemon holds of a run is never older than a change it applied meanwhile."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import threading
from collections.abc import AsyncIterator
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


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A store holding one waiting run, `RUN`."""
    store = Store(tmp_path / "runs.db", asyncio.get_running_loop())
    try:
        await store.write(_seed)
        yield store
    finally:
        store.close()


def _hold_first_read(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event, list[list[str]]]:
    """Make the first read of runs take its snapshot, then wait for `release` (set once it has been
    taken: `read_once`); every read's run ids are listed."""
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
    return read_once, release, reads


async def test_a_run_changed_while_it_is_read_is_read_again(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The dispatcher reads a parked run back while a commit completes one of its steps. The executor
    finds the run not held and leaves memory alone; the read, taken before that commit, must not
    become what is held (its Execute would lack the step, and the run would wait for it forever)."""
    read_once, release, reads = _hold_first_read(monkeypatch)
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


async def test_a_read_with_no_change_meanwhile_is_read_once(store: Store) -> None:
    await store.write(_step_done)
    runs = ActiveRuns(store)
    runs.changed(RUN)  # not being read: nothing to do
    await runs.load_many([RUN])
    held = runs.cached(RUN)
    assert held is not None and held.state.contains(STEP) and held.status is RunStatus.WAITING


def _find_run(conn: sqlite3.Connection) -> tuple[str, list[str]]:
    return "found", [RUN]


async def test_a_run_changed_while_it_is_found_and_read_is_not_held(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """find_and_hold learns which runs to read only in the reader thread, so it cannot mark them as being
    read beforehand: a run changed while the trip is in flight must be left for the dispatcher to read
    (held, the snapshot would lack the step committed meanwhile)."""
    read_once, release, reads = _hold_first_read(monkeypatch)
    runs = ActiveRuns(store)
    finding = asyncio.create_task(runs.find_and_hold(_find_run, limit=10))
    assert await asyncio.to_thread(read_once.wait, 10)
    await store.write(_step_done)
    runs.changed(RUN)
    release.set()
    found, held = await finding

    assert found == "found" and held == set() and runs.cached(RUN) is None
    assert reads == [[RUN]]


async def test_find_and_hold_reads_the_runs_found_within_its_limit_and_skips_those_held(store: Store) -> None:
    runs = ActiveRuns(store)
    assert await runs.find_and_hold(_find_run, limit=0) == ("found", set())
    assert runs.cached(RUN) is None

    runs.changed(RUN)  # a change before the trip starts is in the snapshot: nothing to do
    found, held = await runs.find_and_hold(_find_run, limit=1)
    run = runs.cached(RUN)
    assert (found, held) == ("found", {RUN}) and run is not None and run.status is RunStatus.WAITING

    assert await runs.find_and_hold(_find_run, limit=1) == ("found", set())  # held already: not read again
    assert runs.cached(RUN) is run
