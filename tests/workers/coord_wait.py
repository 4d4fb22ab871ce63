"""Worker: step.wait_for_event (issue 4).

Every function returns ``{"got": <the event it received, or None>}`` and logs ``reached-wait``
right before its wait and a ``step``/``after`` observation once the wait is over.
"""

from __future__ import annotations

from typing import Any

import durably
from observe import client, record, serve, wait_for_file

IF_EXPRESSION = (
    '(async.data.n > event.data.min && async.data.n < 10 && async.data.status != "ignored") || async.data.tag == "vip"'
)


def shown(event: durably.Event | None) -> dict[str, Any] | None:
    return None if event is None else {"id": event.id, "name": event.name, "data": event.data}


async def _finish(ctx: durably.Context, got: durably.Event | None) -> dict[str, Any]:
    run = ctx.run_id

    def after() -> None:
        record("step", run=run, name="after")

    await ctx.step.run("after", after)
    return {"got": shown(got)}


@client.function(id="await-reply", trigger=durably.on_event("coord/await"), retries=0)
async def await_reply(ctx: durably.Context) -> dict[str, Any]:
    """Waits for coord/reply with the same data.key as its trigger (timeout: event.data.timeout)."""
    record("reached-wait", run=ctx.run_id)
    got = await ctx.step.wait_for_event(
        "reply", event="coord/reply", timeout=ctx.event.data.get("timeout", "20s"), match="data.key"
    )
    return await _finish(ctx, got)


@client.function(id="await-if", trigger=durably.on_event("coord/await-if"), retries=0)
async def await_if(ctx: durably.Context) -> dict[str, Any]:
    """Waits for a coord/measure event satisfying IF_EXPRESSION (event = its trigger)."""
    record("reached-wait", run=ctx.run_id)
    got = await ctx.step.wait_for_event("measure", event="coord/measure", timeout="20s", if_=IF_EXPRESSION)
    return await _finish(ctx, got)


@client.function(id="await-late", trigger=durably.on_event("coord/await-late"), retries=0)
async def await_late(ctx: durably.Context) -> dict[str, Any]:
    """Step `prepare` blocks until control file go-<run>; only then the run waits for coord/late-reply."""
    run = ctx.run_id

    async def prepare() -> None:
        record("step", run=run, name="prepare", phase="started")
        await wait_for_file(f"go-{run}")
        record("step", run=run, name="prepare", phase="finished")

    await ctx.step.run("prepare", prepare)
    record("reached-wait", run=run)
    got = await ctx.step.wait_for_event(
        "reply", event="coord/late-reply", timeout=ctx.event.data["timeout"], match="data.key"
    )
    return await _finish(ctx, got)


@client.function(id="park", trigger=durably.on_event("coord/park"), retries=0)
async def park(ctx: durably.Context) -> dict[str, Any]:
    """Waits (up to 10 minutes) for coord/unpark with its data.key; no other step."""
    got = await ctx.step.wait_for_event("parked", event="coord/unpark", timeout="10m", match="data.key")
    return {"got": shown(got)}


if __name__ == "__main__":
    serve(await_reply, await_if, await_late, park)
