"""Failure semantics (issue 5): retries and ctx.attempt, backoff, RetryAfterError, NonRetriableError,
StepError caught and uncaught, failures outside any step, on_failure handlers.

The harness's daemon backs off from 20 ms doubling up to 200 ms (plus up to 20 % jitter).
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import durably

from .harness import Harness, WorkerSpec, await_until, describe, open_client, run_to_end

RETRIES = WorkerSpec(
    "failures_retries.py",
    (
        "fail-twice",
        "backoff",
        "retry-after",
        "non-retriable",
        "caught",
        "uncaught",
        "handler-flaky",
        "handler-broken",
    ),
)
ON_FAILURE = WorkerSpec("failures_on_failure.py", ("may-fail", "may-fail-failure"))
WORKERS = [RETRIES]

RETRY_BASE_S = 0.020  # the harness's --retry-base
RETRY_MAX_S = 0.200  # the harness's --retry-max


def step_named(run: durably.Run, name: str) -> durably.RunStep:
    """The one recorded step called `name` (fails if it was recorded twice or never)."""
    found = [s for s in run.steps if s.name == name]
    assert len(found) == 1, f"step {name!r} recorded {len(found)} times: {describe(run)}"
    return found[0]


def attempts_of(cluster: Harness, run: durably.Run, name: str) -> list[dict[str, Any]]:
    return cluster.observations("step", run=run.id, name=name)


async def test_step_fails_twice_then_succeeds_and_only_that_step_runs_again(
    cluster: Harness, client: durably.Client
) -> None:
    done = await run_to_end(client, "failures/fail-twice", {}, timeout=30)

    assert done.status == "completed", describe(done)
    assert done.output == {"prepare": "prepared", "flaky": {"succeeded_on": 3}, "finish": "finished"}
    flaky = attempts_of(cluster, done, "flaky")
    assert [o["n"] for o in flaky] == [1, 2, 3]
    assert [o["attempt"] for o in flaky] == [0, 1, 2], "ctx.attempt on the executions that ran the flaky step"
    # The article's quiz: only the failed step re-runs; the step before it is replayed, not re-run.
    assert [o["attempt"] for o in attempts_of(cluster, done, "prepare")] == [0], "an earlier step ran again"
    # New work starts again at attempt 0: the attempt counter belongs to the retried piece of work.
    assert [o["attempt"] for o in attempts_of(cluster, done, "finish")] == [0]

    assert [s.name for s in done.steps] == ["prepare", "flaky", "finish"], describe(done)
    assert step_named(done, "flaky").attempts == 3, describe(done)
    assert step_named(done, "flaky").status == "completed"
    assert step_named(done, "prepare").attempts == 1
    assert step_named(done, "finish").attempts == 1


async def test_retries_back_off_exponentially_up_to_the_maximum(cluster: Harness, client: durably.Client) -> None:
    done = await run_to_end(client, "failures/backoff", {}, timeout=30)

    assert done.status == "completed", describe(done)
    assert done.output == 7
    runs = attempts_of(cluster, done, "flaky")
    assert [o["attempt"] for o in runs] == [0, 1, 2, 3, 4, 5, 6]
    assert step_named(done, "flaky").attempts == 7, describe(done)

    gaps = [later["t"] - earlier["t"] for earlier, later in itertools.pairwise(runs)]
    shown = [round(g * 1000) for g in gaps]
    # Retry n waits at least min(base * 2**(n-1), max): 20, 40, 80, 160, 200, 200 ms.
    floors = [min(RETRY_BASE_S * 2**n, RETRY_MAX_S) for n in range(len(gaps))]
    for n, (gap, floor) in enumerate(zip(gaps, floors, strict=True), start=1):
        assert gap >= floor * 0.95, f"retry {n} came {gap * 1000:.0f} ms after attempt {n}, under {floor * 1000:.0f} ms"
    # It grows: the 4th wait (>= 160 ms) is well beyond the 1st (20-24 ms plus overhead) ...
    assert gaps[3] > gaps[0], f"backoff does not grow: gaps {shown} ms"
    # ... and stops growing at --retry-max (uncapped, the 6th wait would be 640 ms).
    assert gaps[5] < 0.5, f"backoff is not capped by --retry-max 200ms: gaps {shown} ms"
    assert sum(gaps) < 3.0, f"backoff took {sum(gaps):.2f} s in total: gaps {shown} ms"


async def test_retry_after_error_delays_the_next_attempt(cluster: Harness, client: durably.Client) -> None:
    done = await run_to_end(client, "failures/retry-after", {"after": 0.5}, timeout=30)

    assert done.status == "completed", describe(done)
    assert done.output == 2
    first, second = attempts_of(cluster, done, "limited")
    assert (first["attempt"], second["attempt"]) == (0, 1)
    gap = second["t"] - first["t"]
    # The harness's own backoff would retry after ~20 ms; RetryAfterError(after=0.5) asks for 0.5 s.
    assert gap >= 0.5, f"the retry started {gap * 1000:.0f} ms after RetryAfterError(after=0.5)"
    assert gap < 3.0, f"the retry started {gap:.2f} s after RetryAfterError(after=0.5)"
    assert step_named(done, "limited").attempts == 2, describe(done)


async def test_non_retriable_error_in_a_step_fails_the_run_after_one_attempt(
    cluster: Harness, client: durably.Client
) -> None:
    done = await run_to_end(client, "failures/non-retriable", {}, timeout=30)

    assert done.status == "failed", describe(done)
    assert [o["attempt"] for o in attempts_of(cluster, done, "charge")] == [0], "a NonRetriableError was retried"
    assert cluster.count("step", run=done.id, name="prepare") == 1
    assert cluster.count("after-charge", run=done.id) == 0

    charge = step_named(done, "charge")
    assert charge.status == "failed" and charge.attempts == 1, describe(done)
    assert charge.error is not None
    assert (charge.error.name, charge.error.message) == ("NonRetriableError", "card declined for good")
    assert done.error is not None, describe(done)
    assert "card declined for good" in done.error.message, describe(done)
    assert "NonRetriableError" in f"{done.error.name} {done.error.message}", describe(done)


async def test_caught_step_error_lets_the_handler_go_on(cluster: Harness, client: durably.Client) -> None:
    done = await run_to_end(client, "failures/caught", {}, timeout=30)

    assert done.status == "completed", describe(done)
    assert done.output == {
        "caught": {
            "step_id": "doomed",
            "error_name": "ValueError",
            "error_message": "doomed to fail every time",
            "has_stack": True,
        },
        "recover": {"recovered_from": "ValueError"},
    }
    # retries=1: two attempts, and replays after the failure raise the saved error without running it.
    assert [o["attempt"] for o in attempts_of(cluster, done, "doomed")] == [0, 1]
    assert cluster.count("step", run=done.id, name="recover") == 1
    assert cluster.count("caught", run=done.id) >= 1

    doomed = step_named(done, "doomed")
    assert doomed.status == "failed" and doomed.attempts == 2, describe(done)
    assert doomed.error is not None and doomed.error.name == "ValueError"
    assert doomed.error.message == "doomed to fail every time"
    assert step_named(done, "recover").status == "completed"


async def test_uncaught_step_error_fails_the_run_naming_the_step(cluster: Harness, client: durably.Client) -> None:
    done = await run_to_end(client, "failures/uncaught", {}, timeout=30)

    assert done.status == "failed", describe(done)
    assert done.error is not None, describe(done)
    assert "explode-step" in done.error.message, f"the run's error does not name the step: {done.error!r}"
    assert "no such thing" in done.error.message, describe(done)
    assert cluster.count("after-explode", run=done.id) == 0

    explosions = attempts_of(cluster, done, "explode-step")
    assert [o["attempt"] for o in explosions] == [0, 1]
    assert step_named(done, "explode-step").status == "failed"
    # The uncaught StepError fails the run at once: the handler is not retried after it met the error.
    after_failure = [o for o in cluster.observations("handler", run=done.id) if o["t"] > explosions[-1]["t"]]
    assert len(after_failure) == 1, f"handler executions after the step failed for good: {after_failure}"


async def test_failure_outside_any_step_retries_the_handler(cluster: Harness, client: durably.Client) -> None:
    done = await run_to_end(client, "failures/handler-flaky", {}, timeout=30)

    assert done.status == "completed", describe(done)
    assert done.output == {"before": "before-done", "after": "after-done", "failures": 2}
    assert [o["attempt"] for o in cluster.observations("handler-error", run=done.id)] == [0, 1]
    assert cluster.count("handler", run=done.id) >= 3, "the handler did not run again after it raised"
    assert cluster.count("step", run=done.id, name="before") == 1, "a recorded step ran again on a handler retry"
    # The execution that got through was the third attempt of the same piece of work.
    assert [o["attempt"] for o in attempts_of(cluster, done, "after")] == [2]
    assert [s.name for s in done.steps] == ["before", "after"], describe(done)


async def test_failure_outside_any_step_exhausts_retries(cluster: Harness, client: durably.Client) -> None:
    done = await run_to_end(client, "failures/handler-broken", {}, timeout=30)

    assert done.status == "failed", describe(done)
    assert done.error is not None, describe(done)
    assert (done.error.name, done.error.message) == ("RuntimeError", "the handler is broken")
    assert [o["attempt"] for o in cluster.observations("handler", run=done.id)] == [0, 1]


async def test_on_failure_runs_once_for_a_failed_run_and_never_for_a_completed_one(harness: Harness) -> None:
    harness.start_worker(ON_FAILURE)
    handler_id = "may-fail-failure"
    async with open_client(harness.address) as client:
        ok = await run_to_end(client, "failures/may-fail", {"order": "o-ok", "fail": False}, timeout=30)
        assert ok.status == "completed", describe(ok)
        bad = await run_to_end(client, "failures/may-fail", {"order": "o-bad", "fail": True}, timeout=30)
        assert bad.status == "failed", describe(bad)
        assert bad.error is not None and "work failed for o-bad" in bad.error.message, describe(bad)

        handlers: list[durably.Run] = await await_until(
            lambda: client.list_runs(function_id=handler_id), timeout=10, what="the failure handler's run"
        )
        assert len(handlers) == 1, [describe(r) for r in handlers]
        handled = await client.wait_for_run(handlers[0].id, timeout=30)
        assert handled.status == "completed", describe(handled)
        assert handled.id not in (ok.id, bad.id) and handled.function_id == handler_id

        output = handled.output
        assert output["event_name"] == "durably/function.failed"
        assert output["function_id"] == handler_id
        data = output["data"]
        assert data["run_id"] == bad.id, f"the failure event names run {data.get('run_id')}, not {bad.id}"
        assert data["function_id"] == "may-fail" and data["app_id"] == "tests", data
        assert data["event"]["id"] == bad.event_id and data["event"]["name"] == "failures/may-fail", data
        assert data["event"]["data"] == {"order": "o-bad", "fail": True}, data
        assert "work failed for o-bad" in data["error"]["message"], data
        assert data["error"]["name"], data

        # Exactly once: no second handler run appears, and its body ran once, for the failed run.
        await asyncio.sleep(0.5)
        assert [r.id for r in await client.list_runs(function_id=handler_id)] == [handled.id]
        assert [o["failed_run"] for o in harness.observations("on-failure")] == [bad.id]
