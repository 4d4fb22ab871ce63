"""kill -9 under load: the daemon and workers are killed at random (the daemon also stopped with SIGTERM
now and then) while runs of every step kind go on; afterwards the engine's guarantees must hold
(mixed_runs.py says which)."""

from __future__ import annotations

import asyncio
import random

import pytest

from .harness import Harness, WorkerProcess, open_client
from .mixed_runs import CHAOS, check, drive

RUNS = 200


async def _kill_and_restart(
    harness: Harness, workers: list[WorkerProcess], rng: random.Random, done: asyncio.Event
) -> int:
    kills = 0
    while not done.is_set():
        await asyncio.sleep(rng.uniform(0.2, 0.6))
        if kills % 3 == 2:  # a graceful stop (SIGTERM) under load now and then
            assert await asyncio.to_thread(harness.daemon.stop) == 0, harness.daemon.report()
        else:
            harness.daemon.kill9()
        if kills % 2:  # and a worker, mid-whatever it was doing
            workers.pop(rng.randrange(len(workers))).kill9()
            workers.append(harness.start_worker(CHAOS, wait=False))
        kills += 1
        await asyncio.to_thread(harness.daemon.start)
    return kills


@pytest.mark.slow
async def test_kill9_of_daemon_and_workers_under_load_loses_and_repeats_nothing(harness: Harness) -> None:
    rng = random.Random(20261126)
    workers = [harness.start_worker(CHAOS), harness.start_worker(CHAOS)]
    acked: list[str] = []
    done = asyncio.Event()
    async with open_client(harness.address) as client:
        chaos = asyncio.create_task(_kill_and_restart(harness, workers, rng, done))
        try:
            await drive(harness, client, RUNS, acked)
        finally:
            done.set()
            kills = await chaos
        assert len(acked) == RUNS and kills >= 5, (len(acked), kills)
        reran = await check(harness, client, acked)
    print(f"{kills} daemon stops (kill -9, some SIGTERM); {reran} step bodies ran again")
    assert reran > 0, "no kill found a step in flight: the soak tested nothing"
