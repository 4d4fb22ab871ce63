"""An execution leaves nothing for the cycle collector: everything it made is freed by reference counting
as it ends. A busy worker runs thousands of executions a second; each cycle left behind lives until a
collection of the generation it has aged into, and full collections of a worker holding many runs paused
it 10-30 ms at a time (bench/README.md, "What limits", W6)."""

from __future__ import annotations

import asyncio
import gc
from collections import Counter
from typing import Any

import durably
import pytest
from sdk_helpers import client, execute, memo_ok


async def _now() -> int:
    return 1


async def _boom() -> None:
    raise ValueError("boom")


@client.function(id="cycles-next-step", trigger=durably.on_event("cycles/e"))
async def next_step(ctx: durably.Context) -> int:
    await ctx.step.run("one", _now)
    await ctx.step.run("two", _now)  # met after "one" ran inline: the execution is interrupted
    return 2


@client.function(id="cycles-sleep", trigger=durably.on_event("cycles/e"))
async def sleep(ctx: durably.Context) -> int:
    await ctx.step.sleep("nap", "1s")
    return 1


@client.function(id="cycles-gather", trigger=durably.on_event("cycles/e"))
async def gather(ctx: durably.Context) -> list[int]:
    return await asyncio.gather(*(ctx.step.run(f"s{i}", _now) for i in range(3)))


@client.function(id="cycles-race", trigger=durably.on_event("cycles/e"))
async def race(ctx: durably.Context) -> int:
    racers = [asyncio.ensure_future(ctx.step.run(f"r{i}", _now)) for i in range(3)]
    await asyncio.wait(racers, return_when=asyncio.FIRST_COMPLETED)  # the losers are never awaited
    return 1


@client.function(id="cycles-step-fails", trigger=durably.on_event("cycles/e"), retries=0)
async def step_fails(ctx: durably.Context) -> None:
    await ctx.step.run("bad", _boom)


@client.function(id="cycles-handler-fails", trigger=durably.on_event("cycles/e"), retries=0)
async def handler_fails(ctx: durably.Context) -> None:
    raise ValueError("the handler fails")


@pytest.mark.parametrize(
    ("function", "memos"),
    [
        (next_step, []),
        (next_step, [memo_ok("one", 1)]),
        (sleep, []),
        (gather, []),
        (race, []),
        (step_fails, []),
        (handler_fails, []),
    ],
    ids=["new-step-after-inline", "new-step-after-replay", "sleep", "gather", "race", "step-fails", "handler-fails"],
)
async def test_an_execution_leaves_no_reference_cycle(function: durably.Function, memos: list[Any]) -> None:
    await execute(function, memos)  # warm: what the first execution caches is not garbage
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(3):
            await execute(function, memos)
        for _ in range(3):  # the done callbacks of interrupted tasks
            await asyncio.sleep(0)
        gc.collect()
        left = Counter(type(thing).__name__ for thing in gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert not left, f"{sum(left.values())} objects in reference cycles: {left.most_common(8)}"
