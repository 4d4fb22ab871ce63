"""The machine's wall clock jumps while runs sleep (docs: reliability.md T11): a sleep never ends before
its wall-clock deadline, one whose deadline a jump put in the past ends within seconds, none is dropped
or ends twice, and workers are not taken for dead (nor dead ones for alive) because the clock moved.

The daemon and the worker run on a faked wall clock (faked_clock.py); their monotonic clock is left alone.
"""

from __future__ import annotations

import asyncio
import time

import durably
import pytest

from .faked_clock import Clock
from .harness import Harness, WorkerSpec, open_client
from .test_sleep import start, until_status

SLEEP = WorkerSpec("coord_sleep.py", ("nap", "nap-until", "bad-sleep", "nap-hold"))
HOUR_S = 3600


@pytest.fixture
def daemon_args(clock: Clock) -> tuple[str, ...]:
    """The harness's daemon (and every worker this test starts) on the faked clock, quick to take a silent
    worker for gone."""
    return ("--heartbeat", "200ms", "--worker-timeout", "2s")


async def _sleeping(client: durably.Client, duration: str, count: int) -> list[durably.Run]:
    runs = [await start(client, "coord/nap", {"duration": {"kind": "str", "value": duration}}) for _ in range(count)]
    return [await until_status(client, run.id, "sleeping") for run in runs]


def _check_once_after_deadline(run: durably.Run, sleep_s: float) -> None:
    assert run.status == "completed", run
    assert [step.name for step in run.steps] == ["before", "nap", "after"], run.steps
    assert run.output["after"] - run.output["before"] >= sleep_s, f"woke before its deadline: {run.output}"


async def test_a_clock_set_forward_ends_the_sleeps_it_made_due_at_once(harness: Harness, clock: Clock) -> None:
    worker = harness.start_worker(SLEEP)
    async with open_client(harness.address) as client:
        runs = await _sleeping(client, "10m", 3)
        clock.set(HOUR_S)  # every deadline is now 50 minutes past
        jumped = time.monotonic()
        done = [await client.wait_for_run(run.id, timeout=20) for run in runs]
        took = time.monotonic() - jumped
        for run in done:
            _check_once_after_deadline(run, 600)
        assert took < 10, f"the sleeps ended {took:.1f} s after the clock made them due"
        # An hour passed on the wall clock, not the worker timeout (2 s) of silence: it was not expired.
        assert worker.alive() and "lease expired" not in harness.daemon.stderr(), harness.daemon.stderr()


async def test_a_clock_set_back_holds_sleeps_until_their_deadline_comes_again(harness: Harness, clock: Clock) -> None:
    harness.start_worker(SLEEP)
    async with open_client(harness.address) as client:
        runs = await _sleeping(client, "3s", 3)
        clock.set(-HOUR_S)  # the deadlines are an hour away again
        await asyncio.sleep(5)  # past the deadlines by the monotonic clock
        for run in runs:
            held = await client.get_run(run.id)
            assert held.status == "sleeping", f"a sleep ended before its wall-clock deadline: {held}"
        clock.set(0)  # the deadlines are 2 s past
        done = [await client.wait_for_run(run.id, timeout=10) for run in runs]
        for run in done:
            _check_once_after_deadline(run, 3)


async def test_a_clock_set_back_does_not_keep_a_silent_worker_alive(harness: Harness, clock: Clock) -> None:
    """Liveness is elapsed time: after an hour back, a worker silent for the timeout (2 s) still loses
    its leases, instead of looking fresh for an hour while its executions wait."""
    worker = harness.start_worker(SLEEP)
    worker.pause()  # SIGSTOP: no heartbeat, no stream closed (as behind a dead network link)
    try:
        clock.set(-HOUR_S)
        harness.wait_connected(SLEEP.functions, connected=False, timeout=10)
    finally:
        worker.resume()
