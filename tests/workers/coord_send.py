"""Worker: step.send_event (issue 4).

`fan-out` sends four coord/fanned events in one step (the last with an id of its own), then fails
once outside any step so that its handler is retried after the send; `fanned` is triggered by
each sent event and logs it.
"""

from __future__ import annotations

from typing import Any

import durably
from observe import client, observations, record, serve


@client.function(id="fan-out", trigger=durably.on_event("coord/fan-out"), retries=3)
async def fan_out(ctx: durably.Context) -> dict[str, Any]:
    run = ctx.run_id
    tag = ctx.event.data["tag"]
    record("handler", run=run, attempt=ctx.attempt)
    events = [durably.Event(name="coord/fanned", data={"tag": tag, "n": n}) for n in range(3)]
    events.append(durably.Event(name="coord/fanned", data={"tag": tag, "n": 3}, id=f"fixed-{tag}"))
    ids = await ctx.step.send_event("send", events)
    record("sent", run=run, ids=ids, attempt=ctx.attempt)
    if not observations("handler-error", run=run):
        record("handler-error", run=run, attempt=ctx.attempt)
        raise RuntimeError("failing once after send_event")
    return {"ids": ids}


@client.function(id="fanned", trigger=durably.on_event("coord/fanned"), retries=0)
async def fanned(ctx: durably.Context) -> dict[str, Any]:
    record("fanned", run=ctx.run_id, event_id=ctx.event.id, **ctx.event.data)
    return {"event_id": ctx.event.id, "data": ctx.event.data}


if __name__ == "__main__":
    serve(fan_out, fanned)
