"""Worker: the article's limits (4 MiB per step output, 32 MiB of run state, 1,000 steps per run),
a plain function to show the daemon still serves others after a breach, and a bystander run that is
in flight while another run breaches a limit.

Step bodies log ``step`` observations; sizes are JSON sizes (a string of n characters encodes to n + 2
bytes: the quotes count).
"""

from __future__ import annotations

import asyncio
from typing import Any

import durably
from observe import client, record, serve, wait_for_file


def blob(run: str, name: str, size: int) -> str:
    """A string whose compact JSON encoding is exactly ``size`` bytes."""
    record("step", run=run, name=name, size=size)
    return "x" * (size - 2)


@client.function(id="limit-output", trigger=durably.on_event("limits/output"), retries=0)
async def limit_output(ctx: durably.Context) -> dict[str, Any]:
    """Step ``big`` returns ``data["size"]`` bytes of JSON."""
    run = ctx.run_id
    record("handler", run=run, fn=ctx.function_id)
    value = await ctx.step.run("big", blob, run, "big", int(ctx.event.data["size"]))
    record("after-big", run=run)
    return {"length": len(value)}


@client.function(id="limit-state", trigger=durably.on_event("limits/state"), retries=0)
async def limit_state(ctx: durably.Context) -> dict[str, Any]:
    """Sequential steps ``chunk-<i>``, step i returning ``data["sizes"][i]`` bytes of JSON."""
    run = ctx.run_id
    record("handler", run=run, fn=ctx.function_id)
    sizes = [int(size) for size in ctx.event.data["sizes"]]
    lengths = []
    for i, size in enumerate(sizes):
        value = await ctx.step.run(f"chunk-{i}", blob, run, f"chunk-{i}", size)
        lengths.append(len(value))
    record("after-chunks", run=run)
    return {"count": len(lengths)}


@client.function(id="limit-state-gather", trigger=durably.on_event("limits/state-gather"), retries=0)
async def limit_state_gather(ctx: durably.Context) -> dict[str, Any]:
    """One gather of steps ``chunk-<i>``, step i returning ``data["sizes"][i]`` bytes of JSON."""
    run = ctx.run_id
    record("handler", run=run, fn=ctx.function_id)
    sizes = [int(size) for size in ctx.event.data["sizes"]]
    values = await asyncio.gather(
        *(ctx.step.run(f"chunk-{i}", blob, run, f"chunk-{i}", size) for i, size in enumerate(sizes))
    )
    return {"count": len(values)}


def tick(run: str, name: str) -> int:
    record("step", run=run, name=name)
    return 1


@client.function(id="limit-steps", trigger=durably.on_event("limits/steps"), retries=0)
async def limit_steps(ctx: durably.Context) -> dict[str, Any]:
    """``groups`` gathers of 100 trivial steps, then ``extra`` sequential steps ``one-more``."""
    run = ctx.run_id
    record("handler", run=run, fn=ctx.function_id)
    total = 0
    for g in range(int(ctx.event.data["groups"])):
        names = [f"g{g}-{i}" for i in range(100)]
        total += sum(await asyncio.gather(*(ctx.step.run(name, tick, run, name) for name in names)))
    for _ in range(int(ctx.event.data.get("extra", 0))):
        total += await ctx.step.run("one-more", tick, run, "one-more")
    record("after-steps", run=run, total=total)
    return {"steps": total}


@client.function(id="limit-echo", trigger=durably.on_event("limits/echo"))
async def limit_echo(ctx: durably.Context) -> dict[str, Any]:
    """One step that returns the event's data: a normal run."""
    run = ctx.run_id

    def copy(data: dict[str, Any]) -> dict[str, Any]:
        record("step", run=run, name="echo")
        return data

    return {"echo": await ctx.step.run("echo", copy, ctx.event.data)}


@client.function(id="limit-bystander", trigger=durably.on_event("limits/bystander"))
async def limit_bystander(ctx: durably.Context) -> dict[str, Any]:
    """Step ``hold`` blocks until control file ``hold-<run>`` exists; steps around it are plain."""
    run = ctx.run_id

    def before() -> str:
        record("step", run=run, name="before")
        return "before-done"

    async def hold() -> str:
        record("step", run=run, name="hold", phase="started")
        await wait_for_file(f"hold-{run}")
        return "hold-done"

    def after() -> str:
        record("step", run=run, name="after")
        return "after-done"

    return {
        "before": await ctx.step.run("before", before),
        "hold": await ctx.step.run("hold", hold),
        "after": await ctx.step.run("after", after),
    }


if __name__ == "__main__":
    serve(limit_output, limit_state, limit_state_gather, limit_steps, limit_echo, limit_bystander)
