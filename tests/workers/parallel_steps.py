"""Worker: parallel steps with ``asyncio.gather`` (the article's Part 4) and ``optimize_parallelism``.

Every handler execution logs a ``handler`` observation; every step body logs a ``step`` observation
(with wall-clock start/end for the timed ones), so tests can count executions and prove overlap.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import durably
from observe import client, observations, record, serve, wait_for_file

SLOW_SECONDS = 0.5


def fetch_user(run: str) -> dict[str, str]:
    record("step", run=run, name="fetch-user")
    return {"user": "ada"}


async def slow_async(run: str, name: str, user: dict[str, str]) -> dict[str, str]:
    started = time.time()
    await asyncio.sleep(SLOW_SECONDS)
    record("step", run=run, name=name, started=started, ended=time.time(), mode="async")
    return {"done": name, "for": user["user"]}


def slow_sync(run: str, name: str, user: dict[str, str]) -> dict[str, str]:
    started = time.time()
    time.sleep(SLOW_SECONDS)
    record("step", run=run, name=name, started=started, ended=time.time(), mode="sync")
    return {"done": name, "for": user["user"]}


@client.function(id="par-three", trigger=durably.on_event("par/three"))
async def par_three(ctx: durably.Context) -> dict[str, Any]:
    """A sequential step, three 0.5 s steps in one gather, then a step that sees every result.

    ``ctx.event.data["mode"]`` picks async bodies (``asyncio.sleep``) or sync ones (``time.sleep``)."""
    run = ctx.run_id
    record("handler", run=run, fn=ctx.function_id)
    body = slow_sync if ctx.event.data.get("mode") == "sync" else slow_async
    user = await ctx.step.run("fetch-user", fetch_user, run)
    email, crm, access = await asyncio.gather(
        ctx.step.run("send-confirmation-email", body, run, "send-confirmation-email", user),
        ctx.step.run("update-crm-record", body, run, "update-crm-record", user),
        ctx.step.run("grant-premium-access", body, run, "grant-premium-access", user),
    )

    def log_completion(results: list[dict[str, str]]) -> dict[str, Any]:
        record("step", run=run, name="log-completion", got=results)
        return {"logged": [r["done"] for r in results]}

    logged = await ctx.step.run("log-completion", log_completion, [email, crm, access])
    return {"user": user, "email": email, "crm": crm, "access": access, "logged": logged}


def item(run: str, i: int) -> int:
    record("step", run=run, name="item", i=i)
    return i


@client.function(id="par-many", trigger=durably.on_event("par/many"))
async def par_many(ctx: durably.Context) -> dict[str, Any]:
    """One gather of ``n`` trivial steps (``item-0`` ... ``item-<n-1>``) and nothing else."""
    run = ctx.run_id
    n = int(ctx.event.data["n"])
    record("handler", run=run, fn=ctx.function_id)
    values = await asyncio.gather(*(ctx.step.run(f"item-{i}", item, run, i) for i in range(n)))
    return {"count": len(values), "sum": sum(values), "in_order": values == list(range(n))}


@client.function(id="par-fanout-opt", trigger=durably.on_event("par/fanout-opt"), optimize_parallelism=True)
async def par_fanout_opt(ctx: durably.Context) -> dict[str, Any]:
    """``par-many`` with ``optimize_parallelism=True``."""
    run = ctx.run_id
    n = int(ctx.event.data["n"])
    record("handler", run=run, fn=ctx.function_id)
    values = await asyncio.gather(*(ctx.step.run(f"item-{i}", item, run, i) for i in range(n)))
    return {"count": len(values), "sum": sum(values), "in_order": values == list(range(n))}


def link(run: str, branch: int, level: int, previous: str | None) -> str:
    record("step", run=run, name=f"b{branch}-s{level}", got=previous)
    return f"b{branch}-s{level}<{previous}>" if previous is not None else f"b{branch}-s{level}"


@client.function(id="par-nested", trigger=durably.on_event("par/nested"))
async def par_nested(ctx: durably.Context) -> dict[str, Any]:
    """A gather of three branches, each a sequence of steps (lengths 1, 2, 3): the second-level steps
    are planned while the first-level ones replay from memos, and a finished branch replays whole."""
    run = ctx.run_id
    record("handler", run=run, fn=ctx.function_id)

    async def branch(b: int) -> str:
        value: str | None = None
        for level in range(b + 1):
            value = await ctx.step.run(f"b{b}-s{level}", link, run, b, level, value)
        assert value is not None
        return value

    ends = await asyncio.gather(branch(0), branch(1), branch(2))

    def after(results: list[str]) -> list[str]:
        record("step", run=run, name="after", got=results)
        return results

    return {"ends": ends, "after": await ctx.step.run("after", after, ends)}


def letter(run: str, name: str, *inputs: str) -> str:
    record("step", run=run, name=name, got=list(inputs))
    return name + "(" + ",".join(inputs) + ")"


@client.function(id="par-twice", trigger=durably.on_event("par/twice"))
async def par_twice(ctx: durably.Context) -> dict[str, Any]:
    """Two gathers one after the other; the second uses the first's results; a final step sees all."""
    run = ctx.run_id
    record("handler", run=run, fn=ctx.function_id)
    a, b = await asyncio.gather(ctx.step.run("a", letter, run, "a"), ctx.step.run("b", letter, run, "b"))
    c, d = await asyncio.gather(ctx.step.run("c", letter, run, "c", a), ctx.step.run("d", letter, run, "d", b))
    final = await ctx.step.run("final", letter, run, "final", a, b, c, d)
    return {"a": a, "b": b, "c": c, "d": d, "final": final}


@client.function(id="par-retry", trigger=durably.on_event("par/retry"), retries=3)
async def par_retry(ctx: durably.Context) -> dict[str, Any]:
    """A gather of three steps; ``flaky`` raises on its first attempt only."""
    run = ctx.run_id
    record("handler", run=run, fn=ctx.function_id)

    def steady(name: str) -> str:
        record("step", run=run, name=name)
        return f"{name}-ok"

    def flaky() -> str:
        attempt = len(observations("step", run=run, name="flaky")) + 1
        record("step", run=run, name="flaky", attempt=attempt)
        if attempt == 1:
            raise ConnectionError("flaky fails on its first attempt")
        return f"flaky-ok-on-{attempt}"

    results = await asyncio.gather(
        ctx.step.run("left", steady, "left"),
        ctx.step.run("flaky", flaky),
        ctx.step.run("right", steady, "right"),
    )
    return {"results": results, "after": await ctx.step.run("after", steady, "after")}


@client.function(id="par-blocking", trigger=durably.on_event("par/blocking"))
async def par_blocking(ctx: durably.Context) -> dict[str, Any]:
    """A gather of three steps that each wait for control file ``go-<run>``, then a step after."""
    run = ctx.run_id
    record("handler", run=run, fn=ctx.function_id)

    async def wait(name: str) -> str:
        record("step", run=run, name=name, phase="started")
        await wait_for_file(f"go-{run}")
        record("step", run=run, name=name, phase="finished")
        return f"{name}-done"

    results = await asyncio.gather(*(ctx.step.run(f"w{i}", wait, f"w{i}") for i in range(3)))
    return {"results": results, "after": await ctx.step.run("after", letter, run, "after", *results)}


@client.function(id="par-staggered", trigger=durably.on_event("par/staggered"), retries=0)
async def par_staggered(ctx: durably.Context) -> dict[str, Any]:
    """A gather of ``n`` steps finishing ``gap`` seconds apart, then a step after; no retries at all, so
    any execution the daemon counts as failed fails the run."""
    run = ctx.run_id
    record("handler", run=run, fn=ctx.function_id)

    n, gap = int(ctx.event.data["n"]), float(ctx.event.data["gap"])

    async def staggered(i: int) -> int:
        await asyncio.sleep(gap * i)
        record("step", run=run, name=f"st{i}")
        return i

    values = await asyncio.gather(*(ctx.step.run(f"st{i}", staggered, i) for i in range(n)))
    total = await ctx.step.run("after", letter, run, "after", *(str(v) for v in values))
    return {"values": values, "after": total}


FUNCTIONS = [par_three, par_many, par_fanout_opt, par_nested, par_twice, par_retry, par_blocking, par_staggered]

if __name__ == "__main__":
    serve(*FUNCTIONS)
