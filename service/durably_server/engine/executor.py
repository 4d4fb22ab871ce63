"""The executor: the one object the gRPC services talk to.

It owns the flow of DESIGN.md: events in -> runs created -> executions dispatched ->
reports merged -> runs finished. Every state change is committed before anyone is told.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

from durably_server._core import CoreError, LimitExceeded
from durably_server.engine.alarms import Alarms, IdHeap
from durably_server.engine.coordination import INVOKE, SLEEP, Planned, Resolved, WaitIndex, plan
from durably_server.engine.cron import Cron
from durably_server.engine.marks import Mark, RunningMarks, store_marks
from durably_server.engine.merge import Merge, merge_checkpoint, merge_report
from durably_server.engine.metrics import Metrics
from durably_server.engine.registry import Registry
from durably_server.engine.retry import STORE_RETRY, RetryPolicy
from durably_server.engine.runs import (
    MAX_HELD_NEW,
    MAX_HELD_WOKEN,
    ActiveRun,
    ActiveRuns,
    Discovery,
    new_state,
    record_steps,
)
from durably_server.engine.scheduler import Lease, Scheduler, WorkerConn
from durably_server.engine.wakes import due_by, hold_wakes, read_at, store_steps, wake_item
from durably_server.engine.watch import RunWatch
from durably_server.engine.writes import Created, Effects, Writes
from durably_server.ids import new_id, now_ms
from durably_server.model import (
    Checkpointed,
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
from durably_server.store.writer import WriteOp

log = logging.getLogger("durably.executor")
T = TypeVar("T")
Lone = tuple[int, str, str, sql.Timer]
"""A lone sleep: timer id, app id, function id, timer (`sql.lone_sleeps`)."""


class Deadline(Enum):
    """A run's start and finish timeouts: derived from the store, so rebuilt at start-up."""

    START = "start"
    FINISH = "finish"


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
        self.marks = RunningMarks(self._store_running)
        self._reporting = 0  # reports being merged now (a stop waits for them)
        self._draining = False  # stopping: checkpoints are refused so that executions end (see drain)
        self._settled = asyncio.Event()  # set whenever a report was merged or a worker left
        self._watcher: asyncio.Task[None] | None = None
        self.registry = Registry(store.read_now(sql.load_functions))
        self.runs = ActiveRuns(store)
        self.watch = RunWatch()
        self.metrics = Metrics()
        self.scheduler = Scheduler(self.runs, store, self._leased, self.registry.get, self._read_payloads)
        self.deadlines: Alarms[tuple[str, Deadline]] = Alarms(self._time_out)
        self.writes = Writes(self.registry.get, WaitIndex(store.read_now(sql.wait_paths)))
        # Row ids only: a parked run costs the daemon's memory one int in a heap until its timer is due.
        # Sleeps fire early, to read their runs back before the deadline (engine/wakes.py).
        self.timers: Alarms[int] = Alarms(self._timers_fired, IdHeap())
        self.sleeps: Alarms[int] = Alarms(self._sleeps_ending, IdHeap())
        self.cron = Cron(self.registry.get, self._cron_tick)
        self.cron.sync(self.registry.all())
        for due_ms, timer_id, kind in store.read_now(sql.load_timers):
            self._arm_timer(due_ms, timer_id, kind)
        for item, new_run in store.read_now(sql.load_queue):
            self.scheduler.add([item], new_run=new_run)
        if any(spec.start_timeout_ms or spec.finish_timeout_ms for spec in self.registry.all()):
            for run in store.read_now(sql.load_unfinished_runs):
                self._add_deadlines(run)

    def _add_deadlines(self, run: RunRecord) -> None:
        spec = self.registry.get((run.app_id, run.function_id))
        if spec is None:
            return
        if spec.start_timeout_ms and run.status is RunStatus.QUEUED:
            self.deadlines.add(run.created_ms + spec.start_timeout_ms, (run.id, Deadline.START))
        if spec.finish_timeout_ms and run.started_ms:
            self.deadlines.add(run.started_ms + spec.finish_timeout_ms, (run.id, Deadline.FINISH))

    def start(self) -> None:
        self.scheduler.start()
        self.deadlines.start()
        self.timers.start()
        self.sleeps.start()
        self.cron.start()
        self._watcher = asyncio.get_running_loop().create_task(self._expire_silent_workers())

    async def drain(self, grace: float) -> None:
        """Lease nothing more, give the executions workers hold up to ``grace`` seconds to report
        and their reports to commit, then end every worker's stream. A worker's stream never ends by
        itself, so without this a stop always took the gRPC server's whole grace.

        A checkpointing execution would run step after step until the grace is over and be cut in the
        middle of one (which then runs again after the restart): its next checkpoint is refused
        instead, so the worker stops the handler at that step's end and reports it in its final
        result, which is committed as usual (the run goes on from there after the restart)."""
        self._draining = True
        await self.scheduler.stop()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self._reporting or any(worker.inflight for worker in self._workers):
            self._settled.clear()
            try:
                await asyncio.wait_for(self._settled.wait(), deadline - loop.time())
            except TimeoutError:
                break
        for worker in self._workers:
            worker.outbox.put_nowait(None)

    async def stop(self) -> None:
        self.marks.flush()
        if self._watcher is not None:
            self._watcher.cancel()
        self.deadlines.stop()
        self.timers.stop()
        self.sleeps.stop()
        self.cron.stop()
        await self.scheduler.stop()

    # ---- events -----------------------------------------------------------------------------

    async def send_events(self, events: list[Event]) -> SendResult:
        fx = await self._store_events([(event, self.registry.triggered_by(event.name)) for event in events])
        self.metrics.events_received += len(events)
        return SendResult([event.id for event in events], [run.id for run, _, _ in fx.created])

    async def _store_events(self, plan: list[tuple[Event, list[FunctionSpec]]]) -> Effects:
        """Commit events with the runs they start and the waits they satisfy, then apply that."""
        now = now_ms()

        def write(conn: sqlite3.Connection) -> Effects:
            fx = Effects()
            for event, specs in plan:
                self.writes.insert_event(conn, event, specs, now, fx)
            return fx

        fx = await self.store.write(write)
        self._apply(fx)
        return fx

    def _apply(self, fx: Effects) -> None:
        """After a commit: bring memory in line with what it stored."""
        self._runs_created(fx.created)
        for due_ms, timer_id, kind in fx.timers:
            self._arm_timer(due_ms, timer_id, kind)
        for resolved in fx.resolved:
            self._resolved(resolved)
        for run_id, status, error in fx.ended:
            run = self.runs.cached(run_id)
            if run is not None:
                self._ended(run, status, error)
            else:
                self.runs.changed(run_id)
                self.watch.changed(run_id, ended=True)
        for unit in fx.units:
            self.scheduler.add(unit)

    def _resolved(self, resolved: Resolved) -> None:
        step, run = resolved.step, self.runs.cached(resolved.step.run_id)
        if run is not None:
            if not run.state.contains(step.id):
                try:
                    record_steps(run.state, [step])
                except CoreError as exc:  # the store has it; a reload will show the run as it is
                    log.error("run %s: step %s recorded but not held in memory: %s", run.id, step.name, exc)
            run.pending.discard(step.id)
            if resolved.discovery is not None:
                run.discovery = Discovery.QUEUED
            elif run.discovery is Discovery.LEASED:
                run.rediscover = True
        else:
            self.runs.changed(step.run_id)
        self.metrics.steps_recorded += 1
        if resolved.discovery is not None:
            self.scheduler.add([resolved.discovery])  # a parked run is read back when dispatched
        self.watch.changed(step.run_id)

    def _arm_timer(self, due_ms: int, timer_id: int, kind: str) -> None:
        if kind == SLEEP:
            self.sleeps.add(read_at(due_ms), timer_id)
        else:
            self.timers.add(due_ms, timer_id)

    async def _timers_fired(self, timer_ids: list[int]) -> list[int] | None:
        """Complete the steps of due timers; the ids of those that could not be (they fire again)."""
        now = now_ms()

        def write(conn: sqlite3.Connection) -> Effects:
            fx = Effects()
            for timer_id in timer_ids:
                timer = sql.timer_by_id(conn, timer_id)
                if timer is None:
                    continue  # its step completed otherwise: a wait matched, an invoked run ended
                payload, error = b"null", None
                if timer.kind == INVOKE:
                    error = Failure(
                        "InvokeTimeout", f'step "{timer.name}": the invoked function did not finish in time'
                    )
                    payload = error.to_json()
                self.writes.resolve(conn, timer.run_id, timer.step_id, payload, error, now, fx)
            return fx

        try:
            fx = await self.store.write(write)
        except Exception:
            log.exception("%d due timers could not complete their steps", len(timer_ids))
            return timer_ids
        self._apply(fx)
        return None

    async def _sleeps_ending(self, timer_ids: list[int]) -> None:
        """Sleeps end within `READ_AHEAD_MS`: read back each run asleep on nothing but one of them and
        queue its wake-up for the deadline, its sleep completed with what the wake-up reports
        (engine/wakes.py). The other sleeps complete in a commit of their own when due."""
        now = now_ms()

        def find(conn: sqlite3.Connection) -> tuple[tuple[list[Lone], list[tuple[int, int]]], list[str]]:
            lone = sql.lone_sleeps(conn, timer_ids, SLEEP)
            taken = {timer_id for timer_id, _, _, _ in lone}
            others = [timer_id for timer_id in timer_ids if timer_id not in taken]
            rest = sql.timer_dues(conn, others) if others else []
            return (lone, rest), [timer.run_id for _, _, _, timer in lone]

        try:
            with self.scheduler.waking():
                (lone, rest), just_read = await self.runs.find_and_hold(find, limit=MAX_HELD_WOKEN - len(self.runs))
        except Exception:  # no sleep may end early: they complete when the latest of them is due
            log.exception("could not read %d sleeps ending; they complete in a commit of their own", len(timer_ids))
            for timer_id in timer_ids:
                self.timers.add(due_by(now), timer_id)
            return
        for timer_id, app_id, function_id, timer in lone:
            if timer.run_id in just_read or self.runs.cached(timer.run_id) is None:
                self.scheduler.add([wake_item(timer_id, app_id, function_id, timer, now)])
            else:  # held in memory but not read now: not parked
                rest.append((timer.due_ms, timer_id))
        for due_ms, timer_id in rest:
            self.timers.add(due_ms, timer_id)

    async def _cron_tick(self, spec: FunctionSpec, event: Event) -> None:
        await self._store_events([(event, [spec])])

    def _find_function(self, app_id: str, reference: str) -> FunctionSpec | None:
        """`fn` is a function of the caller's app, `app/fn` one of any app.

        Ids may hold "/" themselves, so the caller's app is tried first, then every split.
        """
        found = self.registry.get((app_id, reference))
        cut = reference.find("/")
        while found is None and cut > 0:
            found = self.registry.get((reference[:cut], reference[cut + 1 :]))
            cut = reference.find("/", cut + 1)
        return found

    def _runs_created(self, created: list[Created]) -> None:
        """After the commit: hold the new runs in memory and queue their first execution."""
        self.metrics.runs_created += len(created)
        for run, item, event in created:
            if len(self.runs) < MAX_HELD_NEW:  # the others are read back when dispatched
                active = ActiveRun(run.id, run.app_id, run.function_id, event, new_state(event), RunStatus.QUEUED)
                active.discovery = Discovery.QUEUED
                self.runs.add(active)
            spec = self.registry.get(item.function_key)
            if spec is not None and spec.start_timeout_ms:
                self.deadlines.add(run.created_ms + spec.start_timeout_ms, (run.id, Deadline.START))
            self.scheduler.add([item], new_run=True)

    # ---- workers ----------------------------------------------------------------------------

    async def connect_worker(
        self, app_id: str, name: str, specs: list[FunctionSpec], capacity: int, keeps_reported: bool = False
    ) -> WorkerConn:
        now = now_ms()
        await self.store.write(lambda conn: sql.upsert_functions(conn, specs, now))
        for spec in specs:
            self.registry.put(spec)
        self.cron.sync(specs)
        worker = WorkerConn(
            new_id(),
            app_id,
            name,
            frozenset(s.id for s in specs),
            capacity,
            keeps_reported=keeps_reported,
        )
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
        self._settled.set()
        log.info("worker %s disconnected; %d executions re-queued", worker.id, len(lost))

    async def _expire_silent_workers(self) -> None:
        """A worker that stops heartbeating loses its leases, so its work runs elsewhere.

        Its stream is closed too; anything it sends for those leases later is refused,
        so a step's result is recorded once even when the silent worker wakes up.

        Silence is counted in the daemon's own waking time: when the daemon itself stood still (stopped,
        starved, swapped out; this loop woke late by that much), it heard no one meanwhile, and its
        workers are not held to that (all of them would lose their leases at once, their steps run again).
        """
        interval = min(1.0, self.worker_timeout_ms / 4000)
        while True:
            slept_from = time.monotonic()
            await asyncio.sleep(interval)
            now = time.monotonic()
            stood_still = now - slept_from - interval
            if stood_still > 0:
                for worker in self._workers:
                    worker.last_seen = min(worker.last_seen + stood_still, now)
            deadline = now - self.worker_timeout_ms / 1000
            for worker in [w for w in self._workers if w.last_seen < deadline]:
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
        hold_wakes(run, lease.items)
        lease.memo_base = worker.memos_held.get(run.id, 0)
        lease.memos = run.state.memos_from(lease.memo_base)
        worker.memos_held[run.id] = lease.memo_base + len(lease.memos)
        lease.reported = worker.reported.pop(run.id, lease.reported)
        lease.plan_only = bool(run.pending)
        if not lease.targets:
            run.discovery = Discovery.LEASED
        self.metrics.executions_dispatched += 1
        self.metrics.memos_sent += len(lease.memos)
        named = lease.reported
        self.metrics.memo_bytes_sent += sum(
            len(payload) for sid, payload, _ in lease.memos if payload is not None and sid not in named
        )
        if run.status in (RunStatus.SLEEPING, RunStatus.WAITING):
            run.status = RunStatus.RUNNING
            self.marks.add(run.id, None)
        if run.status is RunStatus.QUEUED:
            run.status = RunStatus.RUNNING
            now = now_ms()
            spec = self.registry.get(lease.items[0].function_key)
            if spec is not None and spec.finish_timeout_ms:
                self.deadlines.add(now + spec.finish_timeout_ms, (run.id, Deadline.FINISH))
            self.marks.add(run.id, now)
            self.watch.changed(run.id)

    async def _read_payloads(self, lease: Lease) -> bool:
        """Fill in the payloads of `lease.unread` from the store; False if that failed, and the work is
        queued again (not sent)."""
        run, ids = lease.run, lease.unread
        try:
            steps = await self.store.read(lambda conn: sql.load_steps(conn, run.id, ids))
            payloads = {memo[0]: memo[3] for memo in (step.memo() for step in steps)}
            if len(payloads) != len(set(ids)):
                raise LookupError(f"steps {sorted(set(ids) - payloads.keys())} are not in the store")
        except Exception:
            if self.scheduler.release(lease.worker, lease.execution_id) is not lease:
                log.exception("run %s: could not read back the results an execution must carry", run.id)
                return False
            delay_ms = _store_failed(run, lease.items)
            log.exception(
                "run %s: could not read back the results an execution must carry; queued again in %d ms",
                run.id,
                delay_ms,
            )
            lease.worker.memos_held.pop(run.id, None)
            _unlease(lease)
            self.scheduler.add(lease.items, front=True)
            return False
        lease.memos = [(sid, payloads.get(sid, payload), is_error) for sid, payload, is_error in lease.memos]
        self.metrics.memo_bytes_sent += sum(len(payloads[sid]) for sid in ids)
        return True

    def _store_running(self, marks: list[Mark]) -> None:
        """Commit the marks of runs that committed nothing else in time (engine/marks.py), in one change:
        the dispatcher leases many runs in a row, and one change each would crowd the writer."""
        self.store.write(lambda conn: store_marks(conn, marks)).add_done_callback(
            functools.partial(self._running_stored, marks)
        )

    def _running_stored(self, marks: list[Mark], done: asyncio.Future[None]) -> None:
        """Start marks whose commit failed are stored again after a pause: a start time must not be lost
        (the run would show as started when it ended), and a late one changes nothing else
        (`sql.mark_started`). A lost "running again" is not: stored late, it could overwrite the status
        the run's next report is committing (waiting, sleeping); that report shows the run as it is."""
        if done.cancelled() or done.exception() is None:
            return
        starts: list[Mark] = [(run_id, started_ms) for run_id, started_ms in marks if started_ms is not None]
        delay_ms = STORE_RETRY.delay_ms(1)
        log.error(
            "could not mark %d runs running (%d starts, stored again in %d ms): %s",
            len(marks),
            len(starts),
            delay_ms,
            done.exception(),
        )
        if starts:
            asyncio.get_running_loop().call_later(delay_ms / 1000, self.marks.put_back, starts)

    async def report(self, worker: WorkerConn, report: ExecutionReport) -> None:
        """Merge a worker's report into its run, commit, and queue what comes next."""
        self._reporting += 1
        try:
            await self._report(worker, report)
        finally:
            self._reporting -= 1
            self._settled.set()

    async def _report(self, worker: WorkerConn, report: ExecutionReport) -> None:
        worker.last_seen = time.monotonic()
        self.metrics.result_bytes_received += report.payload_bytes
        if report.partial:
            lease = worker.inflight.get(report.execution_id)
        else:
            lease = self.scheduler.release(worker, report.execution_id)
        if lease is None:
            log.warning("refused a result for execution %s: not leased to worker %s", report.execution_id, worker.id)
            return
        run = lease.run
        if report.partial and not lease.targets:
            await self._checkpoint(worker, lease, report)
            return
        if report.need_full_state and (lease.memo_base > 0 or lease.reported):
            # The worker dropped its copy of the run's memos (or the results it kept): send the same
            # work again, whole.
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
            merge = merge_report(run, items, report, max_attempts, optimize, self.policy, lease.checkpoints > 0)
            if report.partial:
                settled = {item.id for item in items}
                lease.items = [item for item in lease.items if item.id not in settled]
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
            now = now_ms()
            planned = self._plan_coordination(run, merge, was_discovery, now)
            if planned.steps:
                new_discovery = new_discovery or (run.discovery is Discovery.NONE and merge.status is None)
            sends = [(event, self.registry.triggered_by(event.name)) for event in planned.events]
            failed = self._failure_event(run, spec, merge.error) if merge.status is RunStatus.FAILED else None
            try:
                fx = await self._commit_run(
                    run.id,
                    lambda conn: self.writes.commit_report(
                        conn, run, items, merge, new_discovery, planned, sends, failed, now
                    ),
                    ends=merge.status is not None,
                )
            except Exception:
                # Nothing was committed: the queued rows still stand, so run the execution again.
                delay_ms = _store_failed(run, items)
                log.exception(
                    "could not commit the report of run %s; the execution will run again in %d ms", run.id, delay_ms
                )
                if not report.partial:
                    _unlease(lease)
                self.scheduler.add(items)
                return
            run.store_failures = 0
            self._woken(run, fx.woken)
            if merge.steps:
                record_steps(run.state, merge.steps)
                run.pending.difference_update(step.id for step in merge.steps)
                _keep_reported(worker, run.id, report.execution_id, merge.steps)
                self.metrics.steps_recorded += len(merge.steps)
                self.watch.changed(run.id)
            if merge.status is None:
                run.pending.update(op.id for op in merge.planned)
                run.pending.update(timer.step_id for timer in planned.timers)
                if retry_discovery or any(not unit[0].target for unit in fx.units):
                    run.discovery = Discovery.QUEUED
                if planned.timers and not fx.units:
                    run.status = (
                        RunStatus.SLEEPING if any(t.kind == SLEEP for t in planned.timers) else RunStatus.WAITING
                    )
                    self._park(run, planned)
            self._apply(fx)

    async def _checkpoint(self, worker: WorkerConn, lease: Lease, report: ExecutionReport) -> None:
        """Commit the steps a discovery ran inline before its handler goes on (checkpointing), then
        answer: the worker resumes the handler only on a commit, so a sequential run takes one
        execution and one commit per step, and no replay."""
        run, committed = lease.run, False
        async with run.lock:
            still_leased = worker.inflight.get(lease.execution_id) is lease and not run.status.ended
            accepted = still_leased and not self._draining and bool(report.ops)
            steps = merge_checkpoint(run, lease.items[0], report.ops) if accepted else None
            if steps:
                try:
                    woken = await self._commit_run(run.id, lambda conn: store_steps(conn, run.id, lease.items, steps))
                except Exception:
                    log.exception("could not commit a checkpoint of run %s; the worker will report it again", run.id)
                else:
                    committed = True
                    self._woken(run, woken)
                    lease.checkpoints += 1
                    record_steps(run.state, steps)
                    _keep_reported(worker, run.id, report.execution_id, steps)
                    self.metrics.steps_recorded += len(steps)
                    self.watch.changed(run.id)
        worker.outbox.put_nowait(Checkpointed(report.execution_id, committed))

    async def _commit_run(self, run_id: str, change: WriteOp[T], ends: bool = False) -> T:
        """Commit a change a run's report made, with the run's running mark if one waits (engine/marks.py);
        inline when the report is all there is to do (`_alone`). A change that `ends` the run sets its
        status itself."""
        marks = self.marks.take(run_id)

        def write(conn: sqlite3.Connection) -> T:
            store_marks(conn, marks, ends)
            return change(conn)

        try:
            return await self.store.write(write, inline=self._alone())
        except Exception:
            self.marks.put_back(marks)
            raise

    def _alone(self) -> bool:
        """Whether the report being merged is all there is to do: no other report, at most one execution
        out (its own). Its commit may then hold up the loop (store/writer.py): a lone sequential run
        saves two thread wake-ups per step, and a busy engine keeps its loop free while the disk syncs."""
        return self._reporting <= 1 and sum(len(worker.inflight) for worker in self._workers) <= 1

    def _woken(self, run: ActiveRun, stored: int) -> None:
        """`stored` sleeps the run woke from were committed with what it reported."""
        if stored:
            self.metrics.steps_recorded += stored
            self.watch.changed(run.id)

    def _plan_coordination(self, run: ActiveRun, merge: Merge, was_discovery: bool, now: int) -> Planned:
        """Turn the sleeps, waits, invokes and sent events a discovery reported into rows."""
        if not merge.coordination or merge.status is not None or not was_discovery:
            return Planned()
        planned = plan(run, merge.coordination, now, self._find_function)
        if isinstance(planned, Failure):
            merge.fail(planned)
            return Planned()
        try:
            run.state.check_batch([(s.id, s.name, s.index, len(s.memo()[3])) for s in (*merge.steps, *planned.steps)])
        except LimitExceeded as exc:
            merge.fail(Failure(type(exc).__name__, str(exc), code="limit_exceeded", non_retriable=True))
            return Planned()
        merge.steps.extend(planned.steps)
        return planned

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

    def _park(self, run: ActiveRun, planned: Planned) -> None:
        """A run that only waits on the executor's own timers leaves memory until one fires.

        Safe only when nothing of it is in flight: no discovery queued or leased, and every
        pending step is one of its timers (a planned step would be leased). Parked runs are
        most of the runs a busy daemon holds (sleeps of a day, waits for a reply).
        """
        if run.discovery is Discovery.NONE and run.pending <= {timer.step_id for timer in planned.timers}:
            self.runs.evict(run.id)
            self.scheduler.forget_run(run)

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
        self.watch.changed(run.id, ended=True)

    def heartbeat(self, worker: WorkerConn) -> None:
        worker.last_seen = time.monotonic()

    # ---- runs -------------------------------------------------------------------------------

    async def get_run(self, run_id: str, first_step: int = 0) -> RunRecord | None:
        """The run with its steps from the `first_step`-th on, or None."""
        return await self.store.read(lambda conn: sql.load_run(conn, run_id, first_step))

    async def list_runs(self, where: sql.RunFilter) -> list[RunRecord]:
        return await self.store.read(lambda conn: sql.list_runs(conn, where))

    async def wait_for_run(self, run_id: str, timeout: float) -> RunRecord | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            ended = self.watch.subscribe(run_id, ends_only=True)
            run = await self.get_run(run_id)
            remaining = deadline - loop.time()
            if run is None or run.status.ended or remaining <= 0:
                return run
            try:
                await asyncio.wait_for(ended.wait(), remaining)
            except TimeoutError:
                pass

    async def watch_run(self, run_id: str) -> AsyncIterator[tuple[RunRecord, int]]:
        """Yield the run now, then at each change the run with only the steps recorded since, each
        time with the index of its first step, until it has ended: every step is read and sent once."""
        sent = 0
        status: RunStatus | None = None
        while True:
            changed = self.watch.subscribe(run_id)
            run = await self.get_run(run_id, first_step=sent)
            if run is None:
                return
            if run.status is not status or run.steps:
                yield run, sent
                status, sent = run.status, sent + len(run.steps)
            if run.status.ended:
                return
            await changed.wait()

    async def cancel_run(self, run_id: str, reason: Failure | None = None) -> tuple[RunRecord, bool] | None:
        now = now_ms()

        def write(conn: sqlite3.Connection) -> Effects:
            fx = Effects()
            self.writes.finish(conn, run_id, RunStatus.CANCELLED, now, fx, error=reason)
            return fx

        fx = await self.store.write(write)
        self._apply(fx)
        record = await self.get_run(run_id)
        cancelled = any(ended_id == run_id for ended_id, _, _ in fx.ended)
        return None if record is None else (record, cancelled)

    async def _time_out(self, deadlines: list[tuple[str, Deadline]]) -> None:
        await asyncio.gather(*(self._deadline_passed(*deadline) for deadline in deadlines))

    async def _deadline_passed(self, run_id: str, kind: Deadline) -> None:
        run = await self.get_run(run_id)
        if run is None or run.status.ended:
            return
        spec = self.registry.get((run.app_id, run.function_id))
        if spec is None:
            return
        if kind is Deadline.START:
            active = self.runs.cached(run_id)
            if run.status is not RunStatus.QUEUED or (active is not None and active.status is not RunStatus.QUEUED):
                return  # it started in time (its start may not be stored yet: engine/marks.py)
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


def _keep_reported(worker: WorkerConn, run_id: str, execution_id: str, steps: list[StepRecord]) -> None:
    """The results `worker` reported and that were recorded as sent: its next Execute of the run
    names them instead of carrying them back (the worker kept them)."""
    if worker.keeps_reported:
        kept = worker.reported.setdefault(run_id, {})
        for step in steps:
            if step.status is StepStatus.COMPLETED:
                kept[step.id] = execution_id


def _store_failed(run: ActiveRun, items: list[QueueItem]) -> int:
    """Hold back `items` of a run whose store just failed it, for a pause that grows while it keeps
    failing (engine/retry.py STORE_RETRY): running them again at once would spin, and re-run step
    bodies, as fast as the store fails. Returns the pause in ms."""
    run.store_failures += 1
    delay_ms = STORE_RETRY.delay_ms(run.store_failures)
    due = now_ms() + delay_ms  # from now: the failure may have waited out the busy timeout
    for item in items:
        item.available_ms = max(item.available_ms, due)
    return delay_ms


def _unlease(lease: Lease) -> None:
    """A lease ended without a report: its discovery (if any) is queued again."""
    if not lease.targets:
        lease.run.discovery = Discovery.QUEUED
