"""Worker: runs left unfinished in every way, for the recovery test (tests/e2e/test_recovery.py): waiting
for an event, sleeping until an instant, and in the middle of their steps."""

from __future__ import annotations

import asyncio
from typing import Any

import durably
from observe import client, record, serve


async def _step(run: str, name: str) -> str:
    record("body", run=run, name=name)
    await asyncio.sleep(0.01)  # long enough for a kill to find bodies in flight
    return name


@client.function(id="recover-wait", trigger=durably.on_event("recover/wait"), retries=5)
async def waiter(ctx: durably.Context) -> dict[str, Any]:
    go = await ctx.step.wait_for_event("go", event="recover/go", match="data.n", timeout="10m")
    after = await ctx.step.run("after", lambda: _step(ctx.run_id, "after"))
    return {"n": ctx.event.data["n"], "go": go and go.data, "after": after}


@client.function(id="recover-sleep", trigger=durably.on_event("recover/sleep"), retries=5)
async def sleeper(ctx: durably.Context) -> dict[str, Any]:
    await ctx.step.sleep_until("nap", ctx.event.data["until"])
    after = await ctx.step.run("after", lambda: _step(ctx.run_id, "after"))
    return {"n": ctx.event.data["n"], "after": after}


@client.function(id="recover-steps", trigger=durably.on_event("recover/steps"), retries=5)
async def stepper(ctx: durably.Context) -> dict[str, Any]:
    names = [await ctx.step.run(f"s{i}", lambda i=i: _step(ctx.run_id, f"s{i}")) for i in range(4)]
    return {"n": ctx.event.data["n"], "steps": names}


if __name__ == "__main__":
    serve(waiter, sleeper, stepper)
