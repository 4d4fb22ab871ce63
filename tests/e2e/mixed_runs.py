"""The mixed workload of the fault tests (test_chaos, test_store_faults, test_power_loss, test_nemesis):
runs of every step kind (steps in a row, parallel steps, a sleep, a wait for an event, an invoke, an event
sent), half of them with checkpointing, driven through faults, then checked against what the engine
guarantees (README "Guarantees"): every acknowledged event has exactly one run, every run completes, each
step is recorded once, the results a handler went on with are the ones recorded, each waiting run gets its
own event, each invoke makes one child run whose output the parent gets, each event sent starts one run,
and no step body runs again once a later step's body has run (the handler went on from its committed
result, which must never be lost)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import durably
from durably.errors import ServiceError, UnavailableError

from .harness import Harness, WorkerSpec, await_until, describe

CHAOS = WorkerSpec("chaos.py", ("chaos-mix", "chaos-mix-c", "chaos-child", "chaos-echo"))
BODIES = ["first", "part-0", "part-1", "part-2", "last"]
STAGES = {"first": 0, "part-0": 1, "part-1": 1, "part-2": 1, "last": 2}
"""The order in which a run's bodies run (the parts together): a body of an earlier stage that runs after
one of a later stage means the handler had gone on from a result that was then lost."""
STEPS = [*BODIES, "nap", "go", "child", "echo"]
T = TypeVar("T")


async def until_answered(call: Callable[[], Awaitable[T]]) -> T:
    """Call again while the daemon cannot answer (killed, restarting, its store failing)."""
    while True:
        try:
            return await call()
        except (UnavailableError, ServiceError):
            await asyncio.sleep(0.05)


async def start_as_supervisor(harness: Harness) -> int:
    """Start the daemon as a supervisor would: again while it refuses to (a start-up read failed);
    returns how many starts it refused, each with a clear message."""
    refused = 0
    while True:
        try:
            await asyncio.to_thread(harness.daemon.start)
            return refused
        except RuntimeError as exc:
            assert "cannot read the database" in str(exc) and "at start-up" in str(exc), exc
            refused += 1


async def drive(harness: Harness, client: durably.Client, runs: int, acked: list[str], patience: float = 60) -> None:
    """Start `runs` more runs (numbered on from those in `acked`); once each waits for its `chaos/go`
    event (within `patience` seconds), send it. Every send is retried with the same event id until
    acknowledged (a send cut by a fault may have been stored: the id dedupes)."""
    first = len(acked)
    for n in range(first, first + runs):
        name = "chaos/mix-c" if n % 2 else "chaos/mix"  # half of them with checkpointing=True
        event = durably.Event(name=name, data={"n": n}, id=f"chaos-{n}")
        [event_id] = await until_answered(lambda event=event: client.send(event))
        acked.append(event_id)
        await asyncio.sleep(0.01)  # spread the runs over the faults
    for n, event_id in enumerate(acked[first:], start=first):
        seen: list[durably.Run] = []

        async def waiting(event_id: str = event_id, seen: list[durably.Run] = seen) -> bool:
            runs = await until_answered(lambda: client.list_runs(event_id=event_id))
            assert runs, f"event {event_id} was acknowledged, and now it has no run: lost"
            seen[:] = runs[:1]
            return runs[0].status == "waiting"

        try:
            await await_until(waiting, timeout=patience, what=f"the run of {event_id} to wait for its event")
        except AssertionError as exc:
            if not seen:
                raise
            run = await until_answered(lambda run_id=seen[0].id: client.get_run(run_id))  # with its steps
            raise AssertionError(f"{exc}\n{_where_stuck(harness, run)}") from None
        go = durably.Event(name="chaos/go", data={"n": n}, id=f"go-{n}")
        await until_answered(lambda go=go: client.send(go))


def _where_stuck(harness: Harness, run: durably.Run) -> str:
    """What the store holds of a run that did not get on: the run, its queued executions, timers, waits."""
    queued = harness.query("SELECT id, attempt, available_ms, target FROM queue WHERE run_id = ?", run.id)
    timers = harness.query("SELECT id, name, kind, due_ms FROM timers WHERE run_id = ?", run.id)
    waits = harness.query("SELECT id, kind, event_name FROM waits WHERE run_id = ?", run.id)
    logged = [line for line in harness.daemon.all_stderr().splitlines() if run.id in line][-20:]
    return "\n".join(
        [
            describe(run),
            f"queued (id, attempt, available_ms, target): {queued}",
            f"timers (id, name, kind, due_ms): {timers}",
            f"waits (id, kind, event): {waits}",
            "the daemon's log of it:",
            *logged,
        ]
    )


async def check(
    harness: Harness,
    client: durably.Client,
    acked: list[str],
    *,
    clock_jumped: bool = False,
    stopped: frozenset[int] = frozenset(),
) -> int:
    """Assert the guarantees over the driven runs (and that each run's start time is recorded, no later than
    its first step's, unless the wall clock jumped back meanwhile); return how many step bodies ran more than
    once. Bodies run by the worker processes in `stopped` (SIGSTOP'd, then continued) are left out of the
    order check: a worker stopped past its lease may, once continued, start a body it was about to start
    (nothing can fence a body's start, only its result, which the daemon refuses)."""
    for n, event_id in enumerate(acked):
        runs = await until_answered(lambda event_id=event_id: client.list_runs(event_id=event_id))
        assert len(runs) == 1, f"event {event_id} has {len(runs)} runs"
        run = await client.wait_for_run(runs[0].id, timeout=120)
        assert run.status == "completed", describe(run)
        first = min(step.started_at for step in run.steps if step.started_at is not None)
        assert run.started_at is not None and (clock_jumped or run.started_at <= first), f"start: {describe(run)}"
        assert sorted(step.name for step in run.steps) == sorted(STEPS), describe(run)
        recorded = {step.name: step.output for step in run.steps}
        assert run.output["tokens"] == {name: recorded[name] for name in BODIES}, describe(run)
        assert run.output["n"] == n and run.output["go"] == {"n": n}, describe(run)
        assert run.output["child"] == recorded["child"] and run.output["child"]["n"] == n, describe(run)
        children = harness.query("SELECT id FROM runs WHERE parent_run_id = ?", run.id)
        assert len(children) == 1, f"run {run.id} invoked {len(children)} child runs"
        child = await until_answered(lambda child_id=children[0][0]: client.get_run(child_id))
        assert child.output == recorded["child"] and child.output["token"] == child.steps[0].output, describe(child)
        assert run.output["sent"] == recorded["echo"], describe(run)
        echoes = await until_answered(lambda sent=run.output["sent"]: client.list_runs(event_id=sent[0]))
        assert len(echoes) == 1, f"the event {run.id} sent has {len(echoes)} runs"
        echo = await client.wait_for_run(echoes[0].id, timeout=120)
        assert echo.status == "completed" and echo.output["n"] == n, describe(echo)
        assert echo.output["token"] == echo.steps[0].output, describe(echo)

    _in_order(harness, stopped)
    return len(harness.observations("body")) - len(acked) * (len(BODIES) + 2)  # + the child's and echo's


def _in_order(harness: Harness, stopped: frozenset[int]) -> None:
    reached: dict[str, tuple[int, str]] = {}
    for body in harness.observations("body"):
        stage = STAGES.get(body["name"])
        if stage is None or body["pid"] in stopped:
            continue  # the child's or echo's step (a run of its own), or a stopped worker's
        before, name = reached.get(body["run"], (0, "first"))
        assert stage >= before, f"run {body['run']}: {body['name']} ran again after {name} had run"
        reached[body["run"]] = (stage, body["name"])
