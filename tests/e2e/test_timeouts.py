"""Run timeouts (issue 5): timeouts.start cancels a run nobody started in time, timeouts.finish one
that runs too long; each with error name StartTimeout / FinishTimeout."""

from __future__ import annotations

import durably

from .harness import Harness, WorkerSpec, describe, find_run, open_client, run_to_end

TIMEOUTS = WorkerSpec("failures_timeouts.py", ("start-timeout", "finish-timeout"))


def seconds(run: durably.Run, start: str, end: str) -> float:
    began, ended = getattr(run, start), getattr(run, end)
    assert began is not None and ended is not None, describe(run)
    return float((ended - began).total_seconds())


async def test_start_timeout_cancels_a_run_no_worker_started(harness: Harness) -> None:
    # Registered once, then no worker serves the function when its event arrives.
    first = harness.start_worker(TIMEOUTS)
    first.stop()
    harness.wait_connected(TIMEOUTS.functions, connected=False)

    async with open_client(harness.address) as client:
        [event_id] = await client.send(durably.Event(name="failures/start-timeout", data={}))
        run = await find_run(client, event_id)
        assert run.status == "queued", describe(run)
        done = await client.wait_for_run(run.id, timeout=10)

        assert done.status == "cancelled", describe(done)
        assert done.error is not None and done.error.name == "StartTimeout", describe(done)
        waited = seconds(done, "created_at", "ended_at")
        assert 0.9 <= waited < 2.5, f"cancelled {waited:.2f} s after it was created (timeouts.start = 1s)"
        assert done.steps == [] and harness.count("step", run=run.id) == 0, describe(done)

        # A run that starts in time is not cancelled, even when it lasts longer than timeouts.start.
        harness.start_worker(TIMEOUTS)
        slow = await run_to_end(client, "failures/start-timeout", {}, timeout=30)
        assert slow.status == "completed", describe(slow)
        assert slow.output == {"slow": "slept"}
        assert seconds(slow, "created_at", "ended_at") > 1.0, describe(slow)

        # The cancelled run stays cancelled: the worker that connected later did not run it.
        again = await client.get_run(run.id)
        assert again.status == "cancelled" and harness.count("step", run=run.id) == 0, describe(again)


async def test_finish_timeout_cancels_a_run_that_takes_too_long(harness: Harness) -> None:
    harness.start_worker(TIMEOUTS)
    async with open_client(harness.address) as client:
        # Two steps of 1.5 s each against timeouts.finish = 1s.
        done = await run_to_end(client, "failures/finish-timeout", {"seconds": 1.5}, timeout=30)

        assert done.status == "cancelled", describe(done)
        assert done.error is not None and done.error.name == "FinishTimeout", describe(done)
        took = seconds(done, "started_at", "ended_at")
        assert 0.9 <= took < 2.5, f"cancelled {took:.2f} s after it started (timeouts.finish = 1s)"
        assert all(s.name != "second" for s in done.steps), describe(done)

        # Within the limit the same function completes.
        quick = await run_to_end(client, "failures/finish-timeout", {"seconds": 0.05}, timeout=30)
        assert quick.status == "completed", describe(quick)
        assert quick.output == {"first": "first slept", "second": "second slept"}
