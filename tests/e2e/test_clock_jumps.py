"""The machine's wall clock jumps while runs sleep (docs: reliability.md T11): a sleep never ends before
its wall-clock deadline, one whose deadline a jump put in the past ends within seconds, none is dropped
or ends twice, and workers are not taken for dead (nor dead ones for alive) because the clock moved.

The daemon and the worker run under libfaketime (the PyPI package bundles the library): their wall
clock is the real one plus the offset in a file the test rewrites; their monotonic clock is left
alone, as a real jump (an operator, NTP stepping, a VM resumed) leaves it.
"""

from __future__ import annotations

import asyncio
import importlib.util
import time
from pathlib import Path

import durably
import pytest

from .harness import Harness, WorkerSpec, open_client
from .test_sleep import start, until_status

SLEEP = WorkerSpec("coord_sleep.py", ("nap", "nap-until", "bad-sleep", "nap-hold"))
HOUR_S = 3600


def _faketime_library() -> str:
    spec = importlib.util.find_spec("libfaketime")
    assert spec is not None and spec.submodule_search_locations, "the dev extra installs libfaketime"
    library = Path(spec.submodule_search_locations[0], "vendor", "libfaketime", "src", "libfaketime.so.1")
    assert library.is_file(), library
    return str(library)


class Clock:
    """The offset of the faked wall clock, in seconds (read by libfaketime at every clock call)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.set(0)

    def set(self, offset_s: int) -> None:
        partial = self.path.with_suffix(".partial")
        partial.write_text(f"{offset_s:+d}\n", encoding="utf-8")
        partial.replace(self.path)  # never a half-written offset


@pytest.fixture
def clock(tmp_path: Path) -> Clock:
    return Clock(tmp_path / "clock-offset")


@pytest.fixture
def daemon_args(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> tuple[str, ...]:
    """The harness's daemon, and every worker this test starts, read the faked clock."""
    monkeypatch.setenv("LD_PRELOAD", _faketime_library())
    monkeypatch.setenv("FAKETIME_TIMESTAMP_FILE", str(clock.path))
    monkeypatch.setenv("FAKETIME_NO_CACHE", "1")
    monkeypatch.setenv("DONT_FAKE_MONOTONIC", "1")  # the variable's name before libfaketime 0.9.9
    monkeypatch.setenv("FAKETIME_DONT_FAKE_MONOTONIC", "1")
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
