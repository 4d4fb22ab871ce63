"""The worker process of every workload: one ``durably.Worker`` serving all benchmark functions.

Trivial step bodies are ``async`` and return ``time.time()``: the step costs only what the engine
costs (no thread hop), and the saved values let the driver compute per-step latency afterwards from
the run's own timeline (the gap between consecutive step bodies of one run is one full engine cycle:
report, merge, commit, dispatch, replay).

Environment: ``DURABLY_ADDRESS`` (set by the harness), ``BENCH_CAPACITY`` (executions at once).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import durably

APP_ID = "bench"
BIG_STEP_BYTES = 3_900_000
"""W4: bytes of one step's saved JSON (a string of BIG_STEP_BYTES - 2 characters plus its quotes)."""
BIG_STEPS = 8

client = durably.Client(app_id=APP_ID)


async def now() -> float:
    return time.time()


async def part(i: int) -> int:
    return i


async def big(i: int) -> str:
    return chr(ord("a") + i) * (BIG_STEP_BYTES - 2)


async def three_steps_body(ctx: durably.Context) -> dict[str, float]:
    """W1: three sequential trivial steps."""
    a = await ctx.step.run("one", now)
    b = await ctx.step.run("two", now)
    c = await ctx.step.run("three", now)
    return {"took": c - a, "mid": b}


async def sequential_body(ctx: durably.Context) -> dict[str, int]:
    """W2: ``n`` sequential trivial steps (one id in a loop: ``step``, ``step:1``, ...)."""
    n = int(ctx.event.data["n"])
    for _ in range(n):
        await ctx.step.run("step", now)
    return {"steps": n}


async def gather_body(ctx: durably.Context) -> dict[str, int]:
    """W3: one ``asyncio.gather`` of ``n`` steps, then the sum of their results."""
    n = int(ctx.event.data["n"])
    values = await asyncio.gather(*(ctx.step.run("part", part, i) for i in range(n)))
    # The aggregate is plain handler code (not a step), so 1,000 parts stay within the 1,000-step limit.
    return {"parts": len(values), "sum": sum(values)}


async def big_state_body(ctx: durably.Context) -> dict[str, int]:
    """W4: 8 sequential steps of 3.9 MB each (31.2 MB of state, under the 32 MiB run limit)."""
    sizes = [len(await ctx.step.run("big", big, i)) for i in range(BIG_STEPS)]
    return {"chars": sum(sizes)}


def _declare(
    id: str, event: str, handler: Callable[[durably.Context], Awaitable[Any]], **options: Any
) -> durably.Function:
    return client.function(id=id, trigger=durably.on_event(event), retries=0, **options)(handler)


# Each body runs as the article's model runs it, and with the option its variant measures
# (W1c, W2c, W4c: checkpointing=True, one execution per run; W3-opt: optimize_parallelism=True).
three_steps = _declare("w1-three-steps", "bench/w1", three_steps_body)
three_steps_checkpointing = _declare("w1-checkpointing", "bench/w1c", three_steps_body, checkpointing=True)
sequential = _declare("w2-sequential", "bench/w2", sequential_body)
sequential_checkpointing = _declare("w2-checkpointing", "bench/w2c", sequential_body, checkpointing=True)
gather = _declare("w3-gather", "bench/w3", gather_body)
gather_optimized = _declare("w3-gather-optimized", "bench/w3-optimized", gather_body, optimize_parallelism=True)
big_state = _declare("w4-big-state", "bench/w4", big_state_body)
big_state_checkpointing = _declare("w4-checkpointing", "bench/w4c", big_state_body, checkpointing=True)


@client.function(id="w5-wait", trigger=durably.on_event("bench/w5-start"), retries=0)
async def waits(ctx: durably.Context) -> dict[str, float]:
    """W5: park in ``wait_for_event`` until the matching ``bench/w5-match`` arrives (``data.k`` matches)."""
    matched = await ctx.step.wait_for_event("match", event="bench/w5-match", match="data.k", timeout="1h")
    woke = await ctx.step.run("woke", now)
    sent = float(matched.data["sent"]) if matched is not None else woke
    return {"lag": woke - sent}


@client.function(id="w6-sleep", trigger=durably.on_event("bench/w6"), retries=0)
async def sleeps(ctx: durably.Context) -> dict[str, float]:
    """W6: sleep 1 s from the run's first execution, then a step that says when it ran (the driver
    takes the lag from that and the run's start)."""
    await ctx.step.sleep("nap", "1s")
    return {"woke": await ctx.step.run("woke", now)}


FUNCTIONS = [
    three_steps,
    three_steps_checkpointing,
    sequential,
    sequential_checkpointing,
    gather,
    gather_optimized,
    big_state,
    big_state_checkpointing,
    waits,
    sleeps,
]


async def main() -> None:
    capacity = int(os.environ.get("BENCH_CAPACITY", "64"))
    await durably.Worker(client, functions=FUNCTIONS, capacity=capacity).run()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
