"""Another process locks the daemon's SQLite file (docs: reliability.md T9 a): a call that cannot be
stored ends with UNAVAILABLE, which the SDK retries, never with an error no client retries, never
acknowledged and then lost; once the lock is gone every acknowledged event has its run."""

from __future__ import annotations

import asyncio
import sqlite3

import durably
import grpc
from durably.errors import UnavailableError
from durably.protocol.v1 import api_pb2, api_pb2_grpc, common_pb2

from .harness import (
    CHECKPOINT,
    CRASH,
    Harness,
    blocked_in_step_two,
    describe,
    disk_full,
    open_client,
    wait_until,
)

BUSY_TIMEOUT_S = 5  # the daemon's (store/database.py)
FULL_DISK_S = 3.0


async def test_sends_while_another_process_holds_the_store_wait_or_are_refused_as_unavailable(
    harness: Harness,
) -> None:
    harness.start_worker(CRASH)
    lock = sqlite3.connect(harness.daemon.db, timeout=10, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    async with open_client(harness.address) as client:
        try:
            async with grpc.aio.insecure_channel(harness.address) as channel:  # one try, no SDK retry
                event = common_pb2.Event(name="demo/echo", data_json=b'{"n": 0}', id="raw-0")
                request = api_pb2.SendEventsRequest(events=[event])
                try:
                    await api_pb2_grpc.ApiServiceStub(channel).SendEvents(request, timeout=BUSY_TIMEOUT_S + 10)
                except grpc.RpcError as exc:
                    refused = exc
            assert refused.code() == grpc.StatusCode.UNAVAILABLE, refused
            assert "database is locked" in (refused.details() or ""), refused.details()
            sends = [asyncio.create_task(client.send(durably.Event("demo/echo", {"n": n}))) for n in range(1, 6)]
            await asyncio.sleep(1.0)
            assert not any(send.done() for send in sends), "a send was acknowledged while the store was locked"
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        outcomes = await asyncio.gather(*sends, return_exceptions=True)
        for outcome in outcomes:
            assert isinstance(outcome, list | UnavailableError), outcome
        acked = [ids[0] for ids in outcomes if isinstance(ids, list)]
        assert acked, "no send got through once the lock was gone"
        for event_id in acked:
            [run] = await client.list_runs(event_id=event_id)
            assert (await client.wait_for_run(run.id, timeout=30)).status == "completed"
        assert await client.list_runs(event_id="raw-0") == [], "the refused event was stored"
    assert harness.daemon.alive(), harness.daemon.report()


async def test_a_worker_registering_while_the_store_is_locked_is_refused_as_unavailable_and_comes_back(
    harness: Harness,
) -> None:
    """Registration stores the worker's functions; when it cannot, the stream ends UNAVAILABLE with the
    store's words (it ended UNKNOWN, "Unexpected <class 'sqlite3.OperationalError'>"), and the worker
    registers again once the store is free."""
    lock = sqlite3.connect(harness.daemon.db, timeout=10, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        worker = harness.start_worker(CRASH, wait=False)
        wait_until(
            lambda: "UNAVAILABLE: the store could not complete the call (database is locked)" in worker.stderr(),
            timeout=BUSY_TIMEOUT_S + 20,
            what="the worker to log the refusal",
        )
        assert "UNKNOWN" not in worker.stderr(), worker.stderr()
        assert harness.connected_workers() == {}, "registered though its functions could not be stored"
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    wait_until(lambda: harness.connected_workers() != {}, timeout=30, what="the worker to register")
    async with open_client(harness.address) as client:
        [event_id] = await client.send(durably.Event("demo/echo", {"n": 1}))
        [run] = await client.list_runs(event_id=event_id)
        assert (await client.wait_for_run(run.id, timeout=30)).status == "completed"
    assert worker.alive() and harness.daemon.alive(), harness.daemon.report()


async def test_steps_finishing_while_the_store_is_locked_are_committed_once_it_is_free(harness: Harness) -> None:
    """A step's result that cannot be committed (the file locked past the busy timeout) is not
    acknowledged: the checkpoint is refused and the step reported again, or its execution runs again;
    once the store is free every run completes, each step recorded once, no committed step run again."""
    harness.start_worker(CHECKPOINT)
    async with open_client(harness.address) as client:
        runs = [await blocked_in_step_two(harness, client) for _ in range(3)]
        lock = sqlite3.connect(harness.daemon.db, timeout=10, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        try:
            for run in runs:
                harness.release(f"go-{run.id}")
            await asyncio.sleep(BUSY_TIMEOUT_S + 2)
            for run in runs:
                assert (await client.get_run(run.id)).status == "running"
            assert "could not commit a checkpoint" in harness.daemon.stderr(), "no commit was refused"
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        for run in runs:
            done = await client.wait_for_run(run.id, timeout=60)
            assert done.status == "completed", describe(done)
            assert done.output == {"one": 1, "two": 2, "three": 3}
            assert [s.name for s in done.steps] == ["one", "two", "three"], describe(done)
            assert harness.count("step", run=run.id, name="one") == 1, "a committed step ran again"
    assert harness.daemon.alive(), harness.daemon.report()


async def test_a_full_disk_does_not_run_a_step_again_and_again(harness: Harness) -> None:
    """A disk that refuses every write fails each commit at once, and an execution whose result was not
    committed runs again: without a pause in between, its step bodies (and their side effects) ran in a
    tight loop."""
    harness.start_worker(CHECKPOINT)
    async with open_client(harness.address) as client:
        run = await blocked_in_step_two(harness, client)
        with disk_full(harness.daemon):
            harness.release(f"go-{run.id}")
            await asyncio.sleep(FULL_DISK_S)
            assert (await client.get_run(run.id)).status == "running", "a commit went through"
            ran = harness.count("step", run=run.id, name="two", phase="finished")
        assert 1 <= ran <= 4, f"step two ran {ran} times in {FULL_DISK_S} s of failing commits"
        done = await client.wait_for_run(run.id, timeout=60)
    assert done.status == "completed" and done.output == {"one": 1, "two": 2, "three": 3}, describe(done)
    assert harness.count("step", run=run.id, name="one") == 1, "a committed step ran again"
    assert harness.daemon.alive(), harness.daemon.report()
