"""Worker: step.invoke (issue 4).

`invoke-parent` invokes a child chosen by event.data.mode and returns ``{"output": ...}``, or
``{"error": {...}}`` when the invoke step raised durably.StepError (it catches it). The children
have no trigger: they run only when invoked. The parent adds its run id to the child's data
(``parent``) and every child logs a ``child`` observation with it.
"""

from __future__ import annotations

from typing import Any

import durably
from observe import client, record, serve


@client.function(id="child-double", retries=0)
async def child_double(ctx: durably.Context) -> dict[str, Any]:
    record("child", run=ctx.run_id, fn=ctx.function_id, parent=ctx.event.data["parent"])
    x = ctx.event.data["x"]
    doubled = await ctx.step.run("double", lambda: x * 2)
    return {"doubled": doubled, "event_name": ctx.event.name, "data": ctx.event.data}


@client.function(id="child-fails", retries=0)
async def child_fails(ctx: durably.Context) -> None:
    record("child", run=ctx.run_id, fn=ctx.function_id, parent=ctx.event.data["parent"])

    def explode() -> None:
        raise ValueError(f"child broke: {ctx.event.data['why']}")

    await ctx.step.run("explode", explode)


@client.function(id="child-naps", retries=0)
async def child_naps(ctx: durably.Context) -> str:
    record("child", run=ctx.run_id, fn=ctx.function_id, parent=ctx.event.data["parent"])
    await ctx.step.sleep("long-nap", "60s")
    return "woke"


TARGETS: dict[str, tuple[durably.Function | str, dict[str, Any], str | None]] = {
    "ok": (child_double, {"x": 21}, None),
    "fail": (child_fails, {"why": "on purpose"}, None),
    "timeout": (child_naps, {}, "1s"),
    "other-app": ("other/shout", {"text": "hello"}, None),
    "missing": ("other/no-such-function", {}, None),
}


@client.function(id="invoke-parent", trigger=durably.on_event("coord/invoke"), retries=0)
async def invoke_parent(ctx: durably.Context) -> dict[str, Any]:
    run = ctx.run_id
    function, data, timeout = TARGETS[ctx.event.data["mode"]]
    record("invoke-call", run=run)
    try:
        output = await ctx.step.invoke("call", function=function, data={**data, "parent": run}, timeout=timeout)
    except durably.StepError as exc:
        record("invoke-raised", run=run)
        return {"error": {"step": exc.step_id, "name": exc.error_name, "message": exc.error_message}}
    record("invoke-returned", run=run)
    return {"output": output}


if __name__ == "__main__":
    serve(child_double, child_fails, child_naps, invoke_parent)
