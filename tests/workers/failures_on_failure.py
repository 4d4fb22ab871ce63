"""Worker: a function with an ``on_failure`` handler (registered as ``may-fail-failure``)."""

from __future__ import annotations

from typing import Any

import durably
from observe import client, record, serve


async def on_may_fail(ctx: durably.Context) -> dict[str, Any]:
    """The failure handler: logs once (in a step) and returns the event it got."""
    failed = ctx.event.data

    def note() -> str:
        record("on-failure", run=ctx.run_id, failed_run=failed.get("run_id"), fn=ctx.function_id)
        return "noted"

    noted = await ctx.step.run("note", note)
    return {"event_name": ctx.event.name, "data": failed, "noted": noted, "function_id": ctx.function_id}


@client.function(id="may-fail", trigger=durably.on_event("failures/may-fail"), retries=0, on_failure=on_may_fail)
async def may_fail(ctx: durably.Context) -> dict[str, Any]:
    """Step `work` raises when event.data.fail is true (retries=0: the run fails at once)."""
    run = ctx.run_id
    order = ctx.event.data["order"]

    def work() -> str:
        record("step", run=run, name="work", order=order)
        if ctx.event.data["fail"]:
            raise ValueError(f"work failed for {order}")
        return f"worked on {order}"

    return {"work": await ctx.step.run("work", work)}


if __name__ == "__main__":
    serve(may_fail)
