"""The dispatcher: hands queued executions to connected workers with free capacity.

Ready work waits in one FIFO per function; work with a future `available_ms` waits in
a heap and a single timer wakes the dispatcher when the earliest comes due. An
execution leased to a worker carries a fresh `execution_id`; only the worker holding
that lease may answer it, so a result can never be recorded twice.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from durably_server.engine.runs import ActiveRun
from durably_server.ids import now_ms
from durably_server.model import QueueItem

log = logging.getLogger("durably.scheduler")

FunctionKey = tuple[str, str]


@dataclass(slots=True)
class Lease:
    execution_id: str
    item: QueueItem
    run: ActiveRun
    worker: WorkerConn
    # The memos this execution carries: the run's outcomes from position `memo_base` on.
    memo_base: int = 0
    memos: list[tuple[str, bytes, bool]] = field(default_factory=list)


@dataclass(eq=False, slots=True)
class WorkerConn:
    """One connected worker stream: what it serves and what it is running now."""

    id: str
    app_id: str
    name: str
    functions: frozenset[str]
    capacity: int
    outbox: asyncio.Queue[Lease | None] = field(default_factory=asyncio.Queue)
    inflight: dict[str, Lease] = field(default_factory=dict)
    last_seen_ms: int = 0

    @property
    def free(self) -> int:
        return self.capacity - len(self.inflight)


class Scheduler:
    def __init__(
        self,
        load_run: Callable[[str], Awaitable[ActiveRun | None]],
        on_lease: Callable[[Lease], None],
    ) -> None:
        self._load_run = load_run
        self._on_lease = on_lease
        self._ready: dict[FunctionKey, deque[QueueItem]] = defaultdict(deque)
        self._delayed: list[tuple[int, int, QueueItem]] = []
        self._workers: dict[FunctionKey, list[WorkerConn]] = defaultdict(list)
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None

    # ---- work -------------------------------------------------------------------------------

    def add(self, item: QueueItem, front: bool = False) -> None:
        if item.available_ms > now_ms():
            heapq.heappush(self._delayed, (item.available_ms, next(self._seq), item))
            self._arm_timer()
            return
        queue = self._ready[item.function_key]
        if front:
            queue.appendleft(item)
        else:
            queue.append(item)
        self._wake.set()

    def queued(self) -> int:
        return sum(len(q) for q in self._ready.values()) + len(self._delayed)

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
            self.add(lease.item, front=True)
        return lost

    def release(self, worker: WorkerConn, execution_id: str) -> Lease | None:
        """Take back the lease `execution_id` from `worker`; None when it does not hold it."""
        lease = worker.inflight.pop(execution_id, None)
        if lease is not None:
            self._wake.set()
        return lease

    def connected(self, key: FunctionKey) -> int:
        return len(self._workers.get(key, ()))

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
        if self._timer is not None:
            self._timer.cancel()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._promote_due()
            try:
                await self._dispatch()
            except Exception:  # one bad run must not stop dispatching for everyone
                log.exception("dispatch failed")

    def _arm_timer(self) -> None:
        if not self._delayed:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, (self._delayed[0][0] - now_ms()) / 1000)
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_later(delay, self._wake.set)

    def _promote_due(self) -> None:
        now = now_ms()
        while self._delayed and self._delayed[0][0] <= now:
            _, _, item = heapq.heappop(self._delayed)
            self._ready[item.function_key].append(item)
        self._arm_timer()

    async def _dispatch(self) -> None:
        for key, queue in list(self._ready.items()):
            while queue:
                worker = self._pick(key)
                if worker is None:
                    break
                item = queue.popleft()
                run = await self._load_run(item.run_id)
                if run is None or run.status.ended:
                    continue
                if worker.free <= 0 or worker not in self._workers.get(key, ()):
                    queue.appendleft(item)  # the worker went away while the run loaded
                    continue
                lease = Lease(f"{item.id}.{next(self._seq)}", item, run, worker)
                worker.inflight[lease.execution_id] = lease
                worker.outbox.put_nowait(lease)
                self._on_lease(lease)
            if not queue:
                del self._ready[key]

    def _pick(self, key: FunctionKey) -> WorkerConn | None:
        best: WorkerConn | None = None
        for worker in self._workers.get(key, ()):
            if worker.free > 0 and (best is None or worker.free > best.free):
                best = worker
        return best
