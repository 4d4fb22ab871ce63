"""Worker: step retries, exhausted retries, NonRetriableError, a function-level error."""

from __future__ import annotations

from typing import Any

import durably
from observe import client, observations, record, serve


def prepare(run: str) -> dict[str, bool]:
    record("step", run=run, name="prepare")
    return {"ready": True}


@client.function(id="flaky-step", trigger=durably.on_event("demo/flaky-step"), retries=3)
async def flaky_step(ctx: durably.Context) -> dict[str, Any]:
    """Step `flaky` raises on its first two attempts, then succeeds."""
    run = ctx.run_id

    def flaky() -> dict[str, int]:
        attempt = len(observations("step", run=run, name="flaky")) + 1
        record("step", run=run, name="flaky", attempt=attempt)
        if attempt <= 2:
            raise ConnectionError(f"transient failure #{attempt}")
        return {"succeeded_on": attempt}

    def finish(previous: dict[str, int]) -> dict[str, Any]:
        record("step", run=run, name="finish")
        return {"after": previous}

    ready = await ctx.step.run("prepare", prepare, run)
    result = await ctx.step.run("flaky", flaky)
    done = await ctx.step.run("finish", finish, result)
    return {"ready": ready, "flaky": result, "finish": done}


@client.function(id="always-fails", trigger=durably.on_event("demo/always-fails"), retries=1)
async def always_fails(ctx: durably.Context) -> dict[str, Any]:
    """Step `doomed` always raises; retries=1 gives it two attempts."""
    run = ctx.run_id

    def doomed() -> None:
        record("step", run=run, name="doomed")
        raise ValueError("doomed to fail every time")

    await ctx.step.run("prepare", prepare, run)
    await ctx.step.run("doomed", doomed)
    record("after-doomed", run=run)
    return {"unreachable": True}


@client.function(id="gives-up", trigger=durably.on_event("demo/gives-up"), retries=3)
async def gives_up(ctx: durably.Context) -> dict[str, Any]:
    """Step `charge` raises NonRetriableError: no retry."""
    run = ctx.run_id

    def charge() -> None:
        record("step", run=run, name="charge")
        raise durably.NonRetriableError("card declined for good")

    await ctx.step.run("prepare", prepare, run)
    await ctx.step.run("charge", charge)
    record("after-charge", run=run)
    return {"unreachable": True}


@client.function(id="flaky-handler", trigger=durably.on_event("demo/flaky-handler"), retries=3)
async def flaky_handler(ctx: durably.Context) -> dict[str, Any]:
    """The handler raises outside any step on its first two tries after step `before`."""
    run = ctx.run_id
    record("handler", run=run, attempt=ctx.attempt)

    def before() -> str:
        record("step", run=run, name="before")
        return "before-done"

    def after() -> str:
        record("step", run=run, name="after")
        return "after-done"

    first = await ctx.step.run("before", before)
    failures = len(observations("handler-error", run=run))
    if failures < 2:
        record("handler-error", run=run, n=failures + 1)
        raise RuntimeError(f"handler failure #{failures + 1}")
    second = await ctx.step.run("after", after)
    return {"before": first, "after": second, "failures": failures}


if __name__ == "__main__":
    serve(flaky_step, always_fails, gives_up, flaky_handler)
