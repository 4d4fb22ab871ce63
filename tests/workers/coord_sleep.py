"""Worker: step.sleep and step.sleep_until (issue 4).

Each function logs a ``sleep-call`` observation right before it reaches its sleep (the first one of
a run is when the SDK computed the wake-up time) and a ``step`` observation with the time from the
step after it, so tests can time the sleep from outside. How long / until when comes from the event:

* ``{"duration": {"kind": "str" | "seconds" | "timedelta", "value": ...}}`` for ``step.sleep``;
* ``{"until": {"kind": "iso" | "datetime", "value": "<ISO 8601 with an offset>"}}`` for ``sleep_until``.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from typing import Any

import durably
from observe import client, record, serve, wait_for_file


def duration_of(spec: dict[str, Any]) -> str | float | timedelta:
    """The duration as the test asked for it: a string, a number of seconds or a timedelta."""
    kind, value = spec["kind"], spec["value"]
    if kind == "timedelta":
        return timedelta(seconds=value)
    if kind == "seconds":
        return float(value) if isinstance(value, float) else int(value)
    return str(value)


def instant_of(spec: dict[str, Any]) -> datetime | str:
    """The wake-up time as the test asked for it: the ISO string itself or a datetime parsed from it."""
    value = str(spec["value"])
    return datetime.fromisoformat(value) if spec["kind"] == "datetime" else value


async def _around(ctx: durably.Context, sleep: Any) -> dict[str, float]:
    """Step `before`, then `sleep()` (a coroutine factory), then step `after`; returns both times."""
    run = ctx.run_id
    record("handler", run=run, attempt=ctx.attempt)

    def before() -> float:
        record("step", run=run, name="before")
        return time.time()

    def after() -> float:
        now = time.time()
        record("step", run=run, name="after", at=now)
        return now

    started = await ctx.step.run("before", before)
    record("sleep-call", run=run)
    await sleep()
    ended = await ctx.step.run("after", after)
    return {"before": started, "after": ended}


@client.function(id="nap", trigger=durably.on_event("coord/nap"), retries=0)
async def nap(ctx: durably.Context) -> dict[str, float]:
    """step.sleep("nap", <event.data.duration>) between two steps."""
    duration = duration_of(ctx.event.data["duration"])
    return await _around(ctx, lambda: ctx.step.sleep("nap", duration))


@client.function(id="nap-until", trigger=durably.on_event("coord/nap-until"), retries=0)
async def nap_until(ctx: durably.Context) -> dict[str, float]:
    """step.sleep_until("nap", <event.data.until>) between two steps."""
    when = instant_of(ctx.event.data["until"])
    return await _around(ctx, lambda: ctx.step.sleep_until("nap", when))


@client.function(id="bad-sleep", trigger=durably.on_event("coord/bad-sleep"), retries=0)
async def bad_sleep(ctx: durably.Context) -> dict[str, float]:
    """A sleep the test makes wrong (too long, negative, malformed, naive): the call must raise."""
    data = ctx.event.data
    if "until" in data:
        when = instant_of(data["until"])
        return await _around(ctx, lambda: ctx.step.sleep_until("bad", when))
    duration = duration_of(data["duration"])
    return await _around(ctx, lambda: ctx.step.sleep("bad", duration))


@client.function(id="nap-hold", trigger=durably.on_event("coord/nap-hold"), retries=0)
async def nap_hold(ctx: durably.Context) -> dict[str, float]:
    """Step `before`, a sleep of <event.data.seconds>, then step `held`, which blocks until control
    file `wake-<run>` exists (the daemon is killed while it runs)."""
    run = ctx.run_id

    def before() -> float:
        record("step", run=run, name="before")
        return time.time()

    async def held() -> float:
        record("step", run=run, name="held", phase="started")
        await wait_for_file(f"wake-{run}")
        record("step", run=run, name="held", phase="finished")
        return time.time()

    started = await ctx.step.run("before", before)
    await ctx.step.sleep("nap", float(ctx.event.data["seconds"]))
    return {"before": started, "held": await ctx.step.run("held", held)}


@client.function(id="nap-beside", trigger=durably.on_event("coord/nap-beside"), retries=0)
async def nap_beside(ctx: durably.Context) -> dict[str, float]:
    """A sleep of 0.5 s, then step `after`, beside step `slow` of 3 s: the run is not asleep on the sleep
    alone when it ends."""
    run = ctx.run_id

    async def slow() -> float:
        await asyncio.sleep(3.0)
        return time.time()

    def after() -> float:
        now = time.time()
        record("step", run=run, name="after", at=now)
        return now

    async def nap_then_after() -> float:
        record("sleep-call", run=run)
        await ctx.step.sleep("nap", 0.5)
        return await ctx.step.run("after", after)

    slow_done, woke = await asyncio.gather(ctx.step.run("slow", slow), nap_then_after())
    return {"slow": slow_done, "after": woke}


if __name__ == "__main__":
    serve(nap, nap_until, bad_sleep, nap_hold, nap_beside)
