"""kill -9 under load: the daemon and workers are killed at random (the daemon also stopped with SIGTERM
now and then) while runs of every step kind go on.

What must hold afterwards (the engine's guarantees, README "Guarantees"): every acknowledged event has
exactly one run, every run completes (with and without checkpointing), each step is recorded once, the
results a handler went on with are the ones recorded (a step body that ran again after a crash never
replaces a result in use), each waiting run gets its own event, and each invoke makes one child run
whose output the parent gets.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import durably
import pytest
from durably.errors import ServiceError, UnavailableError

from .harness import Harness, WorkerProcess, WorkerSpec, await_until, describe, open_client

CHAOS = WorkerSpec("chaos.py", ("chaos-mix", "chaos-mix-c", "chaos-child"))
RUNS = 200
BODIES = ["first", "part-0", "part-1", "part-2", "last"]
STEPS = [*BODIES, "nap", "go", "child"]
T = TypeVar("T")


async def _until_answered(call: Callable[[], Awaitable[T]]) -> T:
    """Call again while the daemon is down (killed, restarting)."""
    while True:
        try:
            return await call()
        except (UnavailableError, ServiceError):
            await asyncio.sleep(0.05)


async def _drive(client: durably.Client, acked: list[str]) -> None:
    """Start the runs; once each waits for its `chaos/go` event, send it. Every send is retried with
    the same event id until acknowledged (a send cut by a kill may have been stored: the id dedupes)."""
    for n in range(RUNS):
        name = "chaos/mix-c" if n % 2 else "chaos/mix"  # half of them with checkpointing=True
        event = durably.Event(name=name, data={"n": n}, id=f"chaos-{n}")
        [event_id] = await _until_answered(lambda event=event: client.send(event))
        acked.append(event_id)
        await asyncio.sleep(0.01)  # spread the runs over the kills
    for n, event_id in enumerate(acked):

        async def waiting(event_id: str = event_id) -> bool:
            runs = await _until_answered(lambda: client.list_runs(event_id=event_id))
            return bool(runs) and runs[0].status == "waiting"

        await await_until(waiting, timeout=60, what=f"the run of {event_id} to wait for its event")
        go = durably.Event(name="chaos/go", data={"n": n}, id=f"go-{n}")
        await _until_answered(lambda go=go: client.send(go))


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
            await _drive(client, acked)
        finally:
            done.set()
            kills = await chaos
        assert len(acked) == RUNS and kills >= 5, (len(acked), kills)

        for n, event_id in enumerate(acked):
            runs = await client.list_runs(event_id=event_id)
            assert len(runs) == 1, f"event {event_id} has {len(runs)} runs"
            run = await client.wait_for_run(runs[0].id, timeout=120)
            assert run.status == "completed", describe(run)
            assert sorted(step.name for step in run.steps) == sorted(STEPS), describe(run)
            recorded = {step.name: step.output for step in run.steps}
            assert run.output["tokens"] == {name: recorded[name] for name in BODIES}, describe(run)
            assert run.output["n"] == n and run.output["go"] == {"n": n}, describe(run)
            assert run.output["child"] == recorded["child"] and run.output["child"]["n"] == n, describe(run)

        children = await client.list_runs(function_id="chaos-child", limit=1000)
        assert sorted(child.output["n"] for child in children) == list(range(RUNS)), "one child per invoke"
        for child in children:
            [step] = (await client.get_run(child.id)).steps
            assert child.output["token"] == step.output, describe(child)
    reran = len(harness.observations("body")) - RUNS * (len(BODIES) + 1)
    print(f"{kills} daemon stops (kill -9, some SIGTERM); {reran} step bodies ran again")
    assert reran > 0, "no kill found a step in flight: the soak tested nothing"
