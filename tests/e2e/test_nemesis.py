"""Randomised chaos soak (reliability.md T22): a seeded nemesis strikes every second or so, with one fault
or two at once, while the mixed workload of mixed_runs.py goes on in rounds: the daemon killed (-9), stopped
(SIGTERM) or frozen (SIGSTOP, then SIGCONT); a worker killed; the "zombie" worker frozen, sometimes past
its lease, so that another worker takes its work over and its late results must change nothing, or cut off
by a network partition that closes nothing (tcp_proxy.py); the store locked by another process, sometimes
past the daemon's busy timeout; the wall clock set back and forth (faked_clock.py). Then the nemesis heals
(clock set to the furthest it went, nothing frozen), a last round must go through unhindered, and every
guarantee of mixed_runs.py must hold over every run.

``DURABLY_SOAK_SECONDS`` sets how long the nemesis strikes (default 60; 1800 for the nightly length the
reference gives); ``DURABLY_TEST_SEED`` reruns one seed (the same faults in the same order; the timing of
processes differs from run to run)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sqlite3
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import pytest

from .faked_clock import Clock
from .harness import Harness, WorkerProcess, await_until, open_client
from .mixed_runs import CHAOS, check, drive, start_as_supervisor, until_answered
from .tcp_proxy import TcpProxy
from .test_store_locked import BUSY_TIMEOUT_S

SECONDS = float(os.environ.get("DURABLY_SOAK_SECONDS", "60"))
ROUND = 20
LAST_ROUND = 10
LAST_ROUND_S = 60
"""After the heal, the last round's runs must all complete within this many seconds."""
JUMP_S = 20
"""The clock is set anywhere from this many seconds back to this many ahead."""


@pytest.fixture
def daemon_args(clock: Clock) -> tuple[str, ...]:
    """On the faked clock; a worker silent for 2 s is taken for gone (so that a frozen one becomes a zombie)."""
    return ("--heartbeat", "200ms", "--worker-timeout", "2s")


class Nemesis:
    """Strikes with faults, one or two at a time, in an order a seeded generator draws. The zombie worker
    reaches the daemon through a proxy (tcp_proxy.py), which can cut its connection without a word."""

    def __init__(self, harness: Harness, clock: Clock, rng: random.Random, proxy: TcpProxy, address: str) -> None:
        self.harness = harness
        self.clock = clock
        self.rng = rng
        self.proxy = proxy
        self.workers: list[WorkerProcess] = [harness.start_worker(CHAOS), harness.start_worker(CHAOS)]
        # Not wait=True: that would block this loop, which runs the proxy.
        self.zombie = harness.start_worker(CHAOS, wait=False, env={"DURABLY_ADDRESS": address})
        self.struck: Counter[str] = Counter()
        self.furthest = 0
        self.refused_starts = 0
        self.strikes = 0

    async def strike_until(self, deadline: float) -> None:
        """Strike in rounds of every kind of fault, each round in a random order; a third of the strikes
        bring a second fault at the same time, of another kind and not to the daemon."""
        to_daemon: list[Callable[[], Awaitable[None]]] = [self.kill_daemon, self.stop_daemon, self.freeze_daemon]
        others: list[Callable[[], Awaitable[None]]] = [
            self.kill_worker,
            self.freeze_zombie,
            self.cut_zombie,
            self.lock_store,
            self.jump_clock,
        ]
        faults = to_daemon + others
        while time.monotonic() < deadline:
            for fault in self.rng.sample(faults, len(faults)):
                await asyncio.sleep(self.rng.uniform(0.2, 1.0))
                together = [fault]
                if self.rng.random() < 1 / 3:
                    together.append(self.rng.choice([other for other in others if other != fault]))
                self.strikes += 1
                self.struck.update(f.__name__ for f in together)
                await asyncio.gather(*(f() for f in together))
                # Each fault to the daemon restarts or resumes it before it returns: one not running now died
                # on its own, and nothing would bring it back.
                assert self.harness.daemon.alive(), f"the daemon exited on its own\n{self.harness.daemon.report()}"

    async def kill_daemon(self) -> None:
        self.harness.daemon.kill9()
        await asyncio.sleep(self.rng.uniform(0, 1))
        self.refused_starts += await start_as_supervisor(self.harness)

    async def stop_daemon(self) -> None:
        assert await asyncio.to_thread(self.harness.daemon.stop) == 0, self.harness.daemon.report()
        self.refused_starts += await start_as_supervisor(self.harness)

    async def freeze_daemon(self) -> None:
        self.harness.daemon.pause()
        await asyncio.sleep(self.rng.uniform(0.3, 3))
        self.harness.daemon.resume()

    async def kill_worker(self) -> None:
        self.workers.pop(self.rng.randrange(len(self.workers))).kill9()
        self.workers.append(self.harness.start_worker(CHAOS, wait=False))

    async def freeze_zombie(self) -> None:
        """Freeze the zombie just as it starts a step body (if it starts one within 2 s), mostly past its
        lease: the step runs again elsewhere, and whatever the zombie does once continued (its result comes
        late, or never: its stream was closed) must change nothing recorded."""
        await self._zombie_starts_a_body(within=2)
        self.zombie.pause()
        await asyncio.sleep(self.rng.uniform(1, 4))  # the worker timeout is 2 s
        self.zombie.resume()

    async def cut_zombie(self) -> None:
        """Cut the zombie's connection without a word, as a network partition does: the daemon takes it for
        gone after 2 s, the zombie notices within 15 s (gRPC keepalive) and connects again."""
        await self._zombie_starts_a_body(within=2)
        self.proxy.cut_all()

    async def _zombie_starts_a_body(self, within: float) -> None:
        marker = f'"kind": "body", "pid": {self.zombie.pid},'  # as observe.record writes it
        deadline = time.monotonic() + within
        with self.harness.log.open(encoding="utf-8") as log:
            log.seek(0, os.SEEK_END)
            seen = ""
            while time.monotonic() < deadline:
                seen = seen[-len(marker) :] + log.read()
                if marker in seen:
                    return
                await asyncio.sleep(0.002)

    async def lock_store(self) -> None:
        lock = sqlite3.connect(self.harness.daemon.db, timeout=30, isolation_level=None, check_same_thread=False)
        try:
            await asyncio.to_thread(lock.execute, "BEGIN EXCLUSIVE")
            await asyncio.sleep(self.rng.uniform(0.3, BUSY_TIMEOUT_S + 2))
            lock.execute("ROLLBACK")
        finally:
            lock.close()

    async def jump_clock(self) -> None:
        offset = self.rng.randint(-JUMP_S, JUMP_S)
        self.furthest = max(self.furthest, offset)
        self.clock.set(offset)

    def heal(self) -> None:
        """Nothing frozen or locked (each fault undoes itself); the clock set to the furthest it went, so that
        no sleep waits for a deadline a jump back put off."""
        self.clock.set(self.furthest)


@pytest.mark.slow
@pytest.mark.timeout(SECONDS * 4 + 600)
async def test_a_seeded_nemesis_mixing_every_fault_breaks_no_guarantee(harness: Harness, clock: Clock) -> None:
    seed = int(os.environ.get("DURABLY_TEST_SEED") or random.randrange(1 << 30))
    print(f"seed {seed} (DURABLY_TEST_SEED={seed} runs this test again as it ran)")
    acked: list[str] = []
    async with contextlib.AsyncExitStack() as stack:
        proxy = TcpProxy(harness.daemon.port)
        address = await proxy.start()
        stack.push_async_callback(proxy.close)
        nemesis = Nemesis(harness, clock, random.Random(seed), proxy, address)
        await await_until(lambda: harness.connected("chaos-mix") == 3, timeout=30, what="the zombie to connect")
        client = await stack.enter_async_context(open_client(harness.address))
        strikes = asyncio.create_task(nemesis.strike_until(time.monotonic() + SECONDS))
        while not strikes.done():
            driving = asyncio.ensure_future(drive(harness, client, ROUND, acked, patience=120))
            await asyncio.wait([driving, strikes], return_when=asyncio.FIRST_COMPLETED)
            if strikes.done() and strikes.exception() is not None:
                driving.cancel()  # fail now, not when the round's patience or the test's timeout runs out
                break
            await driving
        await strikes
        nemesis.heal()
        healed = time.monotonic()
        last = len(acked)
        await drive(harness, client, LAST_ROUND, acked)
        for event_id in acked[last:]:
            [run] = await until_answered(lambda event_id=event_id: client.list_runs(event_id=event_id))
            left = LAST_ROUND_S - (time.monotonic() - healed)
            assert (await client.wait_for_run(run.id, timeout=max(left, 0.1))).status == "completed", run
        after_heal = time.monotonic() - healed
        reran = await check(harness, client, acked, clock_jumped=True, stopped=frozenset({nemesis.zombie.pid}))
    log = harness.daemon.all_stderr()
    refused, expired = log.count("refused a result for execution"), log.count("lease expired")
    taken_over = _taken_over(harness, nemesis.zombie.pid)
    noticed = nemesis.zombie.all_stderr().count("ping timeout")
    print(
        f"seed {seed}; {SECONDS:g} s of faults: {nemesis.strikes} strikes, {sum(nemesis.struck.values())} faults "
        f"({dict(nemesis.struck)}); {nemesis.refused_starts} daemon starts refused; "
        f"{len(acked)} runs, guarantees broken: 0, stuck runs: 0; {reran} step bodies ran again; "
        f"{expired} workers' leases expired, {taken_over} of the zombie's step bodies ran again elsewhere, "
        f"{refused} late results refused; the zombie noticed {noticed} cuts; last {LAST_ROUND} runs after the heal "
        f"completed in {after_heal:.1f} s"
    )
    assert harness.daemon.alive(), harness.daemon.report()
    if SECONDS >= 30:
        assert taken_over > 0, "no step of the zombie ran elsewhere: the soak tested no zombie"
        assert noticed > 0, "the zombie never noticed a cut connection: the soak tested no partition"


def _taken_over(harness: Harness, pid: int) -> int:
    """How many step bodies process `pid` started ran again later in another process."""
    started: set[tuple[str, str]] = set()
    again: set[tuple[str, str]] = set()
    for body in harness.observations("body"):
        key = (body["run"], body["name"])
        if body["pid"] == pid:
            started.add(key)
        elif key in started:
            again.add(key)
    return len(again)
