"""Crash safety: kill -9 of the daemon between steps, kill -9 of a worker in the middle of a step."""

from __future__ import annotations

import durably

from .harness import CRASH, Harness, describe, find_run, open_client


async def test_daemon_killed_between_steps_resumes_after_restart(harness: Harness) -> None:
    worker = harness.start_worker(CRASH)
    async with open_client(harness.address) as client:
        [event_id] = await client.send(durably.Event(name="demo/crash-between", data={}, id="crash-evt-1"))
        run = await find_run(client, event_id)
        # Step two started: the daemon recorded step one and dispatched the next execution.
        await harness.until_started(run.id, "two")
        before = await client.get_run(run.id)
        assert [(s.name, s.status) for s in before.steps] == [("one", "completed")], describe(before)

    harness.daemon.kill9()
    harness.daemon.start()  # same db file, same port
    harness.release(f"go-{run.id}")

    async with open_client(harness.address) as client:
        done = await client.wait_for_run(run.id, timeout=60)
        assert done.status == "completed", describe(done)
        assert done.output == {"one": {"n": 1}, "two": {"n": 2}, "three": {"n": 3}}
        assert [s.name for s in done.steps] == ["one", "two", "three"], describe(done)

        assert harness.count("step", run=run.id, name="one") == 1, "a recorded step ran again"
        assert harness.count("step", run=run.id, name="two", phase="finished") >= 1
        assert harness.count("step", run=run.id, name="three") == 1
        # The same worker process reconnected by itself and finished the run.
        assert worker.alive()
        assert {o["pid"] for o in harness.observations(run=run.id)} == {worker.pid}

        # The event id still deduplicates after the restart.
        assert await client.send(durably.Event(name="demo/crash-between", id="crash-evt-1")) == ["crash-evt-1"]
        assert [r.id for r in await client.list_runs(event_id="crash-evt-1")] == [run.id]


async def test_worker_killed_mid_step_the_step_runs_again_on_a_new_worker(harness: Harness) -> None:
    first = harness.start_worker(CRASH)
    async with open_client(harness.address) as client:
        [event_id] = await client.send(durably.Event(name="demo/worker-crash", data={}))
        run = await find_run(client, event_id)
        await harness.until_started(run.id, "slow")
        first.kill9()
        second = harness.start_worker(CRASH, wait=False)
        harness.release(f"release-{run.id}")

        done = await client.wait_for_run(run.id, timeout=60)
        assert done.status == "completed", describe(done)
        assert done.output == {"prepare": "prepared", "slow": "slow-done"}

        # At least once: started on both workers, finished once (on the new one).
        started = [o["pid"] for o in harness.observations("step", run=run.id, name="slow", phase="started")]
        finished = [o["pid"] for o in harness.observations("step", run=run.id, name="slow", phase="finished")]
        assert started == [first.pid, second.pid]
        assert finished == [second.pid]
        assert harness.count("step", run=run.id, name="prepare") == 1, "a recorded step ran again"
