"""step.wait_for_event (issue 4): match pairs the incoming event with the run's trigger, if_ filters
with the CEL-like expressions, a timeout gives None, only events received after the wait was
recorded can match (Inngest's rule: no lookback), and the pending waits are indexed so that one
event costs about the same with 2,000 waits parked as with 10.

Events sent together in one ``client.send`` are stored in that order, and the first one that
matches completes the wait; so sending non-matching events *before* the matching one in the same
call proves each of them was ignored, with no sleeping.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from typing import Any

import durably

from .harness import Harness, WorkerSpec, await_until, describe, disk_full, find_run, open_client

WAIT = WorkerSpec("coord_wait.py", ("await-reply", "await-if", "await-late", "park"))
WORKERS = [WAIT]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def start(client: durably.Client, name: str, data: dict[str, Any]) -> durably.Run:
    [event_id] = await client.send(durably.Event(name=name, data=data))
    return await find_run(client, event_id)


async def until_waiting(client: durably.Client, run_id: str, timeout: float = 10) -> durably.Run:
    """The run once its wait is recorded (status `waiting`)."""

    async def check() -> durably.Run | None:
        run = await client.get_run(run_id)
        assert not run.status.ended, f"the run ended while it should wait: {describe(run)}"
        return run if run.status == "waiting" else None

    found: durably.Run = await await_until(check, timeout=timeout, what=f"run {run_id} to be waiting")
    return found


def got(run: durably.Run) -> Any:
    assert run.status == "completed", describe(run)
    return run.output["got"]


async def test_match_pairs_the_incoming_event_with_the_runs_trigger(cluster: Harness, client: durably.Client) -> None:
    k1, k2 = unique("k1"), unique("k2")
    first = await start(client, "coord/await", {"key": k1})
    second = await start(client, "coord/await", {"key": k2})
    await until_waiting(client, first.id)
    await until_waiting(client, second.id)

    ids = await client.send(
        [
            durably.Event(name="coord/reply", data={"key": unique("nobody"), "marker": "other key"}),
            durably.Event(name="coord/other", data={"key": k2, "marker": "other name"}),
            durably.Event(name="coord/reply", data={"marker": "no key at all"}),
            durably.Event(name="coord/reply", data={"key": k2, "marker": "for k2"}),
            durably.Event(name="coord/reply", data={"key": k2, "marker": "too late for k2"}),
        ]
    )
    done = await client.wait_for_run(second.id, timeout=10)
    assert got(done) == {"id": ids[3], "name": "coord/reply", "data": {"key": k2, "marker": "for k2"}}
    reply = [s for s in done.steps if s.name == "reply"]
    assert len(reply) == 1 and reply[0].status == "completed", describe(done)
    assert reply[0].output["data"] == {"key": k2, "marker": "for k2"}, describe(done)
    assert [s.name for s in done.steps] == ["reply", "after"], describe(done)

    still = await client.get_run(first.id)
    assert still.status == "waiting", f"an event for another key resolved this wait: {describe(still)}"
    assert cluster.count("step", run=first.id, name="after") == 0

    [own] = await client.send(durably.Event(name="coord/reply", data={"key": k1, "marker": "for k1"}))
    done = await client.wait_for_run(first.id, timeout=10)
    assert got(done) == {"id": own, "name": "coord/reply", "data": {"key": k1, "marker": "for k1"}}


async def test_if_expression_with_comparisons_and_boolean_operators(cluster: Harness, client: durably.Client) -> None:
    """if_ = (async.data.n > event.data.min && async.data.n < 10 && async.data.status != "ignored")
    || async.data.tag == "vip", with event.data.min = 3."""
    measure = "coord/measure"

    run = await start(client, "coord/await-if", {"min": 3})
    await until_waiting(client, run.id)
    ids = await client.send(
        [
            durably.Event(name=measure, data={"n": 2, "status": "ok", "why": "n not > min"}),
            durably.Event(name=measure, data={"n": 3, "status": "ok", "why": "n == min"}),
            durably.Event(name=measure, data={"n": 12, "status": "ok", "why": "n not < 10"}),
            durably.Event(name=measure, data={"n": 5, "status": "ignored", "why": "status == ignored"}),
            durably.Event(name=measure, data={"n": 5, "why": "no status: != on a missing field is false"}),
            durably.Event(name=measure, data={"n": "5", "status": "ok", "why": "a string is not a number"}),
            durably.Event(name=measure, data={"n": 5, "status": "ok", "why": "all of && hold"}),
        ]
    )
    done = await client.wait_for_run(run.id, timeout=10)
    assert got(done)["data"]["why"] == "all of && hold", describe(done)
    assert got(done)["id"] == ids[-1]

    run = await start(client, "coord/await-if", {"min": 3})
    await until_waiting(client, run.id)
    await client.send(
        [
            durably.Event(name=measure, data={"n": 1, "status": "ok", "tag": "plain", "why": "neither side"}),
            durably.Event(name=measure, data={"n": 100, "tag": "VIP", "why": "string compare is exact"}),
            durably.Event(name=measure, data={"n": 100, "tag": "vip", "why": "the || side"}),
        ]
    )
    done = await client.wait_for_run(run.id, timeout=10)
    assert got(done)["data"]["why"] == "the || side", describe(done)


async def test_timeout_returns_none(cluster: Harness, client: durably.Client) -> None:
    key = unique("lonely")
    run = await start(client, "coord/await", {"key": key, "timeout": "1s"})
    await until_waiting(client, run.id)
    await client.send(durably.Event(name="coord/reply", data={"key": unique("someone-else")}))

    done = await client.wait_for_run(run.id, timeout=10)
    assert got(done) is None, describe(done)
    reached = cluster.observations("reached-wait", run=run.id)[0]["t"]
    [after] = cluster.observations("step", run=run.id, name="after")
    waited = after["t"] - reached
    assert 1.0 <= waited < 3.5, f"a 1 s wait gave up after {waited:.2f} s"
    reply = [s for s in done.steps if s.name == "reply"]
    assert len(reply) == 1 and reply[0].status == "completed" and reply[0].output is None, describe(done)

    # The wait is gone: a matching event now changes nothing.
    await client.send(durably.Event(name="coord/reply", data={"key": key}))
    again = await client.get_run(run.id)
    assert again.output == done.output and again.steps == done.steps, describe(again)


async def test_an_event_sent_before_the_wait_is_recorded_does_not_match(
    cluster: Harness, client: durably.Client
) -> None:
    """The documented rule (Inngest's): only events received after the wait was recorded can match."""
    key = unique("early")
    run = await start(client, "coord/await-late", {"key": key, "timeout": "20s"})
    await await_until(
        lambda: cluster.observations("step", run=run.id, name="prepare", phase="started"),
        timeout=10,
        what="step prepare to start",
    )
    # The run exists and is on its way to the wait, but has not recorded it yet.
    [early] = await client.send(durably.Event(name="coord/late-reply", data={"key": key, "marker": "early"}))
    cluster.release(f"go-{run.id}")
    await until_waiting(client, run.id)
    assert cluster.count("step", run=run.id, name="after") == 0, "the early event satisfied the wait"

    [late] = await client.send(durably.Event(name="coord/late-reply", data={"key": key, "marker": "late"}))
    done = await client.wait_for_run(run.id, timeout=10)
    assert got(done) == {"id": late, "name": "coord/late-reply", "data": {"key": key, "marker": "late"}}
    assert early != late


def pending_waits(harness: Harness) -> int:
    return int(harness.query("SELECT COUNT(*) FROM waits WHERE kind = 'wait'")[0][0])


async def park(client: durably.Client, harness: Harness, keys: list[str]) -> None:
    """Start one `park` run per key (its event id is park-<key>); return once every one waits."""
    expected = pending_waits(harness) + len(keys)
    for at in range(0, len(keys), 500):
        chunk = keys[at : at + 500]
        await client.send([durably.Event(name="coord/park", data={"key": key}, id=f"park-{key}") for key in chunk])
    await await_until(
        lambda: pending_waits(harness) >= expected, timeout=90, interval=0.2, what=f"{expected} pending waits"
    )


async def probe(client: durably.Client, keys: list[str]) -> tuple[list[float], list[float]]:
    """For each key, one matching event: how long its send took, and from the send to the run's end."""
    runs = {key: (await find_run(client, f"park-{key}")).id for key in keys}
    sends, ends = [], []
    for key in keys:
        started = time.perf_counter()
        await client.send(durably.Event(name="coord/unpark", data={"key": key}))
        sent = time.perf_counter()
        done = await client.wait_for_run(runs[key], timeout=10)
        ended = time.perf_counter()
        assert got(done)["data"] == {"key": key}, describe(done)
        sends.append(sent - started)
        ends.append(ended - started)
    return sends, ends


async def strangers(client: durably.Client, label: str, count: int = 500) -> float:
    """Seconds per event of one send of `count` coord/unpark events no wait matches: the pure cost of
    looking the waits up (one commit shared by all, so a scan of the waits would dominate it)."""
    events = [durably.Event(name="coord/unpark", data={"key": f"stranger-{label}-{n}"}) for n in range(count)]
    started = time.perf_counter()
    await client.send(events)
    return (time.perf_counter() - started) / count


async def test_one_event_costs_the_same_with_2000_pending_waits_as_with_10(harness: Harness) -> None:
    harness.start_worker(WAIT)
    probes = 25
    async with open_client(harness.address) as client:
        await park(client, harness, [f"few-{n}" for n in range(10)])
        few = [f"few-probe-{n}" for n in range(probes)]
        await park(client, harness, few)
        await asyncio.sleep(0.5)
        send_few, end_few = await probe(client, few)
        assert pending_waits(harness) == 10
        batch_few = [await strangers(client, f"few-{n}") for n in range(5)]

        many = [f"many-probe-{n}" for n in range(probes)]
        await park(client, harness, [f"many-{n}" for n in range(1990)] + many)
        assert pending_waits(harness) == 2000 + probes
        await asyncio.sleep(0.5)  # let the daemon and the worker settle after parking 2,000 runs
        send_many, end_many = await probe(client, many)
        assert pending_waits(harness) == 2000, "an event resolved more than the one wait it matches"
        batch_many = [await strangers(client, f"many-{n}") for n in range(5)]
        assert pending_waits(harness) == 2000, "an event no wait matches resolved one"

    # Medians of the single events; the fastest of the batches (the least disturbed by whatever else
    # the machine does: a scan of the waits cannot be faster than its own cost).
    ms = {
        "matching send, 10 waits": statistics.median(send_few),
        "matching send, 2000 waits": statistics.median(send_many),
        "send to run end, 10 waits": statistics.median(end_few),
        "send to run end, 2000 waits": statistics.median(end_many),
        "unmatched, per event of a batch of 500, 10 waits": min(batch_few),
        "unmatched, per event of a batch of 500, 2000 waits": min(batch_many),
    }
    ms = {name: round(seconds * 1000, 3) for name, seconds in ms.items()}
    print(f"per-event latency (ms): {ms}")
    names = list(ms)
    ratios = {names[n + 1]: round(ms[names[n + 1]] / ms[names[n]], 2) for n in range(0, len(names), 2)}
    assert all(ratio < 5 for ratio in ratios.values()), f"matching is not indexed: 2000/10 ratios {ratios}, {ms}"


async def test_many_waits_across_a_restart_resolve_once_each(harness: Harness) -> None:
    """docs: reliability.md T12, scaled for CI: 300 runs wait on distinct keys, the daemon is killed
    (-9) and restarted, then the matching events come with duplicates and strangers among them, and 30
    waits time out. Each wait resolves exactly once, by its own first matching event or by its timeout."""
    harness.start_worker(WAIT)
    count, timing_out = 300, 30
    keys = [f"k{n}-{uuid.uuid4().hex[:6]}" for n in range(count)]
    async with open_client(harness.address) as client:
        triggers = [
            durably.Event("coord/await", {"key": key, "timeout": "6s" if n < timing_out else "60s"}, id=f"t-{key}")
            for n, key in enumerate(keys)
        ]
        await client.send(triggers)
        runs = {key: (await find_run(client, f"t-{key}")).id for key in keys}
        await await_until(
            lambda: len(harness.observations("reached-wait")) >= count, timeout=60, what="every run at its wait"
        )
        for key in keys[timing_out:]:  # (those timing out may have done so already on a slow machine)
            await until_waiting(client, runs[key], timeout=30)
    harness.daemon.kill9()
    harness.daemon.start()
    answered = keys[timing_out:]
    replies = [durably.Event("coord/reply", {"key": key}, id=f"r-{key}") for key in answered]
    again = [durably.Event("coord/reply", {"key": key, "late": True}, id=f"r2-{key}") for key in answered[:50]]
    strangers = [durably.Event("coord/reply", {"key": f"stranger-{n}"}) for n in range(50)]
    async with open_client(harness.address) as client:
        await client.send(replies + strangers)
        await client.send(again)
        ended = {key: await client.wait_for_run(run_id, timeout=60) for key, run_id in runs.items()}
    for n, key in enumerate(keys):
        run = ended[key]
        if n < timing_out:
            assert got(run) is None, describe(run)
        else:
            assert got(run) == {"id": f"r-{key}", "name": "coord/reply", "data": {"key": key}}, describe(run)
        assert [step.name for step in run.steps] == ["reply", "after"], describe(run)
        assert harness.count("step", run=run.id, name="after") == 1, describe(run)


async def test_a_timeout_due_while_the_disk_is_full_fires_once_the_store_is_back(harness: Harness) -> None:
    """A wait's timer fires while every commit fails: it fires again until its step is stored (it was
    dropped from memory, and the run waited until the daemon's next start-up)."""
    harness.start_worker(WAIT)
    async with open_client(harness.address) as client:
        run = await start(client, "coord/await", {"key": unique("full"), "timeout": "2s"})
        await until_waiting(client, run.id)
        with disk_full(harness.daemon):
            await asyncio.sleep(3.5)  # the time-out is due meanwhile and cannot be stored
            assert (await client.get_run(run.id)).status == "waiting", "the time-out was stored"
        done = await client.wait_for_run(run.id, timeout=10)
    assert done.status == "completed" and got(done) is None, describe(done)
