"""Worker: races between steps (``asyncio.wait(FIRST_COMPLETED)``, ``asyncio.as_completed``).

Step ``fast`` sleeps 0.1 s and step ``slow`` 1.5 s. Every handler execution that gets past the race
logs a ``winner`` observation with what the race returned in that execution, so tests can check the
winner never changes from one replay to the next (even after the loser finished).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import durably
from observe import client, record, serve

DELAYS = {"fast": 0.1, "slow": 1.5}


def racer(run: str, name: str) -> Any:
    async def body() -> str:
        record("step", run=run, name=name, phase="started")
        await asyncio.sleep(DELAYS[name])
        record("step", run=run, name=name, phase="finished", t_end=time.time())
        return f"{name}-result"

    return body


def recorder(run: str, name: str) -> Any:
    def body(winner: str) -> str:
        record("step", run=run, name=name, got=winner)
        return winner

    return body


async def _race(ctx: durably.Context) -> tuple[str, list[str], set[asyncio.Task[Any]]]:
    """Start ``fast`` and ``slow`` as tasks and wait for the first; returns (winner, done names, pending)."""
    run = ctx.run_id
    tasks = {
        asyncio.ensure_future(ctx.step.run(name, racer(run, name))): name  # a task per step, like Promise.race
        for name in ("fast", "slow")
    }
    done, pending = await asyncio.wait(set(tasks), return_when=asyncio.FIRST_COMPLETED)
    names = sorted(tasks[task] for task in done)
    # A race has one winner: if the replay resolved both at once the handler cannot tell which won.
    winner = names[0] if len(names) == 1 else "tie:" + "+".join(names)
    record("winner", run=run, fn=ctx.function_id, winner=winner, done=names)
    return winner, names, pending


@client.function(id="race-first", trigger=durably.on_event("race/first"))
async def race_first(ctx: durably.Context) -> dict[str, Any]:
    """The winner is saved by step ``record-winner`` and returned; the loser is never awaited."""
    record("handler", run=ctx.run_id, fn=ctx.function_id)
    winner, _, _ = await _race(ctx)
    saved = await ctx.step.run("record-winner", recorder(ctx.run_id, "record-winner"), winner)
    return {"winner": saved, "seen": winner}


@client.function(id="race-collect", trigger=durably.on_event("race/collect"))
async def race_collect(ctx: durably.Context) -> dict[str, Any]:
    """Like ``race-first``, then it also awaits the loser: the last execution replays the race with
    both steps saved (the loser finished last), and must still name the same winner."""
    record("handler", run=ctx.run_id, fn=ctx.function_id)
    winner, _, pending = await _race(ctx)
    saved = await ctx.step.run("record-winner", recorder(ctx.run_id, "record-winner"), winner)
    losers = [await task for task in pending]
    return {"winner": saved, "seen": winner, "losers": losers}


@client.function(id="race-as-completed", trigger=durably.on_event("race/as-completed"))
async def race_as_completed(ctx: durably.Context) -> dict[str, Any]:
    """``asyncio.as_completed``: the first result is saved by step ``record-first``."""
    run = ctx.run_id
    record("handler", run=run, fn=ctx.function_id)
    steps = [ctx.step.run(name, racer(run, name)) for name in ("slow", "fast")]
    first: str | None = None
    for next_done in asyncio.as_completed(steps):
        first = await next_done
        break
    assert first is not None
    record("winner", run=run, fn=ctx.function_id, winner=first)
    saved = await ctx.step.run("record-first", recorder(run, "record-first"), first)
    return {"first": saved, "seen": first}


if __name__ == "__main__":
    serve(race_first, race_collect, race_as_completed)
