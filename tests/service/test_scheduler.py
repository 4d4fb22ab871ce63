"""The dispatcher: work it could not lease because the store failed is leased later, not dropped; new
runs wait for runs being read back to be woken, but not for long; work under way does not wait for new
runs being read back."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from durably_server.engine import scheduler as scheduler_module
from durably_server.engine.runs import ActiveRun, ActiveRuns, new_state
from durably_server.engine.scheduler import Lease, Scheduler, WorkerConn
from durably_server.model import Event, QueueItem, RunRecord, RunStatus
from durably_server.store import Store
from durably_server.store import records as sql


class RunsFailingOnce(ActiveRuns):
    """The store's first read of runs fails, as a disk error would."""

    failures = 1

    async def load_many(self, run_ids: list[str]) -> None:
        if self.failures:
            self.failures -= 1
            raise sqlite3.OperationalError("disk I/O error")
        await super().load_many(run_ids)


class RunsReadSlowly(ActiveRuns):
    """Reads of runs from the store wait until `answer` is set, as under a busy reader thread."""

    answer: asyncio.Event

    async def load_many(self, run_ids: list[str]) -> None:
        await self.answer.wait()
        await super().load_many(run_ids)


def _seed(conn: sqlite3.Connection) -> QueueItem:
    sql.insert_event(conn, Event("ev-1", "demo/start", b"{}", 1), 1)
    return sql.insert_run(conn, RunRecord("run-1", "app", "fn", "ev-1", RunStatus.QUEUED, 1))


async def _no_payloads(lease: Lease) -> bool:
    return True


@contextlib.asynccontextmanager
async def _dispatching(path: Path, runs: type[ActiveRuns]) -> AsyncIterator[tuple[Scheduler, WorkerConn, QueueItem]]:
    """A started scheduler on a store holding one queued run, and a worker of capacity 1 for it."""
    store = Store(path, asyncio.get_running_loop())
    scheduler = Scheduler(runs(store), store, lambda lease: None, lambda key: None, _no_payloads)
    try:
        item = await store.write(_seed)
        worker = WorkerConn("w1", "app", "worker", frozenset({"fn"}), capacity=1)
        scheduler.attach(worker)
        scheduler.start()
        yield scheduler, worker, item
    finally:
        await scheduler.stop()
        store.close()


async def test_work_whose_run_could_not_be_read_is_leased_once_the_store_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scheduler_module, "RETRY_DISPATCH_S", 0.05)
    async with _dispatching(tmp_path / "sched.db", RunsFailingOnce) as (scheduler, worker, item):
        scheduler.add([item], new_run=True)
        lease = await asyncio.wait_for(worker.outbox.get(), 5)
        assert isinstance(lease, Lease) and lease.run.id == "run-1" and lease.items == [item]


async def test_work_delayed_to_a_wall_clock_time_is_leased_soon_after_the_clock_is_set_past_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retry's backoff ends at a wall-clock instant (it must survive a restart); when the machine's
    clock is set forward past it, the dispatcher notices within MAX_WAIT_S, not after the backoff."""
    monkeypatch.setattr(scheduler_module, "MAX_WAIT_S", 0.05)
    shift = {"ms": 0}
    real_now = scheduler_module.now_ms
    monkeypatch.setattr(scheduler_module, "now_ms", lambda: real_now() + shift["ms"])
    async with _dispatching(tmp_path / "sched.db", ActiveRuns) as (scheduler, worker, item):
        scheduler.add([dataclasses.replace(item, available_ms=real_now() + 3_600_000)])
        await asyncio.sleep(0.2)
        assert worker.outbox.empty(), "leased an hour early"
        shift["ms"] = 3_600_000
        lease = await asyncio.wait_for(worker.outbox.get(), 2)
        assert isinstance(lease, Lease) and lease.items[0].id == item.id


@pytest.mark.parametrize(
    ("new_run", "hold_s", "while_waking"),
    [(True, 30.0, False), (True, 0.3, True), (False, 30.0, True)],
    ids=["new-run-waits-for-the-read", "new-run-waits-at-most-max-start-hold", "work-under-way-does-not-wait"],
)
async def test_new_runs_wait_while_runs_are_read_back_to_be_woken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, new_run: bool, hold_s: float, while_waking: bool
) -> None:
    """Under a steady stream of wake-ups some read is always in flight: new runs start after
    MAX_START_HOLD_S anyway."""
    monkeypatch.setattr(scheduler_module, "MAX_START_HOLD_S", hold_s)
    async with _dispatching(tmp_path / "sched.db", ActiveRuns) as (scheduler, worker, item):
        with scheduler.waking():
            scheduler.add([item], new_run=new_run)
            if new_run:
                await asyncio.sleep(0.1)
                assert worker.outbox.empty(), "a new run started at once while runs were being woken"
            if while_waking:
                lease = await asyncio.wait_for(worker.outbox.get(), 2)
        if not while_waking:
            lease = await asyncio.wait_for(worker.outbox.get(), 2)
        assert isinstance(lease, Lease) and lease.items == [item]


async def test_work_under_way_is_leased_while_new_runs_are_read_back(tmp_path: Path) -> None:
    """A wake-up coming due while the dispatcher reads the next new runs from the store is leased at once,
    not after the read (under W6's load a read took up to 45 ms)."""
    RunsReadSlowly.answer = asyncio.Event()
    async with _dispatching(tmp_path / "sched.db", RunsReadSlowly) as (scheduler, worker, item):
        worker.capacity = 2
        scheduler.add([item], new_run=True)  # run-1 is not in memory: it must be read back
        await asyncio.sleep(0.05)
        event = Event("ev-2", "demo/start", b"{}", 1)
        scheduler._runs.add(ActiveRun("run-2", "app", "fn", event, new_state(event), RunStatus.SLEEPING))
        woken = QueueItem(-7, "run-2", "app", "fn")
        scheduler.add([woken])
        lease = await asyncio.wait_for(worker.outbox.get(), 2)
        assert isinstance(lease, Lease) and lease.items == [woken]
        RunsReadSlowly.answer.set()
        lease = await asyncio.wait_for(worker.outbox.get(), 2)
        assert isinstance(lease, Lease) and lease.items == [item]


async def test_a_new_run_gone_from_the_store_is_dropped_and_the_next_one_starts(tmp_path: Path) -> None:
    async with _dispatching(tmp_path / "sched.db", ActiveRuns) as (scheduler, worker, item):
        scheduler.add([dataclasses.replace(item, id=99, run_id="run-gone")], new_run=True)
        scheduler.add([item], new_run=True)
        lease = await asyncio.wait_for(worker.outbox.get(), 2)
        assert isinstance(lease, Lease) and lease.items == [item]


async def test_work_delayed_to_several_times_is_leased_at_each_not_before(tmp_path: Path) -> None:
    """One timer wakes the dispatcher for the earliest delayed unit; each later one is leased when its own
    time comes (the timer is armed again as the earlier ones are leased), none before."""
    async with _dispatching(tmp_path / "sched.db", ActiveRuns) as (scheduler, worker, item):
        worker.capacity = 3
        start = scheduler_module.now_ms()
        dues = [start + 300, start + 100, start + 200]
        for n, due in enumerate(dues):
            scheduler.add([dataclasses.replace(item, id=100 + n, available_ms=due)])
        for due in sorted(dues):
            lease = await asyncio.wait_for(worker.outbox.get(), 2)
            leased_at = scheduler_module.now_ms()
            assert isinstance(lease, Lease) and lease.items[0].available_ms == due
            assert due <= leased_at < due + 500, f"leased {leased_at - due} ms after its time"
