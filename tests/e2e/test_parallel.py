"""Parallel steps (the article's Part 4): ``asyncio.gather`` of steps runs them at the same time, each
body once; steps after the group see every result; nested and repeated gathers; a failing parallel
step is retried alone; ``optimize_parallelism`` re-invokes the handler less, never more."""

from __future__ import annotations

from collections import Counter
from typing import Any

import durably
import pytest

from .harness import Harness, WorkerSpec, await_until, describe, find_run, metrics, open_client, run_to_end

PARALLEL = WorkerSpec(
    "parallel_steps.py",
    (
        "par-three",
        "par-many",
        "par-fanout-opt",
        "par-nested",
        "par-twice",
        "par-retry",
        "par-blocking",
        "par-staggered",
    ),
)
WORKERS = [PARALLEL]

SLOW = ("send-confirmation-email", "update-crm-record", "grant-premium-access")


def one_body(cluster: Harness, run: str, name: str) -> dict[str, Any]:
    """The single ``step`` observation of step ``name``: its body ran exactly once."""
    bodies = cluster.observations("step", run=run, name=name)
    assert len(bodies) == 1, f"step {name!r} body ran {len(bodies)} times: {bodies}"
    return bodies[0]


@pytest.mark.parametrize("mode", ["async", "sync"])
async def test_three_half_second_steps_in_a_gather_take_half_a_second(
    cluster: Harness, client: durably.Client, mode: str
) -> None:
    done = await run_to_end(client, "par/three", {"mode": mode}, timeout=30)

    assert done.status == "completed", describe(done)
    results = {name: {"done": name, "for": "ada"} for name in SLOW}
    assert done.output == {
        "user": {"user": "ada"},
        "email": results["send-confirmation-email"],
        "crm": results["update-crm-record"],
        "access": results["grant-premium-access"],
        "logged": {"logged": list(SLOW)},
    }, describe(done)

    # Each body ran once, and all three were running at the same moment.
    bodies = [one_body(cluster, done.id, name) for name in SLOW]
    assert {b["mode"] for b in bodies} == {mode}
    starts, ends = [b["started"] for b in bodies], [b["ended"] for b in bodies]
    wall = max(ends) - min(starts)
    print(f"{mode}: three 0.5 s steps took {wall:.3f} s from the first start to the last end")
    assert wall < 1.2, f"three 0.5 s parallel steps took {wall:.3f} s: they ran one after another"
    assert max(starts) < min(ends), f"the step bodies did not overlap: starts {starts}, ends {ends}"

    # The sequential steps around the group: before it once, after it once with every result.
    one_body(cluster, done.id, "fetch-user")
    logged = one_body(cluster, done.id, "log-completion")
    assert logged["got"] == [results[name] for name in SLOW]
    assert min(starts) >= one_body(cluster, done.id, "fetch-user")["t"] - 0.01
    assert logged["t"] >= max(ends) - 0.01

    run = await client.get_run(done.id)
    names = [s.name for s in run.steps]
    assert sorted(names) == sorted(["fetch-user", *SLOW, "log-completion"]), describe(run)
    assert names[0] == "fetch-user" and names[-1] == "log-completion", describe(run)
    assert_first_attempts(run, 5)


async def test_a_gather_of_1000_steps_completes_each_body_once(cluster: Harness, client: durably.Client) -> None:
    n = 1000
    done = await run_to_end(client, "par/many", {"n": n}, timeout=90)

    assert done.status == "completed", describe(done)
    assert done.output == {"count": n, "sum": n * (n - 1) // 2, "in_order": True}

    run = await client.get_run(done.id)
    assert len(run.steps) == n, f"GetRun shows {len(run.steps)} steps, expected {n}"
    assert sorted(s.name for s in run.steps) == sorted(f"item-{i}" for i in range(n))
    assert all(s.status == "completed" and s.index == 0 for s in run.steps)
    assert {s.name: s.output for s in run.steps} == {f"item-{i}": i for i in range(n)}

    ran = Counter(o["i"] for o in cluster.observations("step", run=done.id, name="item"))
    assert set(ran) == set(range(n)), f"bodies that never ran: {sorted(set(range(n)) - set(ran))[:20]}"
    twice = {i: c for i, c in ran.items() if c != 1}
    assert not twice, f"bodies that ran more than once: {dict(list(twice.items())[:20])}"


async def test_gather_of_step_sequences_plans_later_steps_while_earlier_ones_replay(
    cluster: Harness, client: durably.Client
) -> None:
    done = await run_to_end(client, "par/nested", {}, timeout=30)

    assert done.status == "completed", describe(done)
    ends = ["b0-s0", "b1-s1<b1-s0>", "b2-s2<b2-s1<b2-s0>>"]
    assert done.output == {"ends": ends, "after": ends}, describe(done)

    # Every body ran once and got the result of the step before it in its branch.
    for branch in range(3):
        previous: str | None = None
        for level in range(branch + 1):
            body = one_body(cluster, done.id, f"b{branch}-s{level}")
            assert body["got"] == previous, (branch, level, body)
            previous = f"b{branch}-s{level}" if previous is None else f"b{branch}-s{level}<{previous}>"
    assert one_body(cluster, done.id, "after")["got"] == ends

    run = await client.get_run(done.id)
    assert_first_attempts(run, 7)
    assert run.steps[-1].name == "after", describe(run)
    # Within a branch, a step is recorded after the one it depends on.
    order = [s.name for s in run.steps]
    for branch in range(3):
        positions = [order.index(f"b{branch}-s{level}") for level in range(branch + 1)]
        assert positions == sorted(positions), order


async def test_two_gathers_one_after_the_other(cluster: Harness, client: durably.Client) -> None:
    done = await run_to_end(client, "par/twice", {}, timeout=30)

    assert done.status == "completed", describe(done)
    assert done.output == {
        "a": "a()",
        "b": "b()",
        "c": "c(a())",
        "d": "d(b())",
        "final": "final(a(),b(),c(a()),d(b()))",
    }, describe(done)
    for name in ("a", "b", "c", "d", "final"):
        one_body(cluster, done.id, name)
    # The second group starts only once the first one is complete.
    first_end = max(one_body(cluster, done.id, name)["t"] for name in ("a", "b"))
    second_start = min(one_body(cluster, done.id, name)["t"] for name in ("c", "d"))
    assert second_start >= first_end - 0.01

    run = await client.get_run(done.id)
    assert_first_attempts(run, 5)
    order = [s.name for s in run.steps]
    assert sorted(order[:2]) == ["a", "b"] and sorted(order[2:4]) == ["c", "d"] and order[4:] == ["final"], order


async def test_a_failing_parallel_step_is_retried_alone(cluster: Harness, client: durably.Client) -> None:
    done = await run_to_end(client, "par/retry", {}, timeout=60)

    assert done.status == "completed", describe(done)
    assert done.output == {"results": ["left-ok", "flaky-ok-on-2", "right-ok"], "after": "after-ok"}, describe(done)
    attempts = [o["attempt"] for o in cluster.observations("step", run=done.id, name="flaky")]
    assert attempts == [1, 2], f"flaky's body ran {len(attempts)} times"
    for name in ("left", "right", "after"):
        one_body(cluster, done.id, name)  # the siblings did not run again

    run = await client.get_run(done.id)
    by_name = {s.name: s for s in run.steps}
    assert set(by_name) == {"left", "flaky", "right", "after"}, describe(run)
    assert by_name["flaky"].attempts == 2 and by_name["flaky"].status == "completed", describe(run)
    assert by_name["left"].attempts == 1 and by_name["right"].attempts == 1, describe(run)


def assert_first_attempts(run: durably.Run, count: int) -> None:
    """The run saved ``count`` steps, each completed on its first attempt."""
    attempts = [(s.name, str(s.status), s.attempts) for s in run.steps]
    assert len(attempts) == count and all(status == "completed" and n == 1 for _, status, n in attempts), attempts


@pytest.mark.parametrize(("n", "gap"), [(3, 0.0), (10, 0.03)], ids=["together", "one-by-one"])
async def test_a_gather_needs_no_retry(cluster: Harness, client: durably.Client, n: int, gap: float) -> None:
    """Steps of a gather finishing together, or one by one while their siblings still run (each
    re-invokes the handler without optimize_parallelism): no execution may count as a failure, in a
    function with retries=0."""
    done = await run_to_end(client, "par/staggered", {"n": n, "gap": gap}, timeout=30)

    assert done.status == "completed", describe(done)
    assert done.output == {"values": list(range(n)), "after": "after(" + ",".join(map(str, range(n))) + ")"}
    for i in range(n):
        one_body(cluster, done.id, f"st{i}")
    one_body(cluster, done.id, "after")
    assert_first_attempts(await client.get_run(done.id), n + 1)


async def test_optimize_parallelism_needs_no_more_executions(harness: Harness) -> None:
    """A 100-step gather: with ``optimize_parallelism`` at most 100 + 2 handler executions, and no more
    than the same function without the option (a daemon of this test's own, so the counts are exact)."""
    harness.start_worker(PARALLEL)
    n = 100
    counts: dict[str, int] = {}
    async with open_client(harness.address) as client:
        for label, event in (("without", "par/many"), ("with", "par/fanout-opt")):
            before = metrics(harness.address).executions_dispatched
            done = await run_to_end(client, event, {"n": n}, timeout=60)
            assert done.status == "completed", describe(done)
            assert done.output == {"count": n, "sum": n * (n - 1) // 2, "in_order": True}, describe(done)
            counts[label] = metrics(harness.address).executions_dispatched - before
            handlers = harness.count("handler", run=done.id)
            print(f"{label} optimize_parallelism: {counts[label]} executions dispatched, {handlers} handler calls")
            assert handlers <= counts[label], "the worker ran the handler more often than it was asked to"
            ran = Counter(o["i"] for o in harness.observations("step", run=done.id, name="item"))
            assert ran == Counter(range(n)), "each of the 100 bodies must run exactly once"

    assert counts["with"] <= n + 2, f"optimize_parallelism took {counts['with']} executions for {n} steps"
    assert counts["with"] <= counts["without"], counts


async def test_daemon_killed_while_parallel_steps_run_resumes_them(harness: Harness) -> None:
    """kill -9 of the daemon while three planned steps are in progress: after a restart on the same
    file the planned steps run again (they were in flight) and the run completes, each step saved once."""
    worker = harness.start_worker(PARALLEL)
    async with open_client(harness.address) as client:
        [event_id] = await client.send(durably.Event(name="par/blocking", data={}))
        run = await find_run(client, event_id)
        await await_until(
            lambda: len(harness.observations("step", run=run.id, phase="started")) >= 3,
            timeout=30,
            what="the three parallel steps to start",
        )
    harness.daemon.kill9()
    harness.daemon.start()
    await await_until(
        lambda: len(harness.observations("step", run=run.id, phase="started")) >= 6,
        timeout=30,
        what="the three parallel steps to be dispatched again after the restart",
    )
    harness.release(f"go-{run.id}")
    async with open_client(harness.address) as client:
        done = await client.wait_for_run(run.id, timeout=30)
        assert done.status == "completed", describe(done)
        assert done.output == {"results": ["w0-done", "w1-done", "w2-done"], "after": "after(w0-done,w1-done,w2-done)"}
        stored = await client.get_run(run.id)
    assert sorted(s.name for s in stored.steps) == ["after", "w0", "w1", "w2"], describe(stored)
    assert stored.steps[-1].name == "after"
    one_body(harness, run.id, "after")
    assert worker.alive(), "the worker should have reconnected by itself"
