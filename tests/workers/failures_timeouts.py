"""Worker: functions with start and finish timeouts."""

from __future__ import annotations

import asyncio
from typing import Any

import durably
from observe import client, record, serve


@client.function(
    id="start-timeout", trigger=durably.on_event("failures/start-timeout"), timeouts=durably.Timeouts(start="1s")
)
async def start_timeout(ctx: durably.Context) -> dict[str, Any]:
    """Must start within 1 s of its event; once started it may take longer (its step sleeps 1.2 s)."""
    run = ctx.run_id

    async def slow() -> str:
        record("step", run=run, name="slow", phase="start")
        await asyncio.sleep(1.2)
        record("step", run=run, name="slow", phase="end")
        return "slept"

    return {"slow": await ctx.step.run("slow", slow)}


@client.function(
    id="finish-timeout",
    trigger=durably.on_event("failures/finish-timeout"),
    timeouts=durably.Timeouts(finish="1s"),
)
async def finish_timeout(ctx: durably.Context) -> dict[str, Any]:
    """Must finish within 1 s of starting; its two steps sleep event.data.seconds each."""
    run = ctx.run_id
    seconds = float(ctx.event.data["seconds"])

    async def nap(name: str) -> str:
        record("step", run=run, name=name, phase="start")
        await asyncio.sleep(seconds)
        record("step", run=run, name=name, phase="end")
        return f"{name} slept"

    first = await ctx.step.run("first", nap, "first")
    second = await ctx.step.run("second", nap, "second")
    return {"first": first, "second": second}


if __name__ == "__main__":
    serve(start_timeout, finish_timeout)
