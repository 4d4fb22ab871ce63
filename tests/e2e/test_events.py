"""Event ingestion: ids deduplicate, every distinct event triggers its own run, unmatched is fine."""

from __future__ import annotations

import asyncio
import uuid

import durably
import pytest

from .harness import STEPS, Harness, describe, find_run, open_client

WORKERS = [STEPS]


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def _runs_seen_by_handler(cluster: Harness, event_id: str) -> set[str]:
    return {o["run"] for o in cluster.observations("handler", fn="three-steps") if o["event"]["id"] == event_id}


async def test_same_event_id_sent_twice_makes_one_run(cluster: Harness, client: durably.Client) -> None:
    event_id = _unique("dedup")
    first = await client.send(durably.Event(name="demo/run", data={"copy": 1}, id=event_id))
    second = await client.send(durably.Event(name="demo/run", data={"copy": 2}, id=event_id))
    assert first == second == [event_id]

    run = await find_run(client, event_id)
    done = await client.wait_for_run(run.id, timeout=30)
    assert done.status == "completed", describe(done)
    assert [r.id for r in await client.list_runs(event_id=event_id)] == [run.id]
    assert _runs_seen_by_handler(cluster, event_id) == {run.id}
    # The first event is the one kept.
    assert {o["event"]["data"]["copy"] for o in cluster.observations("handler", run=run.id)} == {1}


async def test_same_event_id_sent_concurrently_and_after_a_restart_makes_one_run(harness: Harness) -> None:
    """docs: reliability.md T5: five sends of one id at once, then again after kill -9 and a restart."""
    harness.start_worker(STEPS)
    event_id = _unique("dedup-race")
    copies = [durably.Event(name="demo/run", data={"copy": n}, id=event_id) for n in range(5)]
    async with open_client(harness.address) as client:
        answers = await asyncio.gather(*(client.send(copy) for copy in copies))
        assert answers == [[event_id]] * 5
        run = await find_run(client, event_id)
    harness.daemon.kill9()
    harness.daemon.start()
    async with open_client(harness.address) as client:
        assert await asyncio.gather(*(client.send(copy) for copy in copies)) == [[event_id]] * 5
        done = await client.wait_for_run(run.id, timeout=30)
        assert done.status == "completed", describe(done)
        assert [r.id for r in await client.list_runs(event_id=event_id)] == [run.id]


async def test_same_event_id_twice_in_one_request_makes_one_run(cluster: Harness, client: durably.Client) -> None:
    event_id = _unique("dedup-batch")
    ids = await client.send(
        [
            durably.Event(name="demo/run", data={"copy": 1}, id=event_id),
            durably.Event(name="demo/run", data={"copy": 2}, id=event_id),
        ]
    )
    assert ids == [event_id, event_id]
    run = await find_run(client, event_id)
    done = await client.wait_for_run(run.id, timeout=30)
    assert done.status == "completed", describe(done)
    assert [r.id for r in await client.list_runs(event_id=event_id)] == [run.id]
    assert _runs_seen_by_handler(cluster, event_id) == {run.id}


async def test_distinct_events_make_one_run_each(cluster: Harness, client: durably.Client) -> None:
    given = [_unique("distinct") for _ in range(3)]
    ids = await client.send([durably.Event(name="demo/run", data={"n": i}, id=e) for i, e in enumerate(given)])
    assert ids == given
    generated = await client.send([durably.Event(name="demo/run", data={}), durably.Event(name="demo/run")])
    assert len(generated) == 2 and all(generated) and generated[0] != generated[1]

    runs = [await find_run(client, event_id) for event_id in ids + generated]
    assert len({r.id for r in runs}) == 5
    for run, event_id in zip(runs, ids + generated, strict=True):
        assert run.event_id == event_id and run.function_id == "three-steps"
        done = await client.wait_for_run(run.id, timeout=30)
        assert done.status == "completed", describe(done)
        assert _runs_seen_by_handler(cluster, event_id) == {run.id}


async def test_event_nobody_listens_to_is_accepted_and_makes_no_run(client: durably.Client) -> None:
    [event_id] = await client.send(durably.Event(name="nobody/listens", data={"x": 1}))
    assert event_id
    assert await client.list_runs(event_id=event_id) == []
    given = _unique("unmatched")
    assert await client.send(durably.Event(name="nobody/listens", id=given)) == [given]
    assert await client.list_runs(event_id=given) == []


async def test_list_runs_is_newest_first_and_filters(client: durably.Client) -> None:
    [older_event] = await client.send(durably.Event(name="demo/run", data={}))
    older = await find_run(client, older_event)
    await asyncio.sleep(0.02)  # distinct creation times, so "newest first" has one answer
    [newer_event] = await client.send(durably.Event(name="demo/loop", data={}))
    newer = await find_run(client, newer_event)
    for run in (older, newer):
        await client.wait_for_run(run.id, timeout=30)

    listed = [r.id for r in await client.list_runs()]
    assert listed.index(newer.id) < listed.index(older.id)
    loops = await client.list_runs(function_id="loop-steps")
    assert newer.id in {r.id for r in loops} and all(r.function_id == "loop-steps" for r in loops)
    assert [r.id for r in await client.list_runs(limit=1)] == [newer.id]


async def test_get_run_of_unknown_id_raises_run_not_found(client: durably.Client) -> None:
    with pytest.raises(durably.RunNotFoundError, match="no-such-run"):
        await client.get_run("no-such-run")
