"""Cron triggers (issue 4): durably.on_cron(schedule, timezone=...).

A bad schedule or time zone is refused with a clear error, by the SDK at declaration and by the
executor at registration. Ticks come every minute at the earliest, so one test (marked slow) waits
for real ticks: they come on time, in the function's time zone, each once; and a tick that fell
while the daemon was down is skipped, not fired late (no burst of missed ticks after a restart).
"""

from __future__ import annotations

import asyncio
import math
import time
from datetime import datetime

import durably
import grpc
import pytest
from durably.protocol.v1 import worker_pb2, worker_pb2_grpc

from .harness import Harness, WorkerSpec, await_until, describe, open_client

CRON = WorkerSpec("coord_cron.py", ("cron-kathmandu", "cron-rare"))
CRON_EVENT = "durably/cron"


@pytest.mark.parametrize(
    ("schedule", "zone", "needle"),
    [
        ("61 * * * *", "UTC", "61"),
        ("* 24 * * *", "UTC", "24"),
        ("* * * *", "UTC", "5 fields"),
        ("* * * * * *", "UTC", "5 fields"),
        ("*/0 * * * *", "UTC", "step"),
        ("every minute", "UTC", "field"),
        ("* * * * *", "Mars/Olympus_Mons", "Mars/Olympus_Mons"),
    ],
)
def test_on_cron_refuses_a_bad_schedule_or_time_zone(schedule: str, zone: str, needle: str) -> None:
    with pytest.raises(ValueError, match="on_cron") as caught:
        durably.on_cron(schedule, timezone=zone)
    assert needle.lower() in str(caught.value).lower(), str(caught.value)


@pytest.mark.parametrize(
    ("schedule", "zone", "needle"),
    [
        ("61 * * * *", "UTC", "61 * * * *"),
        ("every minute", "UTC", "every minute"),
        ("* * * *", "UTC", "* * * *"),
        ("* * * * *", "Mars/Olympus_Mons", "Mars/Olympus_Mons"),
    ],
)
async def test_executor_refuses_to_register_a_bad_cron_trigger(
    harness: Harness, schedule: str, zone: str, needle: str
) -> None:
    """At the protocol level (a worker that skips the SDK's checks): Register is refused."""
    cron = worker_pb2.CronTrigger(schedule=schedule, timezone=zone)
    config = worker_pb2.FunctionConfig(id="bad-cron", triggers=[worker_pb2.Trigger(cron=cron)])
    register = worker_pb2.Register(app_id="tests", functions=[config], capacity=1, worker_name="bad-cron")
    async with grpc.aio.insecure_channel(harness.address) as channel:
        call = worker_pb2_grpc.WorkerServiceStub(channel).Connect()
        await call.write(worker_pb2.WorkerMessage(register=register))
        try:
            reply = await asyncio.wait_for(call.read(), timeout=10)
        except grpc.aio.AioRpcError as exc:
            code, details = exc.code(), exc.details() or ""
        else:
            assert reply is grpc.aio.EOF, f"a bad cron trigger was accepted: {reply}"
            code, details = await call.code(), await call.details()
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
    assert needle in details and "bad-cron" in details, f"the refusal does not say what is wrong: {details!r}"
    assert "bad-cron" not in (harness.connected_workers() or {}), "the refused function was registered"
    assert harness.daemon.alive(), harness.daemon.report()


async def test_cron_functions_register_and_do_not_fire_at_registration(harness: Harness) -> None:
    harness.start_worker(CRON)
    async with open_client(harness.address) as client:
        await asyncio.sleep(1.0)
        assert await client.list_runs(function_id="cron-rare") == [], "a cron function ran at registration"
        listed = {f.id: f.connected_workers for f in await client.list_functions()}
        assert listed.get("cron-rare") == 1 and listed.get("cron-kathmandu") == 1, listed


def scheduled_at(run: durably.Run) -> float:
    """The tick a cron run is for (data.scheduled_at of its durably/cron event), as a Unix time."""
    return datetime.fromisoformat(run.output["data"]["scheduled_at"]).timestamp()


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_cron_ticks_on_time_in_its_time_zone_and_skips_ticks_missed_while_down(harness: Harness) -> None:
    """Takes 1.5 to 2.5 minutes: the daemon is down across one minute boundary, then the next tick
    (at most 61 s after the restart) must come, once, and be the only tick after the restart."""
    harness.start_worker(CRON)
    [config] = harness.observations("cron-schedule")

    missed = math.ceil((time.time() + 8) / 60) * 60  # a minute boundary at least 8 s away
    await asyncio.sleep(missed - 3 - time.time())
    harness.daemon.kill9()
    down_at = time.time()
    await asyncio.sleep(missed + 2 - time.time())
    restarted_at = time.time()
    harness.daemon.start()
    expected = missed + 60  # the next tick after the restart

    async with open_client(harness.address) as client:

        async def ended_runs() -> list[durably.Run] | None:
            listed = await client.list_runs(function_id="cron-kathmandu", limit=1000)
            runs = [await client.get_run(r.id) for r in listed]
            if any(not r.status.ended for r in runs) or not any(scheduled_at(r) >= expected for r in runs):
                return None
            return runs

        runs: list[durably.Run] = await await_until(
            ended_runs, timeout=expected + 20 - time.time(), interval=0.5, what=f"the cron tick at {expected}"
        )
        await asyncio.sleep(2.0)  # a late duplicate or a burst would show by now
        runs = [await client.get_run(r.id) for r in await client.list_runs(function_id="cron-kathmandu")]
        assert await client.list_runs(function_id="cron-rare") == []

    shown = [(scheduled_at(r), r.created_at.timestamp() if r.created_at else None, r.status) for r in runs]
    assert all(r.status == "completed" for r in runs), [describe(r) for r in runs]
    ticks = sorted(scheduled_at(r) for r in runs)
    assert len(ticks) == len(set(ticks)), f"a tick ran twice: {shown}"
    assert ticks.count(expected) == 1, f"no run for the tick {expected} after the restart: {shown}"
    assert missed not in ticks, f"the tick missed while the daemon was down ran late: {shown}"
    for run in runs:
        tick = scheduled_at(run)
        assert run.output["name"] == CRON_EVENT, describe(run)
        assert run.output["data"]["schedule"] == config["schedule"], describe(run)
        assert run.output["data"]["timezone"] == "Asia/Kathmandu", describe(run)
        assert tick % 60 == 0, f"a tick off the minute: {describe(run)}"
        assert run.created_at is not None
        created = run.created_at.timestamp()
        assert tick - 0.05 <= created < tick + 5, f"tick {tick} ran at {created}: {shown}"
        if created >= restarted_at:
            assert tick >= restarted_at, f"the restarted daemon fired a tick from before the restart: {shown}"
        else:
            assert created < down_at, shown
