"""The re-execution model of the article's Part 1 and step ids repeated in a loop (Part 5)."""

from __future__ import annotations

import hashlib

import durably

from .harness import STEPS, Harness, describe, find_run, run_to_end

WORKERS = [STEPS]


async def test_three_steps_run_the_handler_three_times_and_each_step_once(
    cluster: Harness, client: durably.Client
) -> None:
    [event_id] = await client.send(durably.Event(name="demo/run", data={"order": 7}))
    run = await find_run(client, event_id)
    done = await client.wait_for_run(run.id, timeout=30)

    assert done.status == "completed", describe(done)
    assert done.output == {"result1": {"value": "A"}, "result2": {"value": "B"}, "result3": {"value": "C"}}
    assert (done.id, done.app_id, done.function_id, done.event_id) == (run.id, "tests", "three-steps", event_id)
    assert done.error is None
    assert done.created_at and done.started_at and done.ended_at

    # Code outside steps runs on every execution: once per step, as in the article.
    handlers = cluster.observations("handler", run=run.id)
    assert len(handlers) == 3, handlers
    for seen in handlers:
        assert seen["fn"] == "three-steps"
        assert seen["event"] == {"id": event_id, "name": "demo/run", "data": {"order": 7}}

    # Each step body ran exactly once; results flowed from one step to the next.
    for name in ("step-one", "step-two", "step-three"):
        assert cluster.count("step", run=run.id, name=name) == 1, name
    [two] = cluster.observations("step", run=run.id, name="step-two")
    [three] = cluster.observations("step", run=run.id, name="step-three")
    assert two["got"] == {"value": "A"}
    assert three["got"] == {"value": "B"} and three["mark"] == "kwarg"

    assert [s.name for s in done.steps] == ["step-one", "step-two", "step-three"], describe(done)
    assert [s.output for s in done.steps] == [{"value": "A"}, {"value": "B"}, {"value": "C"}]
    assert all(s.status == "completed" and s.error is None for s in done.steps), describe(done)


async def test_get_run_returns_the_same_finished_run(cluster: Harness, client: durably.Client) -> None:
    done = await run_to_end(client, "demo/run", {})
    again = await client.get_run(done.id)
    assert (again.id, again.status, again.output) == (done.id, "completed", done.output)
    assert [s.name for s in again.steps] == ["step-one", "step-two", "step-three"]


async def test_step_id_repeated_in_a_loop_gets_one_result_per_occurrence(
    cluster: Harness, client: durably.Client
) -> None:
    done = await run_to_end(client, "demo/loop", {})

    assert done.status == "completed", describe(done)
    assert done.output == {"sent": [{"i": 0}, {"i": 1}, {"i": 2}]}
    sends = [s for s in done.steps if s.name == "send"]
    assert [s.index for s in sends] == [0, 1, 2], describe(done)
    assert [s.output for s in sends] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert len({s.id for s in sends}) == 3
    # Hashed as the protocol says: SHA-1 hex of the id, with ":n" for the n-th repeat.
    expected = [hashlib.sha1(key.encode()).hexdigest() for key in ("send", "send:1", "send:2")]
    assert [s.id for s in sends] == expected
    # Each occurrence's body ran once.
    assert sorted(o["i"] for o in cluster.observations("step", run=done.id, name="send")) == [0, 1, 2]
