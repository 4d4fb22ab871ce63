"""Races between steps (Inngest's race mode): the handler goes on as soon as the first step of a race
finishes, the loser is not cancelled (its body still runs once), and the winner stays the winner on
every later replay, including the replays after the loser finished."""

from __future__ import annotations

from typing import Any

import durably

from .harness import Harness, WorkerSpec, await_until, describe, run_to_end

RACE = WorkerSpec("parallel_race.py", ("race-first", "race-collect", "race-as-completed"))
WORKERS = [RACE]


def one(cluster: Harness, run: str, name: str, **match: Any) -> dict[str, Any]:
    """The single ``step`` observation of ``name`` (with ``match``): that body ran exactly once."""
    found = cluster.observations("step", run=run, name=name, **match)
    assert len(found) == 1, f"step {name!r} {match}: {len(found)} observations: {found}"
    return found[0]


async def loser_finished(cluster: Harness, run: str) -> dict[str, Any]:
    """Wait until the slow step's body has finished (it may finish after the run ended)."""
    await await_until(
        lambda: cluster.observations("step", run=run, name="slow", phase="finished"),
        timeout=15,
        what="the losing step `slow` to finish its body",
    )
    one(cluster, run, "slow", phase="started")
    return one(cluster, run, "slow", phase="finished")


async def test_first_completed_wins_and_the_loser_still_runs(cluster: Harness, client: durably.Client) -> None:
    done = await run_to_end(client, "race/first", {}, timeout=30)

    assert done.status == "completed", describe(done)
    assert done.output == {"winner": "fast", "seen": "fast"}, describe(done)
    recorded = one(cluster, done.id, "record-winner")
    assert recorded["got"] == "fast"
    one(cluster, done.id, "fast", phase="started")
    fast = one(cluster, done.id, "fast", phase="finished")

    # Losers are not cancelled: the slow body ran to its end, once.
    slow = await loser_finished(cluster, done.id)
    assert fast["t_end"] < slow["t_end"]
    # Race, not wait-all: the handler went on (and ran record-winner) before the loser finished.
    assert recorded["t"] < slow["t_end"], (
        f"record-winner ran {recorded['t'] - slow['t_end']:+.3f} s after the loser finished: "
        "the handler waited for the whole group instead of going on after the first result"
    )


async def test_the_winner_stays_the_winner_after_the_loser_finished(cluster: Harness, client: durably.Client) -> None:
    done = await run_to_end(client, "race/collect", {}, timeout=30)

    assert done.status == "completed", describe(done)
    # `seen` is what the race returned in the execution that returned: it replayed with both steps
    # saved (the handler also awaits the loser, so that execution came after the loser finished).
    assert done.output == {"winner": "fast", "seen": "fast", "losers": ["slow-result"]}, describe(done)
    assert one(cluster, done.id, "record-winner")["got"] == "fast"
    one(cluster, done.id, "fast", phase="finished")
    slow = await loser_finished(cluster, done.id)

    after_loser = [h for h in cluster.observations("handler", run=done.id) if h["t"] > slow["t_end"]]
    assert after_loser, "no handler execution after the loser finished"

    run = await client.get_run(done.id)
    outputs = {s.name: s.output for s in run.steps}
    assert outputs == {"fast": "fast-result", "record-winner": "fast", "slow": "slow-result"}, describe(run)
    order = [s.name for s in run.steps]
    assert order.index("fast") < order.index("slow"), f"steps recorded in order {order}: not in finishing order"


async def test_as_completed_first_result_is_the_fast_step(cluster: Harness, client: durably.Client) -> None:
    done = await run_to_end(client, "race/as-completed", {}, timeout=30)

    assert done.status == "completed", describe(done)
    assert done.output == {"first": "fast-result", "seen": "fast-result"}, describe(done)
    recorded = one(cluster, done.id, "record-first")
    assert recorded["got"] == "fast-result"
    one(cluster, done.id, "fast", phase="finished")
    slow = await loser_finished(cluster, done.id)
    assert recorded["t"] < slow["t_end"], (
        f"record-first ran {recorded['t'] - slow['t_end']:+.3f} s after the loser finished: the handler waited "
        "for the whole group instead of going on after the first result"
    )
