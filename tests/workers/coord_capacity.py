"""Worker of capacity 1: a run that sleeps between two steps, a quick run of three steps, and a busy
run whose one step takes 50 ms.

With one execution slot, the quick run can only go on while the other sleeps if a sleeping run
occupies no worker (issue 4). Every step logs when it ran.
"""

from __future__ import annotations

import asyncio
import time

import durably
from observe import client, record


def _step(run: str, name: str) -> float:
    now = time.time()
    record("step", run=run, name=name, at=now)
    return now


@client.function(id="long-nap", trigger=durably.on_event("coord/long-nap"), retries=0)
async def long_nap(ctx: durably.Context) -> dict[str, float]:
    """Step `a`, a sleep of event.data.seconds, step `b`."""
    run = ctx.run_id
    a = await ctx.step.run("a", _step, run, "a")
    await ctx.step.sleep("nap", float(ctx.event.data["seconds"]))
    b = await ctx.step.run("b", _step, run, "b")
    return {"a": a, "b": b}


@client.function(id="quick", trigger=durably.on_event("coord/quick"), retries=0)
async def quick(ctx: durably.Context) -> list[float]:
    """Three steps one after the other (three executions)."""
    run = ctx.run_id
    return [await ctx.step.run(name, _step, run, name) for name in ("q1", "q2", "q3")]


def _busy(run: str) -> float:
    time.sleep(0.05)
    return _step(run, "work")


@client.function(id="busy", trigger=durably.on_event("coord/busy"), retries=0)
async def busy(ctx: durably.Context) -> float:
    """One step that holds the only slot for 50 ms."""
    return await ctx.step.run("work", _busy, ctx.run_id)


if __name__ == "__main__":
    asyncio.run(durably.Worker(client, functions=[long_nap, quick, busy], capacity=1).run())
