"""step.sleep and step.sleep_until (issue 4): the run wakes on time and never early, whatever form the
duration takes; a sleeping run holds no worker slot; its timer is durable (persisted with the right
wake-up time, kept across kill -9 of the daemon); impossible sleeps are clear errors.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import durably
import grpc
import pytest
from durably.protocol.v1 import worker_pb2, worker_pb2_grpc

from .harness import CAPACITY_ONE, Harness, WorkerSpec, await_until, describe, find_run, open_client

SLEEP = WorkerSpec("coord_sleep.py", ("nap", "nap-until", "bad-sleep", "nap-hold", "nap-beside"))
WORKERS = [SLEEP]

DAY_MS = 86_400_000
LATE_S = 2.5  # how late a short sleep may wake on a loaded 2-core CI machine


async def start(client: durably.Client, name: str, data: dict[str, Any]) -> durably.Run:
    [event_id] = await client.send(durably.Event(name=name, data=data))
    return await find_run(client, event_id)


async def until_status(client: durably.Client, run_id: str, status: str, timeout: float = 10) -> durably.Run:
    """The run, once it has `status` (fails if it ends with another)."""

    async def check() -> durably.Run | None:
        run = await client.get_run(run_id)
        assert run.status == status or not run.status.ended, f"expected {status}, the run ended: {describe(run)}"
        return run if run.status == status else None

    found: durably.Run = await await_until(check, timeout=timeout, what=f"run {run_id} to be {status}")
    return found


def sleep_called_at(harness: Harness, run_id: str) -> float:
    """When the run first reached its sleep (the SDK computes the wake-up time right then)."""
    calls = harness.observations("sleep-call", run=run_id)
    assert calls, f"run {run_id} never reached its sleep"
    return float(calls[0]["t"])


def woke_at(harness: Harness, run_id: str) -> float:
    [after] = harness.observations("step", run=run_id, name="after")
    return float(after["at"])


def timers(harness: Harness, run_id: str) -> list[tuple[str, str, int]]:
    """The run's persisted timers: (step name, kind, due ms)."""
    return [
        (str(name), str(kind), int(due))
        for name, kind, due in harness.query("SELECT name, kind, due_ms FROM timers WHERE run_id = ?", run_id)
    ]


@pytest.mark.parametrize(
    ("duration", "seconds"),
    [
        ({"kind": "str", "value": "1s"}, 1.0),
        ({"kind": "str", "value": "1s200ms"}, 1.2),
        ({"kind": "seconds", "value": 0.8}, 0.8),
        ({"kind": "timedelta", "value": 0.9}, 0.9),
    ],
    ids=["str-1s", "str-1s200ms", "float-seconds", "timedelta"],
)
async def test_sleep_wakes_after_the_duration_and_not_before(
    cluster: Harness, client: durably.Client, duration: dict[str, Any], seconds: float
) -> None:
    run = await start(client, "coord/nap", {"duration": duration})
    sleeping = await until_status(client, run.id, "sleeping")
    assert [s.name for s in sleeping.steps] == ["before"], describe(sleeping)
    assert cluster.count("step", run=run.id, name="after") == 0

    done = await client.wait_for_run(run.id, timeout=15)
    assert done.status == "completed", describe(done)
    slept = woke_at(cluster, run.id) - sleep_called_at(cluster, run.id)
    assert slept >= seconds, f"a {seconds} s sleep woke after {slept:.3f} s"
    assert slept < seconds + LATE_S, f"a {seconds} s sleep woke after {slept:.3f} s"
    assert [s.name for s in done.steps] == ["before", "nap", "after"], describe(done)
    nap = done.steps[1]
    assert nap.status == "completed" and nap.output is None, describe(done)
    assert cluster.count("step", run=run.id, name="before") == 1, "a step before the sleep ran again"
    assert cluster.count("step", run=run.id, name="after") == 1
    assert timers(cluster, run.id) == [], "the fired timer is still stored"


async def test_a_sleep_beside_a_running_step_wakes_after_the_duration_and_not_before(
    cluster: Harness, client: durably.Client
) -> None:
    """The engine reads a sleeping run back shortly before the sleep ends (engine/wakes.py); a run with a
    step still running is not asleep on the sleep alone, and its sleep must still end on time, not then."""
    run = await start(client, "coord/nap-beside", {})
    done = await client.wait_for_run(run.id, timeout=15)
    assert done.status == "completed", describe(done)
    slept = woke_at(cluster, run.id) - sleep_called_at(cluster, run.id)
    assert 0.5 <= slept < 0.5 + LATE_S, f"a 0.5 s sleep woke after {slept:.3f} s"
    assert done.output["after"] < done.output["slow"], f"the sleep waited for the step beside it: {describe(done)}"


@pytest.mark.parametrize("kind", ["iso", "datetime"])
async def test_sleep_until_wakes_at_that_instant(cluster: Harness, client: durably.Client, kind: str) -> None:
    # An offset other than UTC and the machine's: the instant, not the wall-clock reading, counts.
    zone = timezone(timedelta(hours=5, minutes=30))
    wake = datetime.now(zone) + timedelta(seconds=1.5)
    run = await start(client, "coord/nap-until", {"until": {"kind": kind, "value": wake.isoformat()}})

    done = await client.wait_for_run(run.id, timeout=15)
    assert done.status == "completed", describe(done)
    woke = woke_at(cluster, run.id)
    assert woke >= wake.timestamp(), f"woke {wake.timestamp() - woke:.3f} s before {wake.isoformat()}"
    assert woke < wake.timestamp() + LATE_S, f"woke {woke - wake.timestamp():.3f} s after {wake.isoformat()}"
    assert [s.name for s in done.steps] == ["before", "nap", "after"], describe(done)


async def test_sleep_until_a_past_instant_goes_on_at_once(cluster: Harness, client: durably.Client) -> None:
    past = datetime.now(UTC) - timedelta(hours=1)
    run = await start(client, "coord/nap-until", {"until": {"kind": "iso", "value": past.isoformat()}})

    done = await client.wait_for_run(run.id, timeout=10)
    assert done.status == "completed", describe(done)
    assert woke_at(cluster, run.id) - sleep_called_at(cluster, run.id) < LATE_S
    assert [s.name for s in done.steps] == ["before", "nap", "after"], describe(done)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"duration": {"kind": "str", "value": "367d"}}, ("year",)),
        ({"duration": {"kind": "seconds", "value": 400 * 86_400}}, ("year",)),
        ({"duration": {"kind": "timedelta", "value": 370 * 86_400}}, ("year",)),
        ({"duration": {"kind": "str", "value": "-5s"}}, ("negative",)),
        ({"duration": {"kind": "seconds", "value": -1}}, ("negative",)),
        ({"duration": {"kind": "str", "value": "5 parsecs"}}, ("5 parsecs", "duration")),
        ({"duration": {"kind": "str", "value": "30"}}, ("30", "duration")),
        ({"until": {"kind": "iso", "value": "2030-01-01T00:00:00"}}, ("time zone",)),
        ({"until": {"kind": "iso", "value": "next tuesday"}}, ("next tuesday", "iso 8601")),
        ({"until": {"kind": "datetime", "value": "2099-01-01T00:00:00+00:00"}}, ("year",)),
    ],
    ids=[
        "367d",
        "400-days-in-seconds",
        "370-days-timedelta",
        "negative-str",
        "negative-seconds",
        "malformed",
        "no-unit",
        "naive-instant",
        "malformed-instant",
        "instant-too-far",
    ],
)
async def test_impossible_sleeps_fail_the_run_with_a_clear_error(
    cluster: Harness, client: durably.Client, data: dict[str, Any], words: tuple[str, ...]
) -> None:
    run = await start(client, "coord/bad-sleep", data)
    done = await client.wait_for_run(run.id, timeout=15)

    assert done.status == "failed", describe(done)
    assert done.error is not None, describe(done)
    message = done.error.message.lower()
    assert '"bad"' in message or "'bad'" in message, f"the error does not name the step 'bad': {done.error!r}"
    for word in words:
        assert word in message, f"the error does not say {word!r}: {done.error!r}"
    assert cluster.count("step", run=run.id, name="after") == 0, "the run went on past an impossible sleep"
    assert timers(cluster, run.id) == [], "an impossible sleep was stored as a timer"


async def test_executor_refuses_a_reported_sleep_beyond_one_year(harness: Harness) -> None:
    """At the protocol level (a worker that skips the SDK's checks): the executor fails the run."""
    config = worker_pb2.FunctionConfig(id="raw-sleeper", triggers=[worker_pb2.Trigger(event="coord/raw-sleep")])
    async with grpc.aio.insecure_channel(harness.address) as channel, open_client(harness.address) as client:
        call = worker_pb2_grpc.WorkerServiceStub(channel).Connect()
        register = worker_pb2.Register(app_id="tests", functions=[config], capacity=1, worker_name="raw-sleeper")
        await call.write(worker_pb2.WorkerMessage(register=register))
        first = await asyncio.wait_for(call.read(), timeout=10)
        assert first is not grpc.aio.EOF and first.WhichOneof("message") == "registered", first

        run = await start(client, "coord/raw-sleep", {})
        message = await asyncio.wait_for(call.read(), timeout=10)
        assert message is not grpc.aio.EOF and message.WhichOneof("message") == "execute", message
        now_ms = int(time.time() * 1000)
        far = worker_pb2.StepOp(
            op=worker_pb2.OPCODE_SLEEP,
            id=hashlib.sha1(b"far", usedforsecurity=False).hexdigest(),
            name="far",
            index=0,
            wake_at_ms=now_ms + 400 * DAY_MS,
            started_at_ms=now_ms,
            ended_at_ms=now_ms,
        )
        result = worker_pb2.ExecutionResult(execution_id=message.execute.execution_id, ops=[far], yielded=True)
        await call.write(worker_pb2.WorkerMessage(result=result))

        done = await client.wait_for_run(run.id, timeout=10)
        assert done.status == "failed", describe(done)
        assert done.error is not None and "year" in done.error.message, describe(done)
        assert "far" in done.error.message, f"the error does not name the step: {done.error!r}"
        assert timers(harness, run.id) == []
        call.cancel()


async def test_a_sleeping_run_occupies_no_worker(harness: Harness) -> None:
    """One worker with capacity 1: a second run's steps go on while the first run sleeps."""
    harness.start_worker(CAPACITY_ONE)
    async with open_client(harness.address) as client:
        sleeper = await start(client, "coord/long-nap", {"seconds": 3})
        await until_status(client, sleeper.id, "sleeping")
        asleep_since = time.time()

        quick = await start(client, "coord/quick", {})
        done = await client.wait_for_run(quick.id, timeout=15)
        assert done.status == "completed", describe(done)
        finished = time.time()
        # All three of its executions ran in the only slot while the other run was asleep.
        assert finished - asleep_since < 2.5, f"the quick run took {finished - asleep_since:.2f} s"
        now = await client.get_run(sleeper.id)
        assert now.status == "sleeping", f"the sleeper is no longer asleep: {describe(now)}"
        assert harness.count("step", run=sleeper.id, name="b") == 0

        q3 = harness.observations("step", run=quick.id, name="q3")[0]["at"]
        woke = await client.wait_for_run(sleeper.id, timeout=15)
        assert woke.status == "completed", describe(woke)
        b = harness.observations("step", run=sleeper.id, name="b")[0]["at"]
        assert q3 < b, "the quick run's last step ran only after the sleeper woke up"
        assert woke.output["b"] - woke.output["a"] >= 3.0, describe(woke)


async def test_a_waking_run_goes_before_a_backlog_of_new_runs(harness: Harness) -> None:
    """A run that wakes up while 60 new runs wait for the only slot (about 3 s of work) is not put
    behind them: a run under way goes before runs not yet started."""
    harness.start_worker(CAPACITY_ONE)
    async with open_client(harness.address) as client:
        sleeper = await start(client, "coord/long-nap", {"seconds": 1})
        await until_status(client, sleeper.id, "sleeping")
        await client.send([durably.Event(name="coord/busy", data={"i": i}) for i in range(60)])

        woke = await client.wait_for_run(sleeper.id, timeout=30)
        assert woke.status == "completed", describe(woke)
        late = woke.output["b"] - woke.output["a"] - 1.0
        ahead = sum(1 for work in harness.observations("step", name="work") if work["at"] < woke.output["b"])
        assert ahead < 40, f"{ahead} of the 60 new runs went before the run that woke up"
        assert late < 1.0, f"the run woke {late:.2f} s late behind the new runs"


async def test_timer_survives_kill9_of_the_daemon_and_wakes_on_time(harness: Harness) -> None:
    worker = harness.start_worker(SLEEP)
    async with open_client(harness.address) as client:
        run = await start(client, "coord/nap", {"duration": {"kind": "str", "value": "2s"}})
        await until_status(client, run.id, "sleeping")
    [(name, kind, due_ms)] = timers(harness, run.id)
    assert (name, kind) == ("nap", "sleep")
    called = sleep_called_at(harness, run.id)
    assert called + 2.0 <= due_ms / 1000 < called + 3.0, f"due {due_ms / 1000 - called:.3f} s after the call"

    harness.daemon.kill9()
    killed = time.time()
    assert killed < due_ms / 1000 - 0.5, f"the daemon was killed only {due_ms / 1000 - killed:.2f} s before the wake-up"
    harness.daemon.start()  # same db file, same port
    restarted = time.time()
    if restarted >= due_ms / 1000:  # still a durable timer, but "not early" is then proven by the other tests only
        print(f"the daemon took {restarted - killed:.2f} s to restart and came back after the wake-up time")

    async with open_client(harness.address) as client:
        done = await client.wait_for_run(run.id, timeout=20)
        assert done.status == "completed", describe(done)
    woke = woke_at(harness, run.id)
    assert woke >= due_ms / 1000, f"the run woke {due_ms / 1000 - woke:.3f} s early"
    assert woke < due_ms / 1000 + 4.0, f"the run woke {woke - due_ms / 1000:.3f} s late"
    assert [s.name for s in done.steps] == ["before", "nap", "after"], describe(done)
    assert harness.count("step", run=run.id, name="before") == 1, "a recorded step ran again"
    assert worker.alive(), worker.report()


async def test_daemon_killed_while_a_woken_run_runs_wakes_it_again_and_stores_the_sleep_once(
    harness: Harness,
) -> None:
    """A run asleep on nothing but its sleep is woken by leasing it, and the sleep's completion is
    stored with what that execution reports (engine/wakes.py). Killed in between, the daemon has
    stored neither: the timer fires again after the restart, and the sleep is stored once."""
    worker = harness.start_worker(SLEEP)
    async with open_client(harness.address) as client:
        run = await start(client, "coord/nap-hold", {"seconds": 0.5})
        await await_until(
            lambda: harness.observations("step", run=run.id, name="held", phase="started"),
            timeout=20,
            what="the step after the sleep to start",
        )
        woken = await client.get_run(run.id)
        assert [s.name for s in woken.steps] == ["before"], describe(woken)
    assert [(name, kind) for name, kind, _ in timers(harness, run.id)] == [("nap", "sleep")]

    harness.daemon.kill9()
    harness.daemon.start()  # same db file, same port
    async with open_client(harness.address) as client:
        # The timer fired again: the run was leased again and the step after the sleep runs again.
        await await_until(
            lambda: len(harness.observations("step", run=run.id, name="held", phase="started")) == 2,
            timeout=20,
            what="the run to be woken again after the restart",
        )
        harness.release(f"wake-{run.id}")
        done = await client.wait_for_run(run.id, timeout=30)
        assert done.status == "completed", describe(done)
        assert [s.name for s in done.steps] == ["before", "nap", "held"], describe(done)
    assert timers(harness, run.id) == []
    assert harness.count("step", run=run.id, name="before") == 1, "a recorded step ran again"
    assert worker.alive(), worker.report()


async def test_long_sleeps_are_persisted_with_their_wake_up_time(harness: Harness) -> None:
    """Long sleeps wait in the store, not in any process: each timer row holds the exact wake-up time,
    the runs show as sleeping, and both survive a kill -9 of the daemon."""
    harness.start_worker(SLEEP)
    in_200_days = (datetime.now(timezone(timedelta(hours=-7))) + timedelta(days=200)).replace(microsecond=0)
    long_sleeps: list[tuple[str, dict[str, Any], int | None]] = [
        ("coord/nap", {"duration": {"kind": "str", "value": "7d"}}, 7 * DAY_MS),
        ("coord/nap", {"duration": {"kind": "str", "value": "1h30m"}}, 90 * 60_000),
        ("coord/nap", {"duration": {"kind": "str", "value": "10m"}}, 10 * 60_000),
        ("coord/nap", {"duration": {"kind": "str", "value": "2h"}}, 2 * 3_600_000),
        ("coord/nap", {"duration": {"kind": "timedelta", "value": 30 * 86_400}}, 30 * DAY_MS),
        ("coord/nap", {"duration": {"kind": "seconds", "value": 365 * 86_400}}, 365 * DAY_MS),
        ("coord/nap-until", {"until": {"kind": "iso", "value": in_200_days.isoformat()}}, None),
    ]
    async with open_client(harness.address) as client:
        runs = [await start(client, name, data) for name, data, _ in long_sleeps]
        for run in runs:
            await until_status(client, run.id, "sleeping")

    expected: dict[str, int] = {}
    for run, (_, data, length_ms) in zip(runs, long_sleeps, strict=True):
        [(name, kind, due_ms)] = timers(harness, run.id)
        assert (name, kind) == ("nap", "sleep"), data
        if length_ms is None:
            assert due_ms == int(in_200_days.timestamp() * 1000), (
                f"sleep_until({in_200_days.isoformat()}): due {due_ms}"
            )
        else:
            called_ms = sleep_called_at(harness, run.id) * 1000
            # The SDK computes the wake-up time right after the call: a moment later, never earlier.
            late = due_ms - (called_ms + length_ms)
            assert -5 <= late < 2000, f"{data}: due {late:.0f} ms after call time + duration"
        expected[run.id] = due_ms

    harness.daemon.kill9()
    harness.daemon.start()
    async with open_client(harness.address) as client:
        await asyncio.sleep(0.5)
        for run in runs:
            after = await client.get_run(run.id)
            assert after.status == "sleeping", describe(after)
            assert [s.name for s in after.steps] == ["before"], describe(after)
            assert timers(harness, run.id) == [("nap", "sleep", expected[run.id])], "the timer changed on restart"
    assert all(harness.count("step", run=run.id, name="after") == 0 for run in runs), "a long sleep woke"
    stored = json.dumps(harness.query("SELECT COUNT(*) FROM timers"))
    assert stored == f"[[{len(runs)}]]", f"timers stored: {stored}"
