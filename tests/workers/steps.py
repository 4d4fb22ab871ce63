"""Worker: sequential steps (the article's Part 1), a step id repeated in a loop, JSON rules."""

from __future__ import annotations

from typing import Any

import durably
from observe import client, record, serve


@client.function(id="three-steps", trigger=durably.on_event("demo/run"), retries=3)
async def three_steps(ctx: durably.Context) -> dict[str, Any]:
    """Three sequential steps; each result feeds the next; the handler logs every execution."""
    run = ctx.run_id
    event = {"id": ctx.event.id, "name": ctx.event.name, "data": ctx.event.data}
    record("handler", run=run, fn=ctx.function_id, attempt=ctx.attempt, event=event)

    def step_one() -> dict[str, str]:  # a sync step body
        record("step", run=run, name="step-one")
        return {"value": "A"}

    async def step_two(previous: dict[str, str]) -> dict[str, str]:
        record("step", run=run, name="step-two", got=previous)
        return {"value": "B"}

    async def step_three(previous: dict[str, str], *, mark: str) -> dict[str, str]:
        record("step", run=run, name="step-three", got=previous, mark=mark)
        return {"value": "C"}

    result1 = await ctx.step.run("step-one", step_one)
    result2 = await ctx.step.run("step-two", step_two, result1)
    result3 = await ctx.step.run("step-three", step_three, result2, mark="kwarg")
    return {"result1": result1, "result2": result2, "result3": result3}


def send_one(run: str, i: int) -> dict[str, int]:
    record("step", run=run, name="send", i=i)
    return {"i": i}


@client.function(id="loop-steps", trigger=durably.on_event("demo/loop"))
async def loop_steps(ctx: durably.Context) -> dict[str, Any]:
    """The same step id three times in a loop: each occurrence is its own step."""
    record("handler", run=ctx.run_id, fn=ctx.function_id)
    sent = [await ctx.step.run("send", send_one, ctx.run_id, i) for i in range(3)]
    return {"sent": sent}


@client.function(id="tuple-step", trigger=durably.on_event("demo/tuple"))
async def tuple_step(ctx: durably.Context) -> dict[str, Any]:
    """A step returns a tuple; the next step gets what was saved (JSON: a list)."""
    run = ctx.run_id

    def make_tuple() -> tuple[int, str, list[int]]:
        record("step", run=run, name="make-tuple")
        return (1, "two", [3])

    def inspect(value: Any) -> dict[str, Any]:
        record("step", run=run, name="inspect", type=type(value).__name__, value=list(value))
        return {"type": type(value).__name__}

    made = await ctx.step.run("make-tuple", make_tuple)
    seen = await ctx.step.run("inspect", inspect, made)
    return {"made": made, "seen": seen}


class Opaque:
    """An arbitrary object: not representable in JSON."""


UNREPRESENTABLE: dict[str, Any] = {
    "set": lambda: {1, 2, 3},
    "object": lambda: {"payment": Opaque()},
    "nan": lambda: {"ratio": float("nan")},
    "infinity": lambda: [1.0, float("inf")],
    "bytes": lambda: b"raw bytes",
}


@client.function(id="bad-output", trigger=durably.on_event("demo/bad-output"), retries=3)
async def bad_output(ctx: durably.Context) -> dict[str, Any]:
    """Step `produce-<kind>` returns a value JSON cannot represent."""
    run = ctx.run_id
    kind = ctx.event.data["kind"]
    name = f"produce-{kind}"

    def produce() -> Any:
        record("step", run=run, name=name)
        return UNREPRESENTABLE[kind]()

    value = await ctx.step.run(name, produce)
    record("after-bad-step", run=run, value=repr(value))
    return {"value": value}


if __name__ == "__main__":
    serve(three_steps, loop_steps, tuple_step, bad_output)
