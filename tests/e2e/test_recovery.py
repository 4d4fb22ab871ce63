"""Recovery through failures (reliability.md T14): 5,000 runs are left unfinished in every way (waiting for
an event, sleeping until an instant, in the middle of their steps) when the daemon is killed (-9). It is
started on a store that fails 20 % of its reads and commits for its first 2 s (``DURABLY_STORE_FAULTS=0.2:2``;
a start whose reads fail is refused and started again, as a supervisor would), killed again in the middle
of its recovery, and started again likewise. No run may be dropped from recovery (dbos-transact-py#716):
every run ends, completed, with the output it should have and each step recorded once."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import durably
import pytest

from .harness import Harness, WorkerSpec, await_until, open_client
from .mixed_runs import start_as_supervisor, until_answered

RECOVERY = WorkerSpec("recovery.py", ("recover-wait", "recover-sleep", "recover-steps"))
WAITING, SLEEPING, STEPPING = 2000, 2000, 1000
STEPS = {"recover-wait": ["go", "after"], "recover-sleep": ["nap", "after"], "recover-steps": ["s0", "s1", "s2", "s3"]}
FAULTS = "0.2:2"
BATCH = 500


async def _send(client: durably.Client, events: list[durably.Event]) -> None:
    for start in range(0, len(events), BATCH):
        batch = events[start : start + BATCH]
        await until_answered(lambda batch=batch: client.send(batch))


def _count(harness: Harness, where: str) -> int:
    [(count,)] = harness.query(f"SELECT count(*) FROM runs WHERE {where}")
    return int(count)


async def _restart_with_faults(harness: Harness) -> int:
    harness.daemon.env["DURABLY_STORE_FAULTS"] = FAULTS
    return await start_as_supervisor(harness)


@pytest.mark.slow
@pytest.mark.timeout(400)
async def test_no_run_is_dropped_from_a_recovery_through_store_faults_and_a_kill(harness: Harness) -> None:
    harness.start_worker(RECOVERY)
    harness.start_worker(RECOVERY)
    async with open_client(harness.address) as client:
        waits = [durably.Event("recover/wait", {"n": n}, id=f"wait-{n}") for n in range(WAITING)]
        await _send(client, waits)
        until = (datetime.now(UTC) + timedelta(seconds=10)).isoformat()
        sleeps = [durably.Event("recover/sleep", {"n": n, "until": until}, id=f"sleep-{n}") for n in range(SLEEPING)]
        await _send(client, sleeps)
        parked = "status IN ('waiting', 'sleeping')"
        await await_until(lambda: _count(harness, parked) == WAITING + SLEEPING, timeout=120, what="runs parked")
        await _send(client, [durably.Event("recover/steps", {"n": n}, id=f"steps-{n}") for n in range(STEPPING)])
        await asyncio.sleep(0.5)  # in the middle of their steps
        unfinished = _count(harness, "status NOT IN ('completed', 'failed', 'cancelled')")

        harness.daemon.kill9()
        refused = await _restart_with_faults(harness)
        await asyncio.sleep(0.5)  # recovering: leasing the queued executions again, through the faults
        harness.daemon.kill9()
        started = time.monotonic()
        refused += await _restart_with_faults(harness)
        await _send(client, [durably.Event("recover/go", {"n": n}, id=f"go-{n}") for n in range(WAITING)])
        total = WAITING + SLEEPING + STEPPING
        await await_until(lambda: _count(harness, "status = 'completed'") == total, timeout=120, what="every run")
        recovered_s = time.monotonic() - started

    runs = harness.query("SELECT id, function_id, status, output FROM runs")
    assert len(runs) == total
    by_function: dict[str, list[int]] = {function: [] for function in STEPS}
    for _, function, status, output in runs:
        assert status == "completed"
        by_function[function].append(json.loads(output)["n"])
    assert {f: sorted(ns) for f, ns in by_function.items()} == {
        "recover-wait": list(range(WAITING)),
        "recover-sleep": list(range(SLEEPING)),
        "recover-steps": list(range(STEPPING)),
    }
    kinds = {run_id: function for run_id, function, _, _ in runs}
    recorded: dict[str, list[str]] = {run_id: [] for run_id in kinds}
    for run_id, name in harness.query("SELECT run_id, name FROM steps ORDER BY run_id, seq"):
        recorded[run_id].append(name)
    assert all(recorded[run_id] == STEPS[kinds[run_id]] for run_id in kinds), "a step missing or recorded twice"
    failed = sum(path.read_text().count("failed on purpose") for path in harness.workdir.glob("daemon-*.err"))
    print(
        f"runs dropped from recovery: 0 of {total} ({unfinished} unfinished at the kill); time to full recovery"
        f" {recovered_s:.1f} s; {refused} starts refused; {failed} store operations failed on purpose"
    )
    assert harness.daemon.alive(), harness.daemon.report()
