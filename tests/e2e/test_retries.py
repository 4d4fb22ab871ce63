"""Step retries, exhausted retries, NonRetriableError, function-level errors."""

from __future__ import annotations

import durably

from .harness import ERRORS, Harness, describe, run_to_end

WORKERS = [ERRORS]


async def test_step_that_fails_twice_then_succeeds(cluster: Harness, client: durably.Client) -> None:
    done = await run_to_end(client, "demo/flaky-step", {}, timeout=60)

    assert done.status == "completed", describe(done)
    assert done.output == {
        "ready": {"ready": True},
        "flaky": {"succeeded_on": 3},
        "finish": {"after": {"succeeded_on": 3}},
    }
    attempts = [o["attempt"] for o in cluster.observations("step", run=done.id, name="flaky")]
    assert attempts == [1, 2, 3]
    assert cluster.count("step", run=done.id, name="prepare") == 1, "an earlier step ran again"
    assert cluster.count("step", run=done.id, name="finish") == 1
    [flaky] = [s for s in done.steps if s.name == "flaky"]
    assert flaky.status == "completed" and flaky.attempts == 3, describe(done)


async def test_step_that_always_fails_exhausts_its_retries(cluster: Harness, client: durably.Client) -> None:
    done = await run_to_end(client, "demo/always-fails", {}, timeout=60)

    assert done.status == "failed", describe(done)
    assert done.error is not None and "doomed to fail every time" in done.error.message, describe(done)
    assert cluster.count("step", run=done.id, name="doomed") == 2, "retries=1 means two attempts"
    assert cluster.count("step", run=done.id, name="prepare") == 1
    assert cluster.count("after-doomed", run=done.id) == 0
    [doomed] = [s for s in done.steps if s.name == "doomed"]
    assert doomed.status == "failed", describe(done)
    assert doomed.error is not None and "doomed to fail every time" in doomed.error.message


async def test_non_retriable_error_fails_at_once(cluster: Harness, client: durably.Client) -> None:
    done = await run_to_end(client, "demo/gives-up", {}, timeout=60)

    assert done.status == "failed", describe(done)
    assert done.error is not None and "card declined for good" in done.error.message, describe(done)
    assert cluster.count("step", run=done.id, name="charge") == 1, "a NonRetriableError was retried"
    assert cluster.count("step", run=done.id, name="prepare") == 1
    assert cluster.count("after-charge", run=done.id) == 0


async def test_function_level_error_is_retried_until_it_stops(cluster: Harness, client: durably.Client) -> None:
    done = await run_to_end(client, "demo/flaky-handler", {}, timeout=60)

    assert done.status == "completed", describe(done)
    assert done.output == {"before": "before-done", "after": "after-done", "failures": 2}
    assert cluster.count("handler-error", run=done.id) == 2
    assert cluster.count("handler", run=done.id) >= 3, "the handler was not run again after it raised"
    assert cluster.count("step", run=done.id, name="before") == 1, "a saved step ran again on retry"
    assert cluster.count("step", run=done.id, name="after") == 1
