"""The dispatcher: hands queued executions to connected workers with free capacity.

Ready work waits in two FIFOs per function: units of runs already under way (next steps,
wake-ups, retries) go before the first executions of new runs, so a burst of new runs cannot hold
back runs it found started (Inngest likewise scores a run's later steps by the run's start time).
Runs being read back to be woken count as under way a little early (`waking`).
Work with a future `available_ms` waits in a heap and a single timer wakes the dispatcher when the
earliest comes due. A unit of
work is a list of queue items of one run: planned steps found together travel together,
so a gather of N steps costs one replay per worker, not N. A leased execution carries a
fresh `execution_id`; only the worker holding that lease may answer it, so a result can
never be recorded twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import itertools
import logging
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

from durably_server.engine.alarms import MAX_WAIT_S
from durably_server.engine.concurrency import Concurrency, Slot, slots_of
from durably_server.engine.runs import LOAD_BATCH, ActiveRun, ActiveRuns
from durably_server.ids import now_ms
from durably_server.model import Checkpointed, FunctionSpec, QueueItem
from durably_server.store import Store

log = logging.getLogger("durably.scheduler")

FunctionKey = tuple[str, str]
Unit = list[QueueItem]

RETRY_DISPATCH_S = 1.0
"""After a dispatch failed (the store could not be read), the next try comes this much later even if
nothing else wakes the dispatcher: the work it was about to lease is still queued."""

MAX_START_HOLD_S = 0.05
"""New runs wait for runs being read back to be woken (`Scheduler.waking`) at most this long at a
time: under a steady stream of wake-ups some read is always in flight, and new runs must still start."""

MAX_WRITE_BACKLOG = 512
"""Changes waiting for the store's writer beyond which the dispatcher leases nothing more until they
commit. Each lease soon brings a report that waits for its commit (a task, its run, futures, closures);
leasing faster than the store commits only piles those up, memory the allocator keeps after the burst."""


@dataclass(slots=True)
class Lease:
    execution_id: str
    items: Unit
    run: ActiveRun
    worker: WorkerConn
    # Set when the lease is granted (see Executor._leased).
    memo_base: int = 0
    # (id, payload, is_error); a payload is None until read back from the store (see `unread`).
    memos: list[tuple[str, bytes | None, bool]] = field(default_factory=list)
    # Step id -> the execution whose report the worker keeps its result from (sent by name only).
    reported: dict[str, str] = field(default_factory=dict)
    plan_only: bool = False
    slots: list[tuple[Slot, int]] = field(default_factory=list)
    # Checkpoints committed for this discovery so far (see Executor._checkpoint).
    checkpoints: int = 0

    @property
    def attempt(self) -> int:
        return max(item.attempt for item in self.items)

    @property
    def targets(self) -> list[str]:
        return [item.target for item in self.items if item.target]

    @property
    def unread(self) -> list[str]:
        """Ids of the memos to send whose payloads the run's state did not hold."""
        return [sid for sid, payload, _ in self.memos if payload is None and sid not in self.reported]


@dataclass(slots=True)
class Ready:
    """One function's ready work: runs under way first, then new runs, each in arrival order.

    New runs start only while no run under way has ready work: a run, once started, is finished
    before more are started, which also bounds how many runs a burst keeps in flight."""

    under_way: deque[Unit] = field(default_factory=deque)
    new: deque[Unit] = field(default_factory=deque)

    def __bool__(self) -> bool:
        return bool(self.under_way or self.new)

    def pop(self) -> Unit:
        return self.under_way.popleft() if self.under_way else self.new.popleft()

    def put_back(self, unit: Unit) -> None:
        """Return a unit just popped (or part of it): it is the next one out."""
        self.under_way.appendleft(unit)

    def ahead(self, n: int) -> Iterator[Unit]:
        """Up to `n` of the units under way `pop` gives next: new runs wait for every run under way, so
        reading them along with those would only hold them in memory longer (and they are read apart,
        `Scheduler._read_new_runs`)."""
        return itertools.islice(self.under_way, n)


@dataclass(eq=False, slots=True)
class WorkerConn:
    """One connected worker stream: what it serves, what it runs now, what it has seen."""

    id: str
    app_id: str
    name: str
    functions: frozenset[str]
    capacity: int
    # What to send down the stream, in order; None ends it.
    outbox: asyncio.Queue[Lease | Checkpointed | None] = field(default_factory=asyncio.Queue)
    inflight: dict[str, Lease] = field(default_factory=dict)
    # run id -> how many of the run's memos this stream was sent (the worker caches them).
    memos_held: dict[str, int] = field(default_factory=dict)
    # The worker keeps the results it reports (Register.keeps_reported); run id -> step id -> the
    # execution that reported a result since the run's last Execute here, recorded as sent.
    keeps_reported: bool = False
    reported: dict[str, dict[str, str]] = field(default_factory=dict)
    # When it last sent anything, in `time.monotonic()` seconds: liveness is measured in elapsed time,
    # so a wall clock set forward does not expire every worker at once, nor one set back keep a dead one.
    last_seen: float = field(default_factory=time.monotonic)

    @property
    def free(self) -> int:
        return self.capacity - len(self.inflight)


class Scheduler:
    def __init__(
        self,
        runs: ActiveRuns,
        store: Store,
        on_lease: Callable[[Lease], None],
        spec_of: Callable[[FunctionKey], FunctionSpec | None],
        read_payloads: Callable[[Lease], Awaitable[bool]],
    ) -> None:
        self._runs = runs
        self._store = store
        self._on_lease = on_lease
        self._read_payloads = read_payloads
        self._spec_of = spec_of
        self._concurrency = Concurrency()
        # Work waiting for a place under a full concurrency limit, by that limit's slot.
        self._blocked: dict[Slot, deque[Unit]] = defaultdict(deque)
        self._ready: dict[FunctionKey, Ready] = defaultdict(Ready)
        self._delayed: list[tuple[int, int, Unit]] = []
        self._workers: dict[FunctionKey, list[WorkerConn]] = defaultdict(list)
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = 0  # the due time `_timer` was armed for
        self._task: asyncio.Task[None] | None = None
        self._waking = 0
        self._held_since: float | None = None
        self._hold_timer: asyncio.TimerHandle | None = None
        # The read of new runs in flight (see `_read_new_runs`); after a failed one, until the retry.
        self._reading_new: asyncio.Task[None] | None = None
        self._new_read: set[str] = set()  # the runs the last read of new runs asked for

    # ---- work -------------------------------------------------------------------------------

    def add(self, unit: Unit, front: bool = False, new_run: bool = False) -> None:
        """Queue items of one run to be leased together (when due): at the front of the runs under
        way (`front`, work taken back), behind them (default), or as a new run's first execution."""
        if not unit:
            return
        due = max(item.available_ms for item in unit)
        if due > now_ms():
            heapq.heappush(self._delayed, (due, next(self._seq), unit))
            self._arm_timer()
            return
        ready = self._ready[unit[0].function_key]
        if front:
            ready.put_back(unit)
        elif new_run:
            ready.new.append(unit)
        else:
            ready.under_way.append(unit)
        self._wake.set()

    @contextlib.contextmanager
    def waking(self) -> Iterator[None]:
        """Around the read of runs about to be woken (sleeps that ended): new runs wait until it is
        done, up to MAX_START_HOLD_S at a time. Their wake-ups are under way work that is not queued
        yet; a burst of new runs leased meanwhile would take the worker slots and the engine's time
        they need, and a wake-up's lag is what sleeping users wait for."""
        self._waking += 1
        try:
            yield
        finally:
            self._waking -= 1
            self._wake.set()

    # ---- workers ----------------------------------------------------------------------------

    def attach(self, worker: WorkerConn) -> None:
        for fn in worker.functions:
            self._workers[(worker.app_id, fn)].append(worker)
        self._wake.set()

    def detach(self, worker: WorkerConn) -> list[Lease]:
        """Remove a worker; its unanswered executions go back to the front of their queues."""
        for fn in worker.functions:
            members = self._workers.get((worker.app_id, fn))
            if members and worker in members:
                members.remove(worker)
        lost = list(worker.inflight.values())
        worker.inflight.clear()
        for lease in lost:
            self.settle(lease, len(lease.items))
            self.add(lease.items, front=True)
        return lost

    def release(self, worker: WorkerConn, execution_id: str) -> Lease | None:
        """Take back the lease `execution_id` from `worker`; None when it does not hold it."""
        lease = worker.inflight.pop(execution_id, None)
        if lease is not None:
            self.settle(lease, len(lease.items))
            self._wake.set()
        return lease

    def settle(self, lease: Lease, n: int) -> None:
        """`n` of the lease's items are done: their places under concurrency limits free up."""
        if not lease.slots or n <= 0:
            return
        for slot in self._concurrency.give(lease.slots, n):
            waiting = self._blocked.pop(slot, None)
            while waiting:
                self.add(waiting.pop(), front=True)

    def connected(self, key: FunctionKey) -> int:
        return len(self._workers.get(key, ()))

    def forget_run(self, run: ActiveRun) -> None:
        """The run ended: workers need not remember what they were sent of it."""
        for worker in self._workers.get((run.app_id, run.function_id), ()):
            worker.memos_held.pop(run.id, None)
            worker.reported.pop(run.id, None)

    # ---- the loop ---------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="durably-dispatcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for timer in (self._timer, self._hold_timer):
            if timer is not None:
                timer.cancel()
        if self._reading_new is not None:
            self._reading_new.cancel()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._promote_due()
            try:
                await self._dispatch()
            except Exception:  # one bad run must not stop dispatching for everyone
                log.exception("dispatch failed; trying again in %g s", RETRY_DISPATCH_S)
                asyncio.get_running_loop().call_later(RETRY_DISPATCH_S, self._wake.set)

    def _arm_timer(self) -> None:
        """Wake the dispatcher when the earliest delayed unit comes due. A timer armed for that time or an
        earlier one stays: under a burst of wake-ups queued ahead of their deadlines (engine/wakes.py)
        most units come due after the earliest, and re-arming for each cost a cancel and a new timer."""
        if not self._delayed:
            return
        due = self._delayed[0][0]
        if self._timer is not None:
            if self._timer_due <= due:
                return  # it rings no later than `due`, and the dispatcher arms the next one then
            self._timer.cancel()
        # Due times are wall-clock instants; look again at least every MAX_WAIT_S (engine/alarms.py).
        delay = min(max(0.0, (due - now_ms()) / 1000), MAX_WAIT_S)
        self._timer_due = due
        self._timer = asyncio.get_running_loop().call_later(delay, self._timer_rang)

    def _timer_rang(self) -> None:
        self._timer = None
        self._wake.set()

    def _promote_due(self) -> None:
        now = now_ms()
        while self._delayed and self._delayed[0][0] <= now:
            _, _, unit = heapq.heappop(self._delayed)
            self._ready[unit[0].function_key].under_way.append(unit)
        self._arm_timer()

    async def _dispatch(self) -> None:
        """Runs under way of every function first, then new runs. Functions take turns: one that
        leased goes behind those that could not, so no function's backlog holds another's work back
        on the workers they share."""
        for new_runs in (False, True):
            if new_runs and self._starts_held():
                return
            for key in list(self._ready):
                ready = self._ready.get(key)
                if ready is None:
                    continue
                leased = await self._lease(key, ready, new_runs)
                if self._ready.get(key) is ready and (leased or not ready):
                    del self._ready[key]
                    if ready:
                        self._ready[key] = ready

    def _starts_held(self) -> bool:
        """Whether new runs wait for runs being woken (see `waking`); when a hold ends by its time
        limit, new runs get this dispatch and the next hold starts afresh. One timer per hold, armed
        as it starts, wakes the dispatcher at its limit."""
        if self._waking:
            now = time.monotonic()
            if self._held_since is None:
                self._held_since = now
                self._hold_timer = asyncio.get_running_loop().call_later(MAX_START_HOLD_S, self._wake.set)
            if now - self._held_since < MAX_START_HOLD_S:
                return True
        self._held_since = None
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        return False

    async def _lease(self, key: FunctionKey, queue: Ready, new_runs: bool) -> int:
        """Lease `key`'s ready work (runs under way; also new runs if `new_runs`) to its free
        workers; how many units it leased."""
        leased = 0
        while queue.under_way or (new_runs and queue.new):
            free = [w for w in self._workers.get(key, ()) if w.free > 0]
            if not free:
                break
            if self._store.writer.backlog > MAX_WRITE_BACKLOG:
                await self._store.writer.below(MAX_WRITE_BACKLOG // 2)
                continue
            if not queue.under_way and self._runs.cached(queue.new[0][0].run_id) is None:
                if queue.new[0][0].run_id not in self._new_read:
                    self._read_new_runs(queue)
                    break
                queue.pop()  # read, and not in the store: the run is gone
                continue
            unit = queue.pop()
            run = self._runs.cached(unit[0].run_id)
            if run is None:
                # Not in memory: read it and the next ones this queue will want in one trip.
                ahead = queue.ahead(LOAD_BATCH - 1)
                try:
                    await self._runs.load_many([unit[0].run_id, *(u[0].run_id for u in ahead)])
                except Exception:
                    queue.put_back(unit)  # still owed: it goes first when dispatching resumes
                    raise
                run = self._runs.cached(unit[0].run_id)
            if run is None or run.status.ended:
                continue
            free = [w for w in self._workers.get(key, ()) if w.free > 0]  # the load may have awaited
            if not free:
                queue.put_back(unit)
                break
            unit = self._within_limits(run, unit, queue)
            if not unit:
                continue
            leased += 1
            free.sort(key=lambda w: w.free, reverse=True)
            # Planned steps spread over the free workers so they really run at the same time.
            shares = min(len(free), len(unit))
            for n, worker in enumerate(free[:shares]):
                part = unit[n::shares]
                lease = Lease(f"{part[0].id}.{next(self._seq)}", part, run, worker, slots=run.slots or [])
                self._concurrency.take(lease.slots, len(part))
                worker.inflight[lease.execution_id] = lease
                self._on_lease(lease)
                # Big payloads the run does not hold in memory are read first (here, so that leases
                # still reach each worker in the order they were granted).
                if not lease.unread or await self._read_payloads(lease):
                    worker.outbox.put_nowait(lease)
        return leased

    def _read_new_runs(self, queue: Ready) -> None:
        """Read the next `LOAD_BATCH` new runs of `queue` into memory, one read at a time, without the
        dispatcher waiting for it: work under way (a wake-up coming due) is leased meanwhile, where it
        waited for the read (W6: up to 45 ms, a fifth of the dispatcher's time)."""
        if self._reading_new is not None:
            return
        run_ids = [unit[0].run_id for unit in itertools.islice(queue.new, LOAD_BATCH)]
        self._reading_new = task = asyncio.get_running_loop().create_task(self._runs.load_many(run_ids))
        task.add_done_callback(functools.partial(self._new_runs_read, set(run_ids)))

    def _new_runs_read(self, run_ids: set[str], task: asyncio.Task[None] | None = None) -> None:
        """The read of `run_ids` ended (no `task`: the wait after a failed one did)."""
        if task is not None and not task.cancelled() and task.exception() is not None:
            log.error("could not read new runs; trying again in %g s", RETRY_DISPATCH_S, exc_info=task.exception())
            asyncio.get_running_loop().call_later(RETRY_DISPATCH_S, self._new_runs_read, set())
            return
        if task is not None and not task.cancelled():
            self._new_read = run_ids
        self._reading_new = None
        self._wake.set()

    def _within_limits(self, run: ActiveRun, unit: Unit, queue: Ready) -> Unit:
        """The part of `unit` its function's concurrency limits let start now; the rest waits."""
        if run.slots is None:
            spec = self._spec_of(unit[0].function_key)
            run.slots = slots_of(spec, run.event) if spec is not None and spec.concurrency else []
        if not run.slots:
            return unit
        room, full = self._concurrency.room(run.slots)
        if room == 0:
            assert full is not None
            self._blocked[full].append(unit)
            return []
        if room < len(unit):
            queue.put_back(unit[room:])
        return unit[:room]
