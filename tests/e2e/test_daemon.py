"""The daemon process: ready line, graceful SIGTERM, one daemon per db file."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import durably
import pytest
from durably_server.server import GRACE_SECONDS

from .harness import CRASH, Harness, WorkerSpec, describe, find_run, open_client, run_cli

CHECKPOINT = WorkerSpec("checkpoint.py", ("cp-slow",))


async def test_sigterm_exits_zero_and_the_db_reopens(harness: Harness) -> None:
    harness.start_worker(CRASH)
    async with open_client(harness.address) as client:
        [event_id] = await client.send(durably.Event(name="demo/echo", data={"kept": True}))
        run = await find_run(client, event_id)
        assert (await client.wait_for_run(run.id, timeout=30)).status == "completed"

    assert harness.daemon.stop() == 0, harness.daemon.report()
    assert harness.daemon.db.is_file()

    harness.daemon.start()  # the lock was released; the state is still there
    async with open_client(harness.address) as client:
        again = await client.get_run(run.id)
        assert again.status == "completed" and again.output == {"echo": {"kept": True}}, describe(again)


async def test_sigterm_with_idle_workers_does_not_wait_out_the_grace(harness: Harness) -> None:
    # A worker's stream never ends by itself: the daemon ends it once nothing is under way.
    harness.start_worker(CRASH)
    harness.start_worker(CRASH)
    started = time.monotonic()
    assert harness.daemon.stop() == 0, harness.daemon.report()
    took = time.monotonic() - started
    assert took < GRACE_SECONDS / 2, f"stopping took {took:.2f} s"


async def test_sigterm_lets_a_running_step_report_before_the_streams_end(harness: Harness) -> None:
    worker = harness.start_worker(CRASH)
    async with open_client(harness.address) as client:
        [event_id] = await client.send(durably.Event(name="demo/crash-between", data={}))
        run = await find_run(client, event_id)
        await harness.until_started(run.id, "two")
    harness.daemon.terminate()
    await asyncio.sleep(GRACE_SECONDS / 4)
    assert harness.daemon.alive(), "the daemon stopped before the step under way reported"
    harness.release(f"go-{run.id}")
    assert harness.daemon.wait_exit(timeout=30) == 0, harness.daemon.report()
    assert harness.count("step", run=run.id, name="two", phase="finished") == 1

    harness.daemon.start()
    async with open_client(harness.address) as client:
        done = await client.wait_for_run(run.id, timeout=60)
    assert done.status == "completed", describe(done)
    assert done.output == {"one": {"n": 1}, "two": {"n": 2}, "three": {"n": 3}}, describe(done)
    # Step two's result was committed before the stop: it did not run again after the restart.
    assert harness.count("step", run=run.id, name="two", phase="started") == 1
    assert worker.alive()


async def test_sigterm_ends_a_checkpointing_stretch_at_a_step_boundary(harness: Harness) -> None:
    """A checkpointing execution runs step after step: on SIGTERM its next checkpoint is refused, so the
    worker stops there and reports that step in its final result. The stop does not wait out the grace
    and cut a step in the middle (which would run again after the restart): every step runs once."""
    harness.start_worker(CHECKPOINT)
    steps = 60  # 60 x 50 ms: longer than the grace
    async with open_client(harness.address) as client:
        [event_id] = await client.send(durably.Event(name="cp/slow", data={"n": steps, "ms": 50}))
        run = await find_run(client, event_id)
        await harness.until_started(run.id, "s5")
        started = time.monotonic()
        harness.daemon.terminate()
        assert harness.daemon.wait_exit(timeout=10) == 0, harness.daemon.report()
        took = time.monotonic() - started
        assert took < GRACE_SECONDS / 2, f"stopping took {took:.2f} s"
    harness.daemon.start()
    async with open_client(harness.address) as client:
        done = await client.wait_for_run(run.id, timeout=60)
    assert done.status == "completed" and done.output == steps, describe(done)
    runs_of = [harness.count("step", run=run.id, name=f"s{i}", phase="started") for i in range(steps)]
    assert runs_of == [1] * steps, f"steps that ran twice: {[f's{i}' for i, n in enumerate(runs_of) if n != 1]}"


async def test_second_daemon_on_the_same_db_refuses_to_start(harness: Harness) -> None:
    second = harness.add_daemon(db=harness.daemon.db, name="second-daemon")
    second.spawn()
    code = second.wait_exit(timeout=30)
    stderr = second.stderr()
    assert code == 1, f"second daemon exited with {code}\n{stderr}"
    assert second.ready_line() is None, second.stdout()
    assert "in use" in stderr, stderr
    assert str(harness.daemon.db) in stderr or str(harness.daemon.db.resolve()) in stderr, stderr

    # The first daemon is unharmed.
    assert harness.daemon.alive(), harness.daemon.report()
    async with open_client(harness.address) as client:
        assert await client.list_runs() == []


@pytest.mark.parametrize("trouble", ["locked by another program", "not a database"])
def test_a_database_it_cannot_open_stops_the_daemon_with_one_line(tmp_path: Path, trouble: str) -> None:
    db = tmp_path / "store.db"
    holder = None
    if trouble == "not a database":
        db.write_text("these are somebody's notes\n" * 200, encoding="utf-8")
    else:  # past SQLite's busy timeout (5 s): the daemon cannot bring the schema up to date
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
    try:
        started = run_cli("dev", "--db", str(db), "--listen", "127.0.0.1:0")
    finally:
        if holder is not None:
            holder.close()
    assert started.returncode == 1, started
    assert started.stderr.startswith(f"durably: cannot open the database {db}: "), started.stderr
    assert "Traceback" not in started.stderr, started.stderr
