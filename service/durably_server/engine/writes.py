"""What one transaction does when events arrive, reports land, timers fire or runs end.

Every path that stores an event (SendEvents, send_event steps, invocations, failure
events, cron ticks) goes through `insert_event`, so an event always triggers its
functions, satisfies the waits it matches and cancels the runs it should, in the same
commit that stores it. These functions run on the writer thread and return `Effects`:
what the executor must then do in memory (hold new runs, schedule work, arm timers).
Effects are built inside the operation and returned only when it succeeds, so nothing
rolled back is ever applied (and an operation the writer runs again after a neighbour
failed applies nothing twice).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

from durably_server.engine.coordination import CANCEL, SLEEP, Planned, Resolved, WaitIndex, event_object, resolve, rule
from durably_server.engine.merge import Merge
from durably_server.engine.runs import ActiveRun
from durably_server.engine.wakes import store_steps
from durably_server.expressions import Expression, ExpressionError, parse
from durably_server.ids import new_id
from durably_server.model import Event, Failure, FunctionSpec, QueueItem, RunRecord, RunStatus
from durably_server.store import records as sql

log = logging.getLogger("durably.executor")

Created = tuple[RunRecord, QueueItem, Event]


@dataclass(slots=True)
class Effects:
    created: list[Created] = field(default_factory=list)
    resolved: list[Resolved] = field(default_factory=list)
    ended: list[tuple[str, RunStatus, Failure | None]] = field(default_factory=list)
    timers: list[tuple[int, int, str]] = field(default_factory=list)  # (due time, row id, kind)
    units: list[list[QueueItem]] = field(default_factory=list)
    woken: int = 0  # sleeps completed by the report's wake-up (engine/wakes.py)


@lru_cache(maxsize=1024)
def _trigger_filter(source: str) -> Expression:
    return parse(source, roots=("event",))


def _triggers(spec: FunctionSpec, event: Event, incoming: dict[str, object]) -> bool:
    for name, source in spec.trigger_filters:
        if name == event.name and not _trigger_filter(source).evaluate({"event": incoming}):
            return False
    return True


class Writes:
    def __init__(self, registry_get: Callable[[tuple[str, str]], FunctionSpec | None], waits: WaitIndex) -> None:
        self._spec = registry_get
        self.waits = waits

    def insert_event(
        self,
        conn: sqlite3.Connection,
        event: Event,
        specs: list[FunctionSpec],
        now: int,
        fx: Effects,
        parent: tuple[str, str] | None = None,
    ) -> None:
        """Store `event`, complete or cancel what it matches, and start the runs it triggers.

        An event whose id was stored before does nothing: its runs exist already.
        """
        if not sql.insert_event(conn, event, now):
            return
        incoming = event_object(event)
        for wait in self.waits.find(conn, event):
            if wait.kind == CANCEL:
                reason = Failure("Cancelled", f"cancelled by event {event.name} ({event.id})", code="cancelled")
                self.finish(conn, wait.run_id, RunStatus.CANCELLED, now, fx, error=reason)
            else:
                self.resolve(conn, wait.run_id, wait.step_id, json.dumps(incoming).encode(), None, now, fx)
        for spec in specs:
            if not _triggers(spec, event, incoming):
                continue
            run = RunRecord(new_id(now), spec.app_id, spec.id, event.id, RunStatus.QUEUED, now)
            fx.created.append((run, sql.insert_run(conn, run, parent), event))
            for name, match, expression in spec.cancel_on:
                try:
                    cancel = rule(CANCEL, run.id, "", name, match, expression, event)
                except ExpressionError as exc:
                    log.warning("run %s: cancel_on rule for %s ignored: %s", run.id, name, exc)
                    continue
                if cancel is not None:
                    self.add_wait(conn, cancel)

    def add_wait(self, conn: sqlite3.Connection, wait: sql.Wait) -> None:
        # Indexed before the commit: a superset of paths is harmless, a missing one loses matches.
        self.waits.add(wait.event_name, wait.key_path)
        sql.insert_wait(conn, wait)

    def finish(
        self,
        conn: sqlite3.Connection,
        run_id: str,
        status: RunStatus,
        now: int,
        fx: Effects,
        output_json: bytes | None = None,
        error: Failure | None = None,
    ) -> bool:
        """End a run that has not ended; an invoking parent gets its output or error."""
        parent = sql.finish_run(conn, run_id, status, now, output_json, error)
        if parent is False:
            return False
        fx.ended.append((run_id, status, error))
        if isinstance(parent, tuple):
            if status is RunStatus.COMPLETED:
                self.resolve(conn, *parent, output_json or b"null", None, now, fx)
            else:
                cause = f"{error.name}: {error.message}" if error else status.value
                failure = Failure("InvokeError", f"the invoked run {run_id} {status.value}: {cause}")
                self.resolve(conn, *parent, failure.to_json(), failure, now, fx)
        return True

    def resolve(
        self,
        conn: sqlite3.Connection,
        run_id: str,
        step_id: str,
        payload: bytes,
        error: Failure | None,
        now: int,
        fx: Effects,
    ) -> None:
        row = conn.execute("SELECT app_id, function_id FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            return
        spec = self._spec((row[0], row[1]))
        optimize = spec.optimize_parallelism if spec else False
        done = resolve(conn, run_id, row[0], row[1], step_id, payload, error, optimize, now)
        if done is not None:
            fx.resolved.append(done)

    def commit_report(
        self,
        conn: sqlite3.Connection,
        run: ActiveRun,
        items: list[QueueItem],
        merge: Merge,
        discover: bool,
        planned: Planned,
        sends: list[tuple[Event, list[FunctionSpec]]],
        failed: tuple[Event, list[FunctionSpec]] | None,
        now: int,
    ) -> Effects:
        """The whole effect of one report, in one transaction."""
        fx = Effects()
        sql.dequeue(conn, [item.id for item in items])
        fx.woken = store_steps(conn, run.id, items, merge.steps)
        if merge.status is not None:
            if self.finish(conn, run.id, merge.status, now, fx, merge.output_json, merge.error) and failed:
                self.insert_event(conn, *failed, now, fx)
            return fx
        for event, specs in sends:
            self.insert_event(conn, event, specs, now, fx)
        for spec, child in planned.children:
            step_id = child.id.rsplit(".", 1)[-1]
            self.insert_event(conn, child, [spec], now, fx, parent=(run.id, step_id))
        for timer in planned.timers:
            fx.timers.append((timer.due_ms, sql.insert_timer(conn, timer), timer.kind))
        for wait in planned.waits:
            self.add_wait(conn, wait)

        def enqueue(attempt: int, target: str = "", delay_ms: int = 0) -> QueueItem | None:
            return sql.enqueue(conn, run.id, run.app_id, run.function_id, attempt, now + delay_ms, target)

        for item, attempt, delay_ms in merge.retries:
            retried = enqueue(attempt, item.target, delay_ms)
            if retried is not None:
                fx.units.append([retried])
        targets = [enqueue(0, op.id) for op in merge.planned]
        fx.units.append([item for item in targets if item is not None])
        fx.units = [unit for unit in fx.units if unit]
        if discover or not (fx.units or planned.timers or sql.has_pending(conn, run.id)):
            # Nothing else would move the run on (the queue skips a run that ended or has a discovery
            # queued): a step this execution did not see completed after it was leased (a timer fired)
            # queued no discovery, as this execution's row was still there; the handler goes on.
            found = sql.enqueue_discovery(conn, run.id, run.app_id, run.function_id, now)
            if found is not None:
                fx.units.append([found])
        if planned.timers and not fx.units:
            idle = RunStatus.SLEEPING if any(t.kind == SLEEP for t in planned.timers) else RunStatus.WAITING
            sql.set_status(conn, run.id, idle)
        return fx
