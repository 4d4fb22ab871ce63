"""The executor: the one object the gRPC services talk to.

It owns the flow of DESIGN.md: events in -> runs created -> executions dispatched ->
reports merged -> runs finished. Every state change is committed before anyone is told.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass

from durably_server.engine.merge import Merge, merge_report
from durably_server.engine.metrics import Metrics
from durably_server.engine.registry import Registry
from durably_server.engine.runs import ActiveRun, ActiveRuns, new_state
from durably_server.engine.scheduler import Lease, Scheduler, WorkerConn
from durably_server.engine.watch import RunWatch
from durably_server.ids import new_id, now_ms
from durably_server.model import (
    Event,
    ExecutionReport,
    FunctionSpec,
    QueueItem,
    RunRecord,
    RunStatus,
    StepStatus,
)
from durably_server.store import Store
from durably_server.store import records as sql

log = logging.getLogger("durably.executor")


@dataclass(frozen=True, slots=True)
class SendResult:
    ids: list[str]
    run_ids: list[str]


class Executor:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.registry = Registry(store.read_now(sql.load_functions))
        self.runs = ActiveRuns(store)
        self.watch = RunWatch()
        self.metrics = Metrics()
        self.scheduler = Scheduler(self.runs.get, self._leased)
        for item in store.read_now(sql.load_queue):
            self.scheduler.add(item)

    def start(self) -> None:
        self.scheduler.start()

    async def stop(self) -> None:
        await self.scheduler.stop()

    # ---- events -----------------------------------------------------------------------------

    async def send_events(self, events: list[Event]) -> SendResult:
        now = now_ms()
        plan = [(event, self.registry.triggered_by(event.name)) for event in events]

        def write(conn: sqlite3.Connection) -> list[tuple[RunRecord, QueueItem]]:
            created = []
            for event, specs in plan:
                if not sql.insert_event(conn, event, now):
                    continue  # the same id was sent before: it already has its runs
                for spec in specs:
                    run = RunRecord(new_id(now), spec.app_id, spec.id, event.id, RunStatus.QUEUED, now)
                    created.append((run, sql.insert_run(conn, run)))
            return created

        created = await self.store.write(write)
        self.metrics.events_received += len(events)
        self.metrics.runs_created += len(created)
        events_by_id = {event.id: event for event in events}
        for run, item in created:
            event = events_by_id[run.event_id]
            self.runs.add(ActiveRun(run.id, run.app_id, run.function_id, event, new_state(event), RunStatus.QUEUED))
            self.scheduler.add(item)
        return SendResult([event.id for event in events], [run.id for run, _ in created])

    # ---- workers ----------------------------------------------------------------------------

    async def connect_worker(self, app_id: str, name: str, specs: list[FunctionSpec], capacity: int) -> WorkerConn:
        now = now_ms()
        await self.store.write(lambda conn: sql.upsert_functions(conn, specs, now))
        for spec in specs:
            self.registry.put(spec)
        worker = WorkerConn(new_id(), app_id, name, frozenset(s.id for s in specs), capacity, last_seen_ms=now)
        self.scheduler.attach(worker)
        log.info("worker %s (%s) connected for app %s: %d functions", worker.id, name, app_id, len(specs))
        return worker

    def disconnect_worker(self, worker: WorkerConn) -> None:
        lost = self.scheduler.detach(worker)
        worker.outbox.put_nowait(None)
        log.info("worker %s disconnected; %d executions re-queued", worker.id, len(lost))

    def _leased(self, lease: Lease) -> None:
        run = lease.run
        lease.memos = run.state.memos()
        self.metrics.executions_dispatched += 1
        self.metrics.memos_sent += len(lease.memos)
        self.metrics.memo_bytes_sent += sum(len(payload) for _, payload, _ in lease.memos)
        if run.status is RunStatus.QUEUED:
            run.status = RunStatus.RUNNING
            started = self.store.write(lambda conn: sql.mark_started(conn, run.id, now_ms()))
            started.add_done_callback(_log_failure)
            self.watch.changed(run.id)

    async def report(self, worker: WorkerConn, report: ExecutionReport) -> None:
        """Merge a worker's report into its run, commit, and queue what comes next."""
        worker.last_seen_ms = now_ms()
        lease = self.scheduler.release(worker, report.execution_id)
        if lease is None:
            log.warning("refused a result for execution %s: not leased to worker %s", report.execution_id, worker.id)
            return
        run, item = lease.run, lease.item
        async with run.lock:
            if run.status.ended:
                return
            spec = self.registry.get(item.function_key)
            max_attempts = spec.max_attempts if spec else 1
            merge = merge_report(run, item, report, max_attempts)
            try:
                next_item = await self.store.write(lambda conn: _commit(conn, run, item, merge))
            except Exception:
                # Nothing was committed: the queued row still stands, so run the execution again.
                log.exception("could not commit the report of run %s; the execution will run again", run.id)
                self.scheduler.add(item)
                return
            for step in merge.steps:
                payload = step.output_json if step.status is StepStatus.COMPLETED else None
                if payload is None:
                    assert step.error is not None
                    payload = step.error.to_json()
                run.state.record(step.id, step.name, step.index, payload, step.status is StepStatus.FAILED)
            self.metrics.steps_recorded += len(merge.steps)
            if merge.status is not None:
                if merge.status is RunStatus.COMPLETED:
                    self.metrics.runs_completed += 1
                else:
                    self.metrics.runs_failed += 1
                run.status = merge.status
                self.runs.evict(run.id)
                self.watch.changed(run.id)
                if merge.status is RunStatus.FAILED and merge.error is not None:
                    log.info("run %s failed: %s: %s", run.id, merge.error.name, merge.error.message)
            if next_item is not None:
                self.scheduler.add(next_item)

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

    async def cancel_run(self, run_id: str) -> tuple[RunRecord, bool] | None:
        now = now_ms()
        cancelled = await self.store.write(lambda conn: sql.finish_run(conn, run_id, RunStatus.CANCELLED, now))
        if cancelled:
            run = self.runs.cached(run_id)
            if run is not None:
                run.status = RunStatus.CANCELLED
                self.runs.evict(run_id)
            self.watch.changed(run_id)
        record = await self.get_run(run_id)
        return None if record is None else (record, cancelled)

    def functions(self, app_id: str = "") -> list[tuple[FunctionSpec, int]]:
        return [(spec, self.scheduler.connected(spec.key)) for spec in self.registry.all(app_id)]


def _commit(conn: sqlite3.Connection, run: ActiveRun, item: QueueItem, merge: Merge) -> QueueItem | None:
    """The whole effect of one report, in one transaction."""
    sql.dequeue(conn, item.id)
    if merge.steps:
        sql.insert_steps(conn, run.state.step_count, merge.steps)
    now = now_ms()
    if merge.status is not None:
        sql.finish_run(conn, run.id, merge.status, now, merge.output_json, merge.error)
        return None
    if merge.next_attempt is None:
        return None
    return sql.enqueue(conn, run.id, run.app_id, run.function_id, merge.next_attempt, now)


def _log_failure(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("could not mark a run started: %s", future.exception())
