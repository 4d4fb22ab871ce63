"""Cancellation (issue 4): client.cancel_run and cancel_on=[durably.on_event(..., match=..., if_=...)].

A cancelled run wakes from its sleep or wait at once, is shown as cancelled, and runs no later
step; a run cancelled in the middle of a step stops at the step boundary; cancelling a run that
has ended changes nothing.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import durably
import pytest

from .harness import Harness, WorkerSpec, await_until, describe, find_run

CANCEL = WorkerSpec("coord_cancel.py", ("cancel-sleeper", "cancel-waiter", "cancel-busy", "cancel-quick"))
WORKERS = [CANCEL]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def start(client: durably.Client, name: str, data: dict[str, Any]) -> durably.Run:
    [event_id] = await client.send(durably.Event(name=name, data=data))
    return await find_run(client, event_id)


async def until_status(client: durably.Client, run_id: str, status: str, timeout: float = 10) -> durably.Run:
    async def check() -> durably.Run | None:
        run = await client.get_run(run_id)
        assert run.status == status or not run.status.ended, f"expected {status}, the run ended: {describe(run)}"
        return run if run.status == status else None

    found: durably.Run = await await_until(check, timeout=timeout, what=f"run {run_id} to be {status}")
    return found


def pending(cluster: Harness, run_id: str) -> list[tuple[Any, ...]]:
    """The run's timers and waits still stored (what would wake it)."""
    timers = cluster.query("SELECT kind FROM timers WHERE run_id = ?", run_id)
    waits = cluster.query("SELECT kind FROM waits WHERE run_id = ?", run_id)
    return timers + waits


async def assert_stays_cancelled(cluster: Harness, client: durably.Client, run: durably.Run, handlers: int) -> None:
    """Nothing of the run executes any more, and it stays cancelled."""
    await asyncio.sleep(0.7)
    assert cluster.count("handler", run=run.id) == handlers, "the handler ran again after the cancellation"
    assert cluster.count("step", run=run.id, name="after") == 0, "a step after the cancellation ran"
    later = await client.get_run(run.id)
    assert later.status == "cancelled", describe(later)
    assert later.ended_at == run.ended_at, describe(later)
    assert pending(cluster, run.id) == [], "the cancelled run still has a timer or a wait"


@pytest.mark.parametrize("what", ["sleeping", "waiting"])
async def test_cancel_run_wakes_a_sleeping_or_waiting_run_as_cancelled(
    cluster: Harness, client: durably.Client, what: str
) -> None:
    key = unique("k")
    name = "coord/cancel-sleeper" if what == "sleeping" else "coord/cancel-waiter"
    run = await start(client, name, {"key": key})
    await until_status(client, run.id, what)
    handlers = cluster.count("handler", run=run.id)

    asked = time.monotonic()
    returned = await client.cancel_run(run.id)
    assert returned.id == run.id and returned.status == "cancelled", describe(returned)
    done = await client.wait_for_run(run.id, timeout=5)
    assert time.monotonic() - asked < 2.0, "the cancelled run did not end at once"
    assert done.status == "cancelled" and done.ended_at is not None, describe(done)
    assert run.id in [r.id for r in await client.list_runs(status="cancelled", limit=1000)]

    if what == "waiting":  # the event it waited for comes after all: nothing happens
        await client.send(durably.Event(name="coord/wake", data={"key": key}))
    await assert_stays_cancelled(cluster, client, done, handlers)


async def test_a_run_cancelled_during_a_step_stops_at_the_step_boundary(
    cluster: Harness, client: durably.Client
) -> None:
    run = await start(client, "coord/cancel-busy", {})
    await await_until(
        lambda: cluster.observations("step", run=run.id, name="a", phase="started"), timeout=10, what="step a"
    )
    # Running, with its start time, before it has committed anything (engine/marks.py stores that alone).
    busy = await until_status(client, run.id, "running", timeout=5)
    assert busy.started_at is not None and busy.steps == [], describe(busy)
    returned = await client.cancel_run(run.id)
    assert returned.status == "cancelled", describe(returned)

    cluster.release(f"go-{run.id}")  # step a finishes and its execution reports ...
    await await_until(
        lambda: cluster.observations("step", run=run.id, name="a", phase="finished"), timeout=10, what="step a to end"
    )
    await asyncio.sleep(0.7)
    assert cluster.count("step", run=run.id, name="b") == 0, "a step after the cancellation ran"
    later = await client.get_run(run.id)
    assert later.status == "cancelled", f"the run's report revived it: {describe(later)}"
    assert [s.name for s in later.steps if s.name == "b"] == [], describe(later)
    assert later.output is None, describe(later)


async def test_cancel_on_an_event_with_match_and_if(cluster: Harness, client: durably.Client) -> None:
    k1, k2 = unique("k1"), unique("k2")
    one = await start(client, "coord/cancel-sleeper", {"key": k1})
    two = await start(client, "coord/cancel-sleeper", {"key": k2})
    await until_status(client, one.id, "sleeping")
    await until_status(client, two.id, "sleeping")
    handlers = {run.id: cluster.count("handler", run=run.id) for run in (one, two)}

    # match="data.key": only the run whose trigger has the same key.
    await client.send(durably.Event(name="coord/cancel", data={"key": unique("nobody")}))
    await client.send(durably.Event(name="coord/cancel", data={"key": k1}))
    cancelled = await client.wait_for_run(one.id, timeout=5)
    assert cancelled.status == "cancelled", describe(cancelled)
    assert (await client.get_run(two.id)).status == "sleeping", "a cancel event for another key cancelled this run"

    # if_="async.data.level >= 3 && async.data.key == event.data.key"
    await client.send(
        [
            durably.Event(name="coord/abort", data={"key": k2, "level": 2}),
            durably.Event(name="coord/abort", data={"key": unique("nobody"), "level": 5}),
            durably.Event(name="coord/abort", data={"key": k2}),
        ]
    )
    await asyncio.sleep(0.5)
    assert (await client.get_run(two.id)).status == "sleeping", "an abort event failing the if_ cancelled the run"
    await client.send(durably.Event(name="coord/abort", data={"key": k2, "level": 3}))
    aborted = await client.wait_for_run(two.id, timeout=5)
    assert aborted.status == "cancelled", describe(aborted)

    await assert_stays_cancelled(cluster, client, cancelled, handlers[one.id])
    await assert_stays_cancelled(cluster, client, aborted, handlers[two.id])


async def test_a_cancel_event_sent_before_the_run_started_does_not_cancel_it(
    cluster: Harness, client: durably.Client
) -> None:
    key = unique("early")
    await client.send(durably.Event(name="coord/cancel", data={"key": key}))
    run = await start(client, "coord/cancel-sleeper", {"key": key})
    await until_status(client, run.id, "sleeping")
    await asyncio.sleep(0.3)
    assert (await client.get_run(run.id)).status == "sleeping"
    await client.cancel_run(run.id)


async def test_cancelling_an_ended_run_is_a_no_op(cluster: Harness, client: durably.Client) -> None:
    run = await start(client, "coord/cancel-quick", {})
    done = await client.wait_for_run(run.id, timeout=10)
    assert done.status == "completed", describe(done)

    returned = await client.cancel_run(run.id)
    assert returned.status == "completed", f"cancelling a completed run changed it: {describe(returned)}"
    again = await client.get_run(run.id)
    assert (again.status, again.output, again.ended_at, again.error) == (
        "completed",
        {"step": "only"},
        done.ended_at,
        None,
    ), describe(again)
    assert again.steps == done.steps, describe(again)

    # A cancelled run cancelled again stays as it was.
    sleeper = await start(client, "coord/cancel-sleeper", {"key": unique("twice")})
    await until_status(client, sleeper.id, "sleeping")
    first = await client.cancel_run(sleeper.id)
    second = await client.cancel_run(sleeper.id)
    assert (second.status, second.ended_at) == ("cancelled", first.ended_at), describe(second)


async def test_cancelling_an_unknown_run_is_a_clear_error(cluster: Harness, client: durably.Client) -> None:
    with pytest.raises(durably.RunNotFoundError, match="01ARZ3NDEKTSV4RRFFQ69G5FAV"):
        await client.cancel_run("01ARZ3NDEKTSV4RRFFQ69G5FAV")
