"""Worker: functions with ``checkpointing=True`` (one execution runs many sequential steps)."""

from __future__ import annotations

import asyncio
from typing import Any

import durably
from observe import client, observations, record, serve, wait_for_file

BIG = 3_900_000
"""Characters in one big step result: nine of them are over the 32 MiB state limit."""


@client.function(id="cp-steps", trigger=durably.on_event("cp/steps"), checkpointing=True)
async def cp_steps(ctx: durably.Context) -> list[int]:
    """``data.n`` sequential steps, each adding one to the previous result."""
    run = ctx.run_id
    record("handler", run=run)

    def add(name: str, previous: int) -> int:
        record("step", run=run, name=name)
        return previous + 1

    total = 0
    seen = []
    for i in range(ctx.event.data["n"]):
        total = await ctx.step.run(f"s{i}", add, f"s{i}", total)
        seen.append(total)
    return seen


@client.function(id="cp-block", trigger=durably.on_event("cp/block"), retries=3, checkpointing=True)
async def cp_block(ctx: durably.Context) -> dict[str, Any]:
    """Step ``two`` blocks until control file ``go-<run>`` exists (a process is killed, or the run is
    cancelled, meanwhile)."""
    run = ctx.run_id
    record("handler", run=run)

    def one() -> int:
        record("step", run=run, name="one")
        return 1

    async def two(previous: int) -> int:
        record("step", run=run, name="two", phase="started")
        await wait_for_file(f"go-{run}")
        record("step", run=run, name="two", phase="finished")
        return previous + 1

    def three(previous: int) -> int:
        record("step", run=run, name="three")
        return previous + 1

    r1 = await ctx.step.run("one", one)
    r2 = await ctx.step.run("two", two, r1)
    r3 = await ctx.step.run("three", three, r2)
    return {"one": r1, "two": r2, "three": r3}


@client.function(id="cp-slow", trigger=durably.on_event("cp/slow"), checkpointing=True)
async def cp_slow(ctx: durably.Context) -> int:
    """``data.n`` sequential steps of ``data.ms`` milliseconds each (a long stretch of checkpoints)."""
    run = ctx.run_id

    async def slow(name: str) -> str:
        record("step", run=run, name=name, phase="started")
        await asyncio.sleep(ctx.event.data["ms"] / 1000)
        return name

    for i in range(ctx.event.data["n"]):
        await ctx.step.run(f"s{i}", slow, f"s{i}")
    return int(ctx.event.data["n"])


@client.function(id="cp-mixed", trigger=durably.on_event("cp/mixed"), retries=2, checkpointing=True)
async def cp_mixed(ctx: durably.Context) -> dict[str, Any]:
    """Everything but plain steps ends a checkpointed stretch: a gather, a failing step (retried), a
    sleep; the steps around them are checkpointed."""
    run = ctx.run_id
    record("handler", run=run)

    def body(name: str) -> str:
        record("step", run=run, name=name)
        return name

    def flaky() -> str:
        record("step", run=run, name="flaky")
        if len(observations("step", run=run, name="flaky")) == 1:
            raise RuntimeError("first attempt fails")
        return "flaky"

    a = await ctx.step.run("a", body, "a")
    b, c = await asyncio.gather(ctx.step.run("b", body, "b"), ctx.step.run("c", body, "c"))
    d = await ctx.step.run("d", body, "d")
    e = await ctx.step.run("flaky", flaky)
    await ctx.step.sleep("nap", 0.2)
    f = await ctx.step.run("f", body, "f")
    g = await ctx.step.run("g", body, "g")
    return {"steps": [a, b, c, d, e, f, g]}


@client.function(id="cp-big", trigger=durably.on_event("cp/big"), retries=0, checkpointing=True)
async def cp_big(ctx: durably.Context) -> int:
    """Nine steps of 3.9 MB: the ninth takes the run over 32 MiB; its checkpoint is refused and the
    run fails with StateTooLarge."""
    run = ctx.run_id

    def big(i: int) -> str:
        record("step", run=run, name=f"big{i}")
        return str(i % 10) * BIG

    total = 0
    for i in range(9):
        total += len(await ctx.step.run(f"big{i}", big, i))
    return total


if __name__ == "__main__":
    serve(cp_steps, cp_block, cp_slow, cp_mixed, cp_big)
