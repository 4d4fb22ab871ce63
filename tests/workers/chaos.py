"""Worker: functions with every kind of step, for the fault tests (tests/e2e/mixed_runs.py).

Each step body returns a fresh random token, so a step whose body ran again after a crash would show
as a different result: a run's output (made of the results its handler got) must equal the step
results the daemon recorded.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import durably
from observe import client, record, serve


def _body(run: str, name: str) -> Callable[[], Awaitable[str]]:
    async def token() -> str:
        record("body", run=run, name=name)
        await asyncio.sleep(0.02)  # long enough for kills to find bodies in flight
        return uuid.uuid4().hex

    return token


@client.function(id="chaos-child", retries=5)
async def chaos_child(ctx: durably.Context) -> dict[str, Any]:
    """Invoked by chaos-mix: one step."""
    return {"n": ctx.event.data["n"], "token": await ctx.step.run("child-step", _body(ctx.run_id, "child-step"))}


@client.function(id="chaos-echo", trigger=durably.on_event("chaos/echo"), retries=5)
async def chaos_echo(ctx: durably.Context) -> dict[str, Any]:
    """Started by the event chaos-mix sends: one step."""
    return {"n": ctx.event.data["n"], "token": await ctx.step.run("echo-step", _body(ctx.run_id, "echo-step"))}


async def mix(ctx: durably.Context) -> dict[str, Any]:
    """A step, a gather of three, a short sleep, a wait for its `chaos/go` event, an invoke, an event sent,
    a last step."""
    run, n = ctx.run_id, ctx.event.data["n"]
    first = await ctx.step.run("first", _body(run, "first"))
    parts = await asyncio.gather(*(ctx.step.run(f"part-{i}", _body(run, f"part-{i}")) for i in range(3)))
    await ctx.step.sleep("nap", "100ms")
    go = await ctx.step.wait_for_event("go", event="chaos/go", timeout="1h", match="data.n")
    child = await ctx.step.invoke("child", function=chaos_child, data={"n": n})
    sent = await ctx.step.send_event("echo", durably.Event("chaos/echo", {"n": n}))
    last = await ctx.step.run("last", _body(run, "last"))
    tokens = {"first": first, **{f"part-{i}": part for i, part in enumerate(parts)}, "last": last}
    return {"n": n, "tokens": tokens, "go": go and go.data, "child": child, "sent": sent}


chaos_mix = client.function(id="chaos-mix", trigger=durably.on_event("chaos/mix"), retries=5)(mix)
chaos_mix_checkpointed = client.function(
    id="chaos-mix-c", trigger=durably.on_event("chaos/mix-c"), retries=5, checkpointing=True
)(mix)


if __name__ == "__main__":
    serve(chaos_mix, chaos_mix_checkpointed, chaos_child, chaos_echo)
