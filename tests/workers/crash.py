"""Worker: an echo function, and functions whose steps block on control files (crash tests)."""

from __future__ import annotations

from typing import Any

import durably
from observe import client, record, serve, wait_for_file


@client.function(id="echo", trigger=durably.on_event("demo/echo"))
async def echo(ctx: durably.Context) -> dict[str, Any]:
    """One step that returns the event's data."""
    run = ctx.run_id

    def copy(data: dict[str, Any]) -> dict[str, Any]:
        record("step", run=run, name="echo")
        return data

    return {"echo": await ctx.step.run("echo", copy, ctx.event.data)}


@client.function(id="crash-between", trigger=durably.on_event("demo/crash-between"), retries=3)
async def crash_between(ctx: durably.Context) -> dict[str, Any]:
    """Step `two` blocks until control file `go-<run>` exists (the daemon is killed meanwhile)."""
    run = ctx.run_id
    record("handler", run=run)

    def one() -> dict[str, int]:
        record("step", run=run, name="one")
        return {"n": 1}

    async def two(previous: dict[str, int]) -> dict[str, int]:
        record("step", run=run, name="two", phase="started")
        await wait_for_file(f"go-{run}")
        record("step", run=run, name="two", phase="finished")
        return {"n": previous["n"] + 1}

    def three(previous: dict[str, int]) -> dict[str, int]:
        record("step", run=run, name="three")
        return {"n": previous["n"] + 1}

    r1 = await ctx.step.run("one", one)
    r2 = await ctx.step.run("two", two, r1)
    r3 = await ctx.step.run("three", three, r2)
    return {"one": r1, "two": r2, "three": r3}


@client.function(id="worker-crash", trigger=durably.on_event("demo/worker-crash"), retries=3)
async def worker_crash(ctx: durably.Context) -> dict[str, Any]:
    """Step `slow` blocks until control file `release-<run>` exists (its worker is killed meanwhile)."""
    run = ctx.run_id

    def prepare() -> str:
        record("step", run=run, name="prepare")
        return "prepared"

    async def slow() -> str:
        record("step", run=run, name="slow", phase="started")
        await wait_for_file(f"release-{run}")
        record("step", run=run, name="slow", phase="finished")
        return "slow-done"

    first = await ctx.step.run("prepare", prepare)
    second = await ctx.step.run("slow", slow)
    return {"prepare": first, "slow": second}


if __name__ == "__main__":
    serve(echo, crash_between, worker_crash)
