"""Worker: failure semantics of steps and handlers (issue 5).

Step retries with ``ctx.attempt``, backoff timing, ``RetryAfterError``, ``NonRetriableError``,
a ``StepError`` caught or left uncaught, failures outside any step. Every step body logs the
attempt it saw and when it started, so tests can count and time attempts.
"""

from __future__ import annotations

from typing import Any

import durably
from observe import client, observations, record, serve


@client.function(id="fail-twice", trigger=durably.on_event("failures/fail-twice"), retries=3)
async def fail_twice(ctx: durably.Context) -> dict[str, Any]:
    """Step `flaky` raises on its first two runs, then succeeds; `prepare` comes before it."""
    run = ctx.run_id
    record("handler", run=run, attempt=ctx.attempt)

    def prepare() -> str:
        record("step", run=run, name="prepare", attempt=ctx.attempt)
        return "prepared"

    def flaky() -> dict[str, int]:
        # Counted from the log, not from ctx.attempt, so a wrong ctx.attempt cannot hide here.
        n = len(observations("step", run=run, name="flaky")) + 1
        record("step", run=run, name="flaky", attempt=ctx.attempt, n=n)
        if n <= 2:
            raise ConnectionError(f"transient failure #{n}")
        return {"succeeded_on": n}

    def finish() -> str:
        record("step", run=run, name="finish", attempt=ctx.attempt)
        return "finished"

    first = await ctx.step.run("prepare", prepare)
    second = await ctx.step.run("flaky", flaky)
    third = await ctx.step.run("finish", finish)
    return {"prepare": first, "flaky": second, "finish": third}


BACKOFF_FAILURES = 6


@client.function(id="backoff", trigger=durably.on_event("failures/backoff"), retries=BACKOFF_FAILURES)
async def backoff(ctx: durably.Context) -> int:
    """Step `flaky` fails BACKOFF_FAILURES times, then succeeds (retries allow exactly that)."""
    run = ctx.run_id

    def flaky() -> int:
        n = len(observations("step", run=run, name="flaky")) + 1
        record("step", run=run, name="flaky", attempt=ctx.attempt, n=n)
        if n <= BACKOFF_FAILURES:
            raise ConnectionError(f"still down (#{n})")
        return n

    return await ctx.step.run("flaky", flaky)


@client.function(id="retry-after", trigger=durably.on_event("failures/retry-after"), retries=3)
async def retry_after(ctx: durably.Context) -> int:
    """Step `limited` raises RetryAfterError(after=event.data.after seconds) once, then succeeds."""
    run = ctx.run_id
    after = float(ctx.event.data["after"])

    def limited() -> int:
        n = len(observations("step", run=run, name="limited")) + 1
        record("step", run=run, name="limited", attempt=ctx.attempt, n=n)
        if n == 1:
            raise durably.RetryAfterError("rate limited", after=after)
        return n

    return await ctx.step.run("limited", limited)


@client.function(id="non-retriable", trigger=durably.on_event("failures/non-retriable"), retries=3)
async def non_retriable(ctx: durably.Context) -> dict[str, Any]:
    """Step `charge` raises NonRetriableError: no retry, the run fails."""
    run = ctx.run_id

    def prepare() -> str:
        record("step", run=run, name="prepare")
        return "prepared"

    def charge() -> None:
        record("step", run=run, name="charge", attempt=ctx.attempt)
        raise durably.NonRetriableError("card declined for good")

    await ctx.step.run("prepare", prepare)
    await ctx.step.run("charge", charge)
    record("after-charge", run=run)
    return {"unreachable": True}


@client.function(id="caught", trigger=durably.on_event("failures/caught"), retries=1)
async def caught(ctx: durably.Context) -> dict[str, Any]:
    """Step `doomed` always fails (2 attempts); the handler catches the StepError and recovers."""
    run = ctx.run_id

    def doomed() -> None:
        record("step", run=run, name="doomed", attempt=ctx.attempt)
        raise ValueError("doomed to fail every time")

    def recover(error: dict[str, str]) -> dict[str, str]:
        record("step", run=run, name="recover")
        return {"recovered_from": error["error_name"]}

    try:
        await ctx.step.run("doomed", doomed)
    except durably.StepError as exc:
        error = {
            "step_id": exc.step_id,
            "error_name": exc.error_name,
            "error_message": exc.error_message,
            "has_stack": "ValueError" in exc.stack,
        }
        record("caught", run=run, attempt=ctx.attempt, **error)
    else:
        raise AssertionError("step.run('doomed') returned although its body always raises")
    recovered = await ctx.step.run("recover", recover, error)
    return {"caught": error, "recover": recovered}


@client.function(id="uncaught", trigger=durably.on_event("failures/uncaught"), retries=1)
async def uncaught(ctx: durably.Context) -> dict[str, Any]:
    """Step `explode-step` always fails; the handler does not catch the StepError."""
    run = ctx.run_id
    record("handler", run=run, attempt=ctx.attempt)

    def explode() -> None:
        record("step", run=run, name="explode-step", attempt=ctx.attempt)
        raise KeyError("no such thing")

    await ctx.step.run("explode-step", explode)
    record("after-explode", run=run)
    return {"unreachable": True}


@client.function(id="handler-flaky", trigger=durably.on_event("failures/handler-flaky"), retries=3)
async def handler_flaky(ctx: durably.Context) -> dict[str, Any]:
    """After step `before`, the handler raises outside any step on its first two tries."""
    run = ctx.run_id
    record("handler", run=run, attempt=ctx.attempt)

    def before() -> str:
        record("step", run=run, name="before")
        return "before-done"

    def after() -> str:
        record("step", run=run, name="after", attempt=ctx.attempt)
        return "after-done"

    first = await ctx.step.run("before", before)
    failures = len(observations("handler-error", run=run))
    if failures < 2:
        record("handler-error", run=run, attempt=ctx.attempt, n=failures + 1)
        raise RuntimeError(f"handler failure #{failures + 1}")
    second = await ctx.step.run("after", after)
    return {"before": first, "after": second, "failures": failures}


@client.function(id="handler-broken", trigger=durably.on_event("failures/handler-broken"), retries=1)
async def handler_broken(ctx: durably.Context) -> None:
    """The handler always raises outside any step: 2 attempts, then the run fails."""
    record("handler", run=ctx.run_id, attempt=ctx.attempt)
    raise RuntimeError("the handler is broken")


if __name__ == "__main__":
    serve(fail_twice, backoff, retry_after, non_retriable, caught, uncaught, handler_flaky, handler_broken)
