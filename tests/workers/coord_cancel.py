"""Worker: cancellation (issue 4): runs that sleep, wait, or are busy in a step when cancelled.

Every step logs a ``step`` observation and every handler execution a ``handler`` one, so tests can
prove nothing ran after the cancellation.
"""

from __future__ import annotations

from typing import Any

import durably
from observe import client, record, serve, wait_for_file


def _step(run: str, name: str) -> str:
    record("step", run=run, name=name)
    return name


@client.function(
    id="cancel-sleeper",
    trigger=durably.on_event("coord/cancel-sleeper"),
    retries=0,
    cancel_on=[
        durably.on_event("coord/cancel", match="data.key"),
        durably.on_event("coord/abort", if_="async.data.level >= 3 && async.data.key == event.data.key"),
    ],
)
async def cancel_sleeper(ctx: durably.Context) -> list[str]:
    """Step `before`, a 30 s sleep, step `after`; cancelled by coord/cancel with the same data.key,
    or by coord/abort with the same data.key and a level of at least 3."""
    run = ctx.run_id
    record("handler", run=run)
    before = await ctx.step.run("before", _step, run, "before")
    await ctx.step.sleep("nap", "30s")
    after = await ctx.step.run("after", _step, run, "after")
    return [before, after]


@client.function(id="cancel-waiter", trigger=durably.on_event("coord/cancel-waiter"), retries=0)
async def cancel_waiter(ctx: durably.Context) -> dict[str, Any]:
    """Waits 30 s for coord/wake with its data.key, then step `after`."""
    run = ctx.run_id
    record("handler", run=run)
    got = await ctx.step.wait_for_event("wake", event="coord/wake", timeout="30s", match="data.key")
    await ctx.step.run("after", _step, run, "after")
    return {"got": None if got is None else got.data}


@client.function(id="cancel-busy", trigger=durably.on_event("coord/cancel-busy"), retries=0)
async def cancel_busy(ctx: durably.Context) -> list[str]:
    """Step `a` blocks until control file go-<run>; then step `b`."""
    run = ctx.run_id
    record("handler", run=run)

    async def a() -> str:
        record("step", run=run, name="a", phase="started")
        await wait_for_file(f"go-{run}")
        record("step", run=run, name="a", phase="finished")
        return "a"

    first = await ctx.step.run("a", a)
    second = await ctx.step.run("b", _step, run, "b")
    return [first, second]


@client.function(id="cancel-quick", trigger=durably.on_event("coord/cancel-quick"), retries=0)
async def cancel_quick(ctx: durably.Context) -> dict[str, str]:
    """One step, then done."""
    return {"step": await ctx.step.run("only", _step, ctx.run_id, "only")}


if __name__ == "__main__":
    serve(cancel_sleeper, cancel_waiter, cancel_busy, cancel_quick)
