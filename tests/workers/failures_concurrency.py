"""Worker: functions with concurrency limits; each run's one step sleeps and logs its start and end."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import durably
from observe import client, record, serve


async def _timed_step(ctx: durably.Context, seconds: float) -> dict[str, Any]:
    run = ctx.run_id
    user = ctx.event.data.get("user")

    async def work() -> dict[str, float]:
        start = time.time()
        record("work", run=run, fn=ctx.function_id, user=user, phase="start", at=start)
        await asyncio.sleep(seconds)
        end = time.time()
        record("work", run=run, fn=ctx.function_id, user=user, phase="end", at=end)
        return {"start": start, "end": end}

    return await ctx.step.run("work", work)


@client.function(id="one-at-a-time", trigger=durably.on_event("failures/one-at-a-time"), concurrency=1)
async def one_at_a_time(ctx: durably.Context) -> dict[str, Any]:
    """concurrency=1: at most one execution of this function at once."""
    return await _timed_step(ctx, 0.3)


@client.function(
    id="one-per-user",
    trigger=durably.on_event("failures/one-per-user"),
    concurrency=durably.Concurrency(limit=1, key="event.data.user"),
)
async def one_per_user(ctx: durably.Context) -> dict[str, Any]:
    """At most one execution at once per value of event.data.user."""
    return await _timed_step(ctx, 0.5)


if __name__ == "__main__":
    serve(one_at_a_time, one_per_user)
