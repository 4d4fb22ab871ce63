"""``checkpointing=True``: one execution runs a run's sequential steps, each committed before the
handler goes on; a crash, a cancel or a limit stops it at a step boundary and loses nothing committed."""

from __future__ import annotations

import asyncio

from .harness import (
    CHECKPOINT,
    Harness,
    await_until,
    blocked_in_step_two,
    describe,
    metrics,
    open_client,
    run_to_end,
)


async def test_sequential_steps_run_in_one_execution(harness: Harness) -> None:
    harness.start_worker(CHECKPOINT)
    before = metrics(harness.address)
    async with open_client(harness.address) as client:
        done = await run_to_end(client, "cp/steps", {"n": 50})
    after = metrics(harness.address)

    assert done.status == "completed", describe(done)
    assert done.output == list(range(1, 51))
    assert [s.name for s in done.steps] == [f"s{i}" for i in range(50)]
    assert all(s.output == i + 1 for i, s in enumerate(done.steps))
    assert after.executions_dispatched - before.executions_dispatched == 1
    assert after.steps_recorded - before.steps_recorded == 50
    assert harness.count("handler", run=done.id) == 1, "the handler was replayed"
    for i in range(50):
        assert harness.count("step", run=done.id, name=f"s{i}") == 1


async def test_each_step_is_committed_before_the_handler_goes_on(harness: Harness) -> None:
    harness.start_worker(CHECKPOINT)
    async with open_client(harness.address) as client:
        run = await blocked_in_step_two(harness, client)
        during = await client.get_run(run.id)
        assert during.status == "running", describe(during)
        assert [(s.name, s.status, s.output) for s in during.steps] == [("one", "completed", 1)], describe(during)
        harness.release(f"go-{run.id}")
        done = await client.wait_for_run(run.id, timeout=30)
    assert done.status == "completed", describe(done)
    assert done.output == {"one": 1, "two": 2, "three": 3}
    assert harness.count("handler", run=run.id) == 1


async def test_worker_killed_mid_run_the_next_worker_replays_the_checkpoints(harness: Harness) -> None:
    first = harness.start_worker(CHECKPOINT)
    async with open_client(harness.address) as client:
        run = await blocked_in_step_two(harness, client)
        first.kill9()
        second = harness.start_worker(CHECKPOINT, wait=False)
        harness.release(f"go-{run.id}")
        done = await client.wait_for_run(run.id, timeout=60)

    assert done.status == "completed", describe(done)
    assert done.output == {"one": 1, "two": 2, "three": 3}
    assert harness.count("step", run=run.id, name="one") == 1, "a checkpointed step ran again"
    started = [o["pid"] for o in harness.observations("step", run=run.id, name="two", phase="started")]
    assert started == [first.pid, second.pid]
    assert [o["pid"] for o in harness.observations("step", run=run.id, name="three")] == [second.pid]
    # The second worker replayed the handler from the saved state: one execution each.
    assert [o["pid"] for o in harness.observations("handler", run=run.id)] == [first.pid, second.pid]


async def test_daemon_killed_mid_run_resumes_after_restart(harness: Harness) -> None:
    worker = harness.start_worker(CHECKPOINT)
    async with open_client(harness.address) as client:
        run = await blocked_in_step_two(harness, client)
    harness.daemon.kill9()
    harness.daemon.start()  # same file, same port; the worker reconnects by itself
    harness.release(f"go-{run.id}")

    async with open_client(harness.address) as client:
        done = await client.wait_for_run(run.id, timeout=60)
    assert done.status == "completed", describe(done)
    assert done.output == {"one": 1, "two": 2, "three": 3}
    assert [s.name for s in done.steps] == ["one", "two", "three"]
    assert harness.count("step", run=run.id, name="one") == 1, "a checkpointed step ran again"
    assert harness.count("step", run=run.id, name="three") == 1
    assert worker.alive()


async def test_a_cancelled_run_stops_at_its_next_checkpoint(harness: Harness) -> None:
    harness.start_worker(CHECKPOINT)
    async with open_client(harness.address) as client:
        run = await blocked_in_step_two(harness, client)
        cancelled = await client.cancel_run(run.id)
        assert cancelled.status == "cancelled"
        harness.release(f"go-{run.id}")
        await await_until(
            lambda: harness.observations("step", run=run.id, name="two", phase="finished"),
            timeout=30,
            what="step two to finish",
        )
        await asyncio.sleep(1.0)  # time for the refused checkpoint and for a step that must not run
        after = await client.get_run(run.id)
    assert after.status == "cancelled", describe(after)
    assert [s.name for s in after.steps] == ["one"], describe(after)
    assert harness.count("step", run=run.id, name="three") == 0, "the handler went on after the cancel"
    assert harness.daemon.alive()


async def test_sleeps_gathers_and_retries_end_a_checkpointed_stretch(harness: Harness) -> None:
    harness.start_worker(CHECKPOINT)
    async with open_client(harness.address) as client:
        done = await run_to_end(client, "cp/mixed", {})
    assert done.status == "completed", describe(done)
    assert done.output == {"steps": ["a", "b", "c", "d", "flaky", "f", "g"]}
    names = [s.name for s in done.steps]
    assert names[0] == "a" and sorted(names[1:3]) == ["b", "c"], describe(done)
    assert names[3:] == ["d", "flaky", "nap", "f", "g"], describe(done)
    for name in ("a", "b", "c", "d", "f", "g"):
        assert harness.count("step", run=done.id, name=name) == 1, f"step {name} ran again"
    assert harness.count("step", run=done.id, name="flaky") == 2
    flaky = next(s for s in done.steps if s.name == "flaky")
    assert flaky.attempts == 2


async def test_a_checkpoint_over_the_state_limit_fails_the_run(harness: Harness) -> None:
    harness.start_worker(CHECKPOINT)
    async with open_client(harness.address) as client:
        done = await run_to_end(client, "cp/big", {}, timeout=60)
    assert done.status == "failed", describe(done)
    assert done.error is not None and done.error.name == "StateTooLarge", describe(done)
    assert [s.name for s in done.steps] == [f"big{i}" for i in range(8)]
    assert harness.count("step", run=done.id, name="big8") == 1
    assert harness.daemon.alive()
