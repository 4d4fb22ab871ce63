"""A store that fails now and then (reliability.md T3, T4): the daemon fails 5 % of its commits, 5 % of
its reads, and reports 5 % of the commits it made as failed ("ambiguous" commits), on purpose
(``DURABLY_STORE_FAULTS``, store/faults.py) while runs of every step kind go on; in the second test it
is also killed once and started again (recovering its runs through the failing store). A start whose
reads fail is refused with a clear message and tried again, as a supervisor would. Callers may see
retryable errors (``UNAVAILABLE``) and step bodies may run again, but nothing acknowledged is lost, no
run is left stuck, and every guarantee of mixed_runs.py holds."""

from __future__ import annotations

import asyncio

from .harness import Harness, open_client
from .mixed_runs import CHAOS, check, drive, start_as_supervisor

RUNS = 150
RATE = "0.05"


async def _kill9_and_restart(harness: Harness) -> int:
    await asyncio.sleep(1.0)
    harness.daemon.kill9()
    return await start_as_supervisor(harness)


async def _run_mixed(harness: Harness, *, kill: bool) -> None:
    harness.daemon.stop()
    harness.daemon.env["DURABLY_STORE_FAULTS"] = RATE
    refused = await start_as_supervisor(harness)
    harness.start_worker(CHAOS)
    harness.start_worker(CHAOS)
    acked: list[str] = []
    async with open_client(harness.address) as client:
        restart = asyncio.create_task(_kill9_and_restart(harness) if kill else asyncio.sleep(0, 0))
        await drive(harness, client, RUNS, acked)
        refused += await restart
        reran = await check(harness, client, acked)
    log = harness.daemon.stderr()  # of the daemon started last
    commits, reads = log.count("commit failed on purpose"), log.count("read failed on purpose")
    made = log.count("but it was made")
    print(
        f"{refused} starts refused; {commits} commits, {made} after they were made, {reads} reads failed; {reran} reran"
    )
    assert harness.daemon.alive(), harness.daemon.report()
    assert commits >= 5 and made >= 5, f"{commits} commits failed, {made} once made: the test tested little"


async def test_runs_of_every_kind_complete_through_failing_commits_and_reads(harness: Harness) -> None:
    await _run_mixed(harness, kill=False)


async def test_and_through_a_kill_9_meanwhile(harness: Harness) -> None:
    await _run_mixed(harness, kill=True)
