"""The executor: the one object the gRPC services talk to.

It owns the flow of DESIGN.md: events in -> runs created -> executions dispatched ->
reports merged -> runs finished. Every state change is committed before anyone is told.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass

from durably_server.engine.deadlines import Deadline, Deadlines
from durably_server.engine.merge import Merge, merge_report
from durably_server.engine.metrics import Metrics
from durably_server.engine.registry import Registry
from durably_server.engine.retry import RetryPolicy
from durably_server.engine.runs import ActiveRun, ActiveRuns, Discovery, new_state
from durably_server.engine.scheduler import Lease, Scheduler, WorkerConn
from durably_server.engine.watch import RunWatch
from durably_server.ids import new_id, now_ms
from durably_server.model import (
    Event,
    ExecutionReport,
    Failure,
    FunctionSpec,
    QueueItem,
    RunRecord,
    RunStatus,
    StepRecord,
    StepStatus,
)
from durably_server.store import Store
from durably_server.store import records as sql

log = logging.getLogger("durably.executor")

# Emitted when a run fails; starts the function's on_failure handler and any listener.
FAILED_EVENT = "durably/function.failed"


@dataclass(frozen=True, slots=True)
class SendResult:
    ids: list[str]
    run_ids: list[str]


class Executor:
    def __init__(
        self,
        store: Store,
        policy: RetryPolicy | None = None,
        heartbeat_ms: int = 5000,
        worker_timeout_ms: int = 15_000,
    ) -> None:
        self.store = store
        self.policy = policy or RetryPolicy()
        self.heartbeat_ms = heartbeat_ms
        self.worker_timeout_ms = worker_timeout_ms
        self._workers: set[WorkerConn] = set()
        self._watcher: asyncio.Task[None] | None = None
        self.registry = Registry(store.read_now(sql.load_functions))
        self.runs = ActiveRuns(store)
        self.watch = RunWatch()
        self.metrics = Metrics()
        self.scheduler = Scheduler(self.runs.get, self._leased, self.registry.get)
        self.deadlines = Deadlines(self._time_out)
        for item in store.read_now(sql.load_queue):
            self.scheduler.add([item])
        if any(spec.start_timeout_ms or spec.finish_timeout_ms for spec in self.registry.all()):
            for run in store.read_now(sql.load_unfinished_runs):
                self._add_deadlines(run)

    def _add_deadlines(self, run: RunRecord) -> None:
        spec = self.registry.get((run.app_id, run.function_id))
        if spec is None:
            return
        if spec.start_timeout_ms and run.status is RunStatus.QUEUED:
            self.deadlines.add(run.id, Deadline.START, run.created_ms + spec.start_timeout_ms)
        if spec.finish_timeout_ms and run.started_ms:
            self.deadlines.add(run.id, Deadline.FINISH, run.started_ms + spec.finish_timeout_ms)

    def start(self) -> None:
        self.scheduler.start()
        self.deadlines.start()
        self._watcher = asyncio.get_running_loop().create_task(self._expire_silent_workers())

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        self.deadlines.stop()
        await self.scheduler.stop()

    # ---- events -----------------------------------------------------------------------------

    async def send_events(self, events: list[Event]) -> SendResult:
        now = now_ms()
        plan = [(event, self.registry.triggered_by(event.name)) for event in events]

        def write(conn: sqlite3.Connection) -> list[Created]:
            created: list[Created] = []
            for event, specs in plan:
                _insert_event(conn, event, specs, now, created)
            return created

        created = await self.store.write(write)
        self.metrics.events_received += len(events)
        self._runs_created(created)
        return SendResult([event.id for event in events], [run.id for run, _, _ in created])

    def _runs_created(self, created: list[Created]) -> None:
        """After the commit: hold the new runs in memory and queue their first execution."""
        self.metrics.runs_created += len(created)
        for run, item, event in created:
            active = ActiveRun(run.id, run.app_id, run.function_id, event, new_state(event), RunStatus.QUEUED)
            active.discovery = Discovery.QUEUED
            self.runs.add(active)
            spec = self.registry.get(item.function_key)
            if spec is not None and spec.start_timeout_ms:
                self.deadlines.add(run.id, Deadline.START, run.created_ms + spec.start_timeout_ms)
            self.scheduler.add([item])

    # ---- workers ----------------------------------------------------------------------------

    async def connect_worker(self, app_id: str, name: str, specs: list[FunctionSpec], capacity: int) -> WorkerConn:
        now = now_ms()
        await self.store.write(lambda conn: sql.upsert_functions(conn, specs, now))
        for spec in specs:
            self.registry.put(spec)
        worker = WorkerConn(new_id(), app_id, name, frozenset(s.id for s in specs), capacity, last_seen_ms=now)
        self.scheduler.attach(worker)
        self._workers.add(worker)
        log.info("worker %s (%s) connected for app %s: %d functions", worker.id, name, app_id, len(specs))
        return worker

    def disconnect_worker(self, worker: WorkerConn) -> None:
        if worker not in self._workers:
            return
        self._workers.discard(worker)
        lost = self.scheduler.detach(worker)
        for lease in lost:
            _unlease(lease)
        worker.outbox.put_nowait(None)
        log.info("worker %s disconnected; %d executions re-queued", worker.id, len(lost))

    async def _expire_silent_workers(self) -> None:
        """A worker that stops heartbeating loses its leases, so its work runs elsewhere.

        Its stream is closed too; anything it sends for those leases later is refused,
        so a step's result is recorded once even when the silent worker wakes up.
        """
        while True:
            await asyncio.sleep(min(1.0, self.worker_timeout_ms / 4000))
            deadline = now_ms() - self.worker_timeout_ms
            for worker in [w for w in self._workers if w.last_seen_ms < deadline]:
                log.warning(
                    "worker %s (%s) sent nothing for %d ms: lease expired",
                    worker.id,
                    worker.name,
                    self.worker_timeout_ms,
                )
                self.disconnect_worker(worker)

    def _leased(self, lease: Lease) -> None:
        """Fill in what the execution carries: only the memos this worker has not been sent."""
        run, worker = lease.run, lease.worker
        lease.memo_base = worker.memos_held.get(run.id, 0)
        lease.memos = run.state.memos_from(lease.memo_base)
        worker.memos_held[run.id] = lease.memo_base + len(lease.memos)
        lease.plan_only = bool(run.pending)
        if not lease.targets:
            run.discovery = Discovery.LEASED
        self.metrics.executions_dispatched += 1
        self.metrics.memos_sent += len(lease.memos)
        self.metrics.memo_bytes_sent += sum(len(payload) for _, payload, _ in lease.memos)
        if run.status is RunStatus.QUEUED:
            run.status = RunStatus.RUNNING
            now = now_ms()
            spec = self.registry.get(lease.items[0].function_key)
            if spec is not None and spec.finish_timeout_ms:
                self.deadlines.add(run.id, Deadline.FINISH, now + spec.finish_timeout_ms)
            started = self.store.write(lambda conn: sql.mark_started(conn, run.id, now))
            started.add_done_callback(_log_failure)
            self.watch.changed(run.id)

    async def report(self, worker: WorkerConn, report: ExecutionReport) -> None:
        """Merge a worker's report into its run, commit, and queue what comes next."""
        worker.last_seen_ms = now_ms()
        if report.partial:
            lease = worker.inflight.get(report.execution_id)
        else:
            lease = self.scheduler.release(worker, report.execution_id)
        if lease is None:
            log.warning("refused a result for execution %s: not leased to worker %s", report.execution_id, worker.id)
            return
        run = lease.run
        if report.need_full_state and lease.memo_base > 0:
            # The worker dropped its copy of the run's memos: send the same work again, whole.
            worker.memos_held.pop(run.id, None)
            _unlease(lease)
            self.scheduler.add(lease.items, front=True)
            return
        async with run.lock:
            if run.status.ended:
                return
            items = lease.items
            if report.partial:
                # Only the targets reported so far are settled; the rest of the lease runs on.
                answered = {op.id for op in report.ops}
                items = [item for item in lease.items if item.target and item.target in answered]
            if not items:
                return  # every target was settled by earlier partial reports
            spec = self.registry.get(items[0].function_key)
            max_attempts = spec.max_attempts if spec else 1
            optimize = spec.optimize_parallelism if spec else False
            merge = merge_report(run, items, report, max_attempts, optimize, self.policy)
            if report.partial:
                lease.items = [item for item in lease.items if item not in items]
                self.scheduler.settle(lease, len(items))
            was_discovery = any(not item.target for item in items)
            if was_discovery:
                run.discovery = Discovery.NONE
                merge.discover = merge.discover or (run.rediscover and merge.status is None)
                run.rediscover = False
            retry_discovery = any(not item.target for item, _, _ in merge.retries)
            if merge.discover and run.discovery is Discovery.LEASED:
                run.rediscover = True  # the running discovery may miss this result: run one more after it
            new_discovery = merge.discover and run.discovery is Discovery.NONE and not retry_discovery
            failed = self._failure_event(run, spec, merge.error) if merge.status is RunStatus.FAILED else None
            try:
                queued, created = await self.store.write(
                    lambda conn: _commit(conn, run, items, merge, new_discovery, failed)
                )
            except Exception:
                # Nothing was committed: the queued rows still stand, so run the execution again.
                log.exception("could not commit the report of run %s; the execution will run again", run.id)
                if not report.partial:
                    _unlease(lease)
                self.scheduler.add(items)
                return
            if merge.steps:
                run.state.record_batch([_memo(step) for step in merge.steps])
                run.pending.difference_update(step.id for step in merge.steps)
                self.metrics.steps_recorded += len(merge.steps)
            if merge.status is not None:
                self._ended(run, merge.status, merge.error)
                self._runs_created(created)
                return
            run.pending.update(op.id for op in merge.planned)
            if retry_discovery or new_discovery:
                run.discovery = Discovery.QUEUED
            for unit in queued:
                self.scheduler.add(unit)

    def _failure_event(
        self, run: ActiveRun, spec: FunctionSpec | None, error: Failure | None
    ) -> tuple[Event, list[FunctionSpec]] | None:
        """The `durably/function.failed` event a failed run emits, and the functions it starts:
        the run's own on_failure handler and any function triggered by that event name.

        A run started by such an event emits none, so a failing failure handler cannot loop.
        """
        if run.event.name == FAILED_EVENT:
            return None
        specs = self.registry.triggered_by(FAILED_EVENT)
        handler = self.registry.get((run.app_id, spec.on_failure)) if spec is not None and spec.on_failure else None
        if handler is not None and handler not in specs:
            specs.append(handler)
        if not specs:
            return None
        data = {
            "app_id": run.app_id,
            "function_id": run.function_id,
            "run_id": run.id,
            "event": {
                "id": run.event.id,
                "name": run.event.name,
                "data": json.loads(run.event.data_json),
                "ts": run.event.ts_ms,
            },
            "error": None if error is None else {"name": error.name, "message": error.message, "stack": error.stack},
        }
        event = Event(f"{run.id}.failed", FAILED_EVENT, json.dumps(data).encode(), now_ms())
        return event, specs

    def _ended(self, run: ActiveRun, status: RunStatus, error: Failure | None) -> None:
        if status is RunStatus.COMPLETED:
            self.metrics.runs_completed += 1
        elif status is RunStatus.FAILED:
            self.metrics.runs_failed += 1
            if error is not None:
                log.info("run %s failed: %s: %s", run.id, error.name, error.message)
        run.status = status
        self.runs.evict(run.id)
        self.scheduler.forget_run(run)
        self.watch.changed(run.id)

    def heartbeat(self, worker: WorkerConn) -> None:
        worker.last_seen_ms = now_ms()

    # ---- runs -------------------------------------------------------------------------------

    async def get_run(self, run_id: str) -> RunRecord | None:
        return await self.store.read(lambda conn: sql.load_run(conn, run_id))

    async def list_runs(self, where: sql.RunFilter) -> list[RunRecord]:
        return await self.store.read(lambda conn: sql.list_runs(conn, where))

    async def wait_for_run(self, run_id: str, timeout: float) -> RunRecord | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            changed = self.watch.subscribe(run_id)
            run = await self.get_run(run_id)
            remaining = deadline - loop.time()
            if run is None or run.status.ended or remaining <= 0:
                return run
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                pass

    async def watch_run(self, run_id: str) -> AsyncIterator[RunRecord]:
        """Yield the run now and after each change, until it has ended."""
        last: tuple[RunStatus, int] | None = None
        while True:
            changed = self.watch.subscribe(run_id)
            run = await self.get_run(run_id)
            if run is None:
                return
            if (run.status, len(run.steps)) != last:
                last = (run.status, len(run.steps))
                yield run
            if run.status.ended:
                return
            await changed.wait()

    async def cancel_run(self, run_id: str, reason: Failure | None = None) -> tuple[RunRecord, bool] | None:
        now = now_ms()
        cancelled = await self.store.write(
            lambda conn: sql.finish_run(conn, run_id, RunStatus.CANCELLED, now, error=reason)
        )
        if cancelled:
            run = self.runs.cached(run_id)
            if run is not None:
                self._ended(run, RunStatus.CANCELLED, reason)
            else:
                self.watch.changed(run_id)
        record = await self.get_run(run_id)
        return None if record is None else (record, cancelled)

    async def _time_out(self, run_id: str, kind: Deadline) -> None:
        run = await self.get_run(run_id)
        if run is None or run.status.ended:
            return
        spec = self.registry.get((run.app_id, run.function_id))
        if spec is None:
            return
        if kind is Deadline.START:
            if run.status is not RunStatus.QUEUED:
                return  # it started in time
            reason = Failure(
                "StartTimeout",
                f"the run did not start within {spec.start_timeout_ms} ms of being created (timeouts.start)",
                code="start_timeout",
                non_retriable=True,
            )
        else:
            reason = Failure(
                "FinishTimeout",
                f"the run did not finish within {spec.finish_timeout_ms} ms of starting (timeouts.finish)",
                code="finish_timeout",
                non_retriable=True,
            )
        log.info("run %s: %s", run_id, reason.message)
        await self.cancel_run(run_id, reason)

    def functions(self, app_id: str = "") -> list[tuple[FunctionSpec, int]]:
        return [(spec, self.scheduler.connected(spec.key)) for spec in self.registry.all(app_id)]


Created = tuple[RunRecord, QueueItem, Event]


def _insert_event(
    conn: sqlite3.Connection, event: Event, specs: list[FunctionSpec], now: int, created: list[Created]
) -> None:
    """Store `event` and a run of each function it triggers (none when its id was seen before)."""
    if not sql.insert_event(conn, event, now):
        return
    for spec in specs:
        run = RunRecord(new_id(now), spec.app_id, spec.id, event.id, RunStatus.QUEUED, now)
        created.append((run, sql.insert_run(conn, run), event))


def _commit(
    conn: sqlite3.Connection,
    run: ActiveRun,
    items: list[QueueItem],
    merge: Merge,
    discover: bool,
    failed: tuple[Event, list[FunctionSpec]] | None,
) -> tuple[list[list[QueueItem]], list[Created]]:
    """The whole effect of one report, in one transaction: the units to schedule and the runs
    a failure started."""
    sql.dequeue(conn, [item.id for item in items])
    if merge.steps:
        sql.insert_steps(conn, run.state.step_count, merge.steps)
    now = now_ms()
    if merge.status is not None:
        created: list[Created] = []
        if sql.finish_run(conn, run.id, merge.status, now, merge.output_json, merge.error) and failed:
            _insert_event(conn, *failed, now, created)
        return [], created

    def enqueue(attempt: int, target: str = "", delay_ms: int = 0) -> QueueItem | None:
        return sql.enqueue(conn, run.id, run.app_id, run.function_id, attempt, now + delay_ms, target)

    units: list[list[QueueItem]] = []
    for item, attempt, delay_ms in merge.retries:
        retried = enqueue(attempt, item.target, delay_ms)
        if retried is not None:
            units.append([retried])
    planned = [enqueue(0, op.id) for op in merge.planned]
    units.append([item for item in planned if item is not None])
    if discover:
        found = enqueue(0)
        if found is not None:
            units.append([found])
    return [unit for unit in units if unit], []


def _memo(step: StepRecord) -> tuple[str, str, int, bytes, bool]:
    if step.status is StepStatus.COMPLETED:
        assert step.output_json is not None
        return (step.id, step.name, step.index, step.output_json, False)
    assert step.error is not None
    return (step.id, step.name, step.index, step.error.to_json(), True)


def _unlease(lease: Lease) -> None:
    """A lease ended without a report: its discovery (if any) is queued again."""
    if not lease.targets:
        lease.run.discovery = Discovery.QUEUED


def _log_failure(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("could not mark a run started: %s", future.exception())
