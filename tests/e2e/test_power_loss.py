"""Power loss at a sync (reliability.md T15). The daemon opens its database through the core's
power-loss VFS (``DURABLY_STORE_POWER_LOSS``, core_rs/src/power_loss.rs): every write waits in memory
until its file is synced, as in the OS page cache, and at a chosen sync the power goes: each unsynced
write is kept, dropped or garbled at random and the daemon dies on the spot. Runs of every step kind
go on through one power loss after another, each at a random sync (start-up included); after each,
the file must pass ``PRAGMA integrity_check``, and in the end every guarantee of mixed_runs.py holds:
with ``synchronous=FULL`` nothing acknowledged may be lost (an acknowledged event has its run; a
step the handler went on from is never run again). The second test mixes in the other faults: 5 % of the
store's commits and reads failing (``DURABLY_STORE_FAULTS``) and workers killed now and then."""

from __future__ import annotations

import asyncio
import os
import random
import re
import sqlite3
from collections.abc import Callable

import pytest

from .harness import Harness, WorkerProcess, open_client
from .mixed_runs import CHAOS, check, drive

POWER_LOSSES = 200
MIXED_POWER_LOSSES = 100
ROUND = 40
"""Runs are driven in rounds of this many until there have been `POWER_LOSSES`."""
LAST_SYNC = 20
"""Each daemon loses power at a sync drawn from 1 to this: a dozen commits of the workload or so, so
that losses come often, some during start-up, and the workload still gets through."""
CREATION_SYNCS = 6
"""The first daemon creates the database, and loses power in one of its first syncs: while it does."""
ENV = "DURABLY_STORE_POWER_LOSS"
LOSS = re.compile(r"power lost on purpose at sync (\d+) .*: (\d+) kept, (\d+) dropped, (\d+) garbled")


class Losses:
    """The power losses so far and what the simulated disk did with the unsynced writes; with
    `other_faults`, each daemon also fails some of its store's commits and reads, and workers die."""

    def __init__(self, harness: Harness, rng: random.Random, other_faults: bool) -> None:
        self.harness = harness
        self.rng = rng
        self.other_faults = other_faults
        self.count = 0
        self.at_start = 0
        self.writes = [0, 0, 0]  # kept, dropped, garbled

    def arm(self, last_sync: int = LAST_SYNC) -> None:
        self.harness.daemon.env[ENV] = f"{self.rng.randint(1, last_sync)}:{self.rng.getrandbits(32)}"
        if self.other_faults:
            self.harness.daemon.env["DURABLY_STORE_FAULTS"] = "0.05"

    def calm(self) -> None:
        """No fault from the next start on."""
        del self.harness.daemon.env[ENV]
        self.harness.daemon.env.pop("DURABLY_STORE_FAULTS", None)

    def took_place(self) -> None:
        """The daemon died: of a power loss (a daemon that died of anything else fails the test), and
        the file it left is sound."""
        daemon = self.harness.daemon
        found = LOSS.search(daemon.stderr())
        assert found, f"the daemon died, not of a simulated power loss:\n{daemon.report()}"
        self.count += 1
        for n in range(3):
            self.writes[n] += int(found[n + 2])
        # Read-write, as the next daemon opens it: a loss before the switch to WAL leaves a hot rollback
        # journal, which only a writer may roll back.
        conn = sqlite3.connect(self.harness.daemon.db, timeout=10)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)], f"after {found[0]}"
        finally:
            conn.close()

    async def start(self, last_sync: int = LAST_SYNC) -> None:
        """Start the daemon with a new power-loss point, again while it loses power before it is ready."""
        while True:
            self.arm(last_sync)
            last_sync = LAST_SYNC
            try:
                await asyncio.to_thread(self.harness.daemon.start)
                return
            except RuntimeError as exc:
                if "cannot read the database" in str(exc):  # a start-up read failed on purpose: refused
                    continue
                self.took_place()
                self.at_start += 1

    def kill_a_worker_now_and_then(self) -> None:
        if self.other_faults and self.rng.random() < 0.01:
            workers = [p for p in self.harness.processes if isinstance(p, WorkerProcess) and p.alive()]
            self.rng.choice(workers).kill9()
            self.harness.start_worker(CHAOS, wait=False)


async def _lose_power_until(losses: Losses, done: Callable[[], bool]) -> None:
    """Start the daemon again after each power loss until `done`."""
    while not done():
        if losses.harness.daemon.alive():
            await asyncio.sleep(0.02)
            losses.kill_a_worker_now_and_then()
            continue
        losses.took_place()
        await losses.start()


def _serving(harness: Harness) -> bool:
    """Both workers registered: from then on the events start runs."""
    return harness.connected(CHAOS.functions[0]) >= 2


async def _run(harness: Harness, power_losses: int, *, other_faults: bool) -> None:
    seed = int(os.environ.get("DURABLY_TEST_SEED") or random.randrange(1 << 30))
    print(f"seed {seed} (DURABLY_TEST_SEED={seed} runs this test again as it ran)")
    losses = Losses(harness, random.Random(seed), other_faults)
    harness.daemon.stop()
    for path in harness.workdir.glob(f"{harness.daemon.db.name}*"):
        path.unlink()  # the first daemon creates the file again, and loses power doing so
    await losses.start(last_sync=CREATION_SYNCS)
    harness.start_worker(CHAOS, wait=False)
    harness.start_worker(CHAOS, wait=False)
    await _lose_power_until(losses, lambda: _serving(harness))
    acked: list[str] = []
    async with open_client(harness.address) as client:
        while losses.count < power_losses:
            driver = asyncio.create_task(drive(harness, client, ROUND, acked))
            await _lose_power_until(losses, driver.done)
            driver.result()
        # The power stays on from here: the last daemon stops (or has lost power), one starts without faults.
        if harness.daemon.stop() != 0:
            losses.took_place()
        losses.calm()
        harness.daemon.start()
        reran = await check(harness, client, acked)
    kept, dropped, garbled = losses.writes
    print(
        f"{len(acked)} runs; {losses.count} power losses ({losses.at_start} during start-up), integrity failures: 0;"
        f" unsynced writes {kept} kept, {dropped} dropped, {garbled} garbled; acknowledged and lost: 0;"
        f" {reran} step bodies ran again"
    )
    assert losses.at_start and dropped and garbled, "no loss at start-up, or no write lost: the test tested little"


@pytest.mark.slow
@pytest.mark.timeout(480)
async def test_nothing_acknowledged_is_lost_to_power_loss_at_any_sync(harness: Harness) -> None:
    await _run(harness, POWER_LOSSES, other_faults=False)


@pytest.mark.slow
@pytest.mark.timeout(480)
async def test_nor_with_failing_commits_and_reads_and_workers_killed_too(harness: Harness) -> None:
    await _run(harness, MIXED_POWER_LOSSES, other_faults=True)
