"""Concurrency limits (issue 5): per function and per key; waiting work waits, it is never dropped."""

from __future__ import annotations

import asyncio
import itertools

import durably

from .harness import Harness, WorkerSpec, describe, find_run

CONCURRENCY = WorkerSpec("failures_concurrency.py", ("one-at-a-time", "one-per-user"))
WORKERS = [CONCURRENCY]

Interval = tuple[float, float]


async def run_all(client: durably.Client, name: str, datas: list[dict[str, str]]) -> list[durably.Run]:
    """Send the events in one call (so the runs are created together) and wait for every run to end."""
    ids = await client.send([durably.Event(name=name, data=data) for data in datas])
    runs = [await find_run(client, event_id) for event_id in ids]
    return list(await asyncio.gather(*(client.wait_for_run(run.id, timeout=30) for run in runs)))


def interval(cluster: Harness, run: durably.Run) -> Interval:
    """When the run's step body started and ended (it ran exactly once)."""
    starts = cluster.observations("work", run=run.id, phase="start")
    ends = cluster.observations("work", run=run.id, phase="end")
    assert len(starts) == 1 and len(ends) == 1, f"run {run.id}: step started {len(starts)}x, ended {len(ends)}x"
    return starts[0]["at"], ends[0]["at"]


def overlap(a: Interval, b: Interval) -> bool:
    return a[0] < b[1] and b[0] < a[1]


async def test_concurrency_one_runs_the_steps_one_after_another(cluster: Harness, client: durably.Client) -> None:
    done = await run_all(client, "failures/one-at-a-time", [{"n": "1"}, {"n": "2"}, {"n": "3"}])

    assert [r.status for r in done] == ["completed"] * 3, [describe(r) for r in done]
    spans = sorted(interval(cluster, run) for run in done)
    for earlier, later in itertools.pairwise(spans):
        assert later[0] >= earlier[1], f"two step bodies ran at once under concurrency=1: {spans}"
    for run in done:
        assert run.output is not None and set(run.output) == {"start", "end"}, describe(run)


async def test_concurrency_per_key_limits_each_key_alone(cluster: Harness, client: durably.Client) -> None:
    done = await run_all(client, "failures/one-per-user", [{"user": "a"}, {"user": "a"}, {"user": "b"}])

    assert [r.status for r in done] == ["completed"] * 3, [describe(r) for r in done]
    a1, a2, b = (interval(cluster, run) for run in done)
    assert not overlap(a1, a2), f"two runs of user a overlapped: {a1} {a2}"
    assert overlap(b, a1) or overlap(b, a2), f"user b waited for user a: a={a1} {a2} b={b}"
