"""Steps the executor completes itself: sleeps, waits for events, invocations, sent events.

A worker reports these steps instead of running them. The executor turns each into rows
(a timer, a wait, a child run, events) in the same transaction as the report, and later
completes the step — when the timer fires, a matching event arrives, or the child run
ends — by *taking* its timer row: whoever takes it records the step, so it completes
once even when a timeout and a match race.

Waits are indexed by (event name, key path, key value), the key being an equality the
wait's expression demands of the incoming event (`match="data.userId"` gives one), so
finding the waits an event satisfies costs one indexed lookup per key path in use, not a
scan of every wait. Only events received after a wait is recorded can satisfy it (no
lookback), as in Inngest.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

from durably_server.convert import RequestError, check_event
from durably_server.engine.runs import ActiveRun
from durably_server.expressions import Expression, ExpressionError, match_expression, parse
from durably_server.model import Event, Failure, FunctionSpec, OpKind, QueueItem, StepOp, StepRecord, StepStatus
from durably_server.store import records as sql

SLEEP, WAIT, INVOKE = "sleep", "wait", "invoke"
CANCEL = "cancel"
INVOKED_EVENT = "durably/function.invoked"
MAX_AHEAD_MS = 366 * 86_400_000
COORDINATION_OPS = frozenset({OpKind.SLEEP, OpKind.WAIT_FOR_EVENT, OpKind.INVOKE, OpKind.SEND_EVENT})


def event_object(event: Event) -> dict[str, object]:
    """An event as handlers and expressions see it."""
    return {"id": event.id, "name": event.name, "data": json.loads(event.data_json), "ts": event.ts_ms}


def _key(value: object) -> str:
    """Index form of a key value: numbers that are equal (1, 1.0) index alike; true stays apart from 1."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@lru_cache(maxsize=4096)
def _compiled(source: str) -> Expression:
    return parse(source, roots=("async",))


def rule(
    kind: str, run_id: str, step_id: str, event_name: str, match: str, if_expression: str, trigger: Event
) -> sql.Wait | None:
    """The wait row for a wait step or cancel_on rule, with the trigger event filled in.

    None when the rule can never match this run. ExpressionError when it does not parse.
    """
    parts = [match_expression(match)] if match else []
    if if_expression:
        parts.append(f"({if_expression})")
    expression = _rule_template(" && ".join(parts) or "true").interpolate("event", event_object(trigger))
    if expression.source == "false":
        return None
    keys = expression.equality_keys("async")
    path, value = (keys[0][0], _key(keys[0][1])) if keys else ("", "")
    # A rule that is only its index key (`match=` alone) holds for every event the index finds: store
    # no expression, so matching does not parse one per wait (each run's source is its own).
    only_key = len(keys) == 1 and expression.is_one_comparison()
    return sql.Wait(run_id, step_id, kind, event_name, path, value, "" if only_key else expression.source)


@lru_cache(maxsize=1024)
def _rule_template(source: str) -> Expression:
    """A rule before the run's trigger is filled in: the same few per function, parsed once."""
    return parse(source)


class WaitIndex:
    """The key paths waits use, per event name: which lookups an incoming event needs.

    A superset is harmless (a lookup that finds nothing), so paths are only ever added;
    each entry is replaced whole, never mutated, because the writer thread reads it.
    """

    def __init__(self, rows: list[tuple[str, str, int]]) -> None:
        self._paths: dict[str, frozenset[str]] = {}
        for name, path, _ in rows:
            self.add(name, path)

    def add(self, event_name: str, path: str) -> None:
        current = self._paths.get(event_name, frozenset())
        if path not in current:
            self._paths[event_name] = current | {path}

    def find(self, conn: sqlite3.Connection, event: Event) -> list[sql.Wait]:
        """The waits `event` satisfies (run in the transaction that stores the event)."""
        paths = self._paths.get(event.name)
        if not paths:
            return []
        incoming = event_object(event)
        found = []
        for path in paths:
            value: object = incoming
            for part in path.split(".") if path else ():
                if not isinstance(value, dict) or part not in value:
                    break
                value = value[part]
            else:
                for wait in sql.find_waits(conn, event.name, path, _key(value) if path else ""):
                    if not wait.expression or _compiled(wait.expression).evaluate({"async": incoming}):
                        found.append(wait)
        return found


@dataclass(slots=True)
class Planned:
    """What the coordination steps of one report add, all committed with the report."""

    steps: list[StepRecord] = field(default_factory=list)  # completed at once (send_event, past sleeps)
    timers: list[sql.Timer] = field(default_factory=list)
    waits: list[sql.Wait] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)  # sent by send_event steps
    children: list[tuple[FunctionSpec, Event]] = field(default_factory=list)  # invoked runs, with their event


def plan(
    run: ActiveRun,
    ops: list[StepOp],
    now: int,
    find_function: Callable[[str, str], FunctionSpec | None],
) -> Planned | Failure:
    """Turn reported coordination steps into rows; a Failure when one is invalid (the run fails)."""
    out = Planned()
    for op in ops:
        if op.kind is OpKind.SLEEP:
            if op.wake_at_ms > now + MAX_AHEAD_MS:
                return _too_long(op, "sleep")
            if op.wake_at_ms <= now:
                out.steps.append(_done(run.id, op, b"null", now))
            else:
                out.timers.append(sql.Timer(run.id, op.id, op.name, op.index, SLEEP, op.wake_at_ms))
        elif op.kind is OpKind.WAIT_FOR_EVENT:
            assert op.wait is not None
            if op.wait.expires_at_ms > now + MAX_AHEAD_MS:
                return _too_long(op, "wait")
            try:
                wait = rule(WAIT, run.id, op.id, op.wait.event, op.wait.match, op.wait.if_expression, run.event)
            except ExpressionError as exc:
                return Failure(
                    "InvalidExpression", f'step "{op.name}": {exc}', code="invalid_expression", non_retriable=True
                )
            out.timers.append(sql.Timer(run.id, op.id, op.name, op.index, WAIT, max(now, op.wait.expires_at_ms)))
            if wait is not None:
                out.waits.append(wait)
        elif op.kind is OpKind.SEND_EVENT:
            try:
                sent = [
                    check_event(event, f'step "{op.name}" event {n}', f"{run.id}.{op.id}.{n}", now)
                    for n, event in enumerate(op.events)
                ]
            except RequestError as exc:
                return Failure("InvalidEvent", str(exc), code="invalid_event", non_retriable=True)
            out.events.extend(sent)
            ids = json.dumps([event.id for event in sent]).encode()
            out.steps.append(_done(run.id, op, ids, now))
        else:
            assert op.invoke is not None
            spec = find_function(run.app_id, op.invoke.function_id)
            if spec is None:
                error = Failure("InvokeError", f'step "{op.name}": no function {op.invoke.function_id!r} is registered')
                out.steps.append(_done(run.id, op, error.to_json(), now, error))
                continue
            expires = op.invoke.expires_at_ms or now + MAX_AHEAD_MS - 86_400_000
            if expires > now + MAX_AHEAD_MS:
                return _too_long(op, "invoke timeout")
            try:
                child = check_event(
                    Event("", INVOKED_EVENT, op.invoke.data_json, 0), f'step "{op.name}"', f"{run.id}.{op.id}", now
                )
            except RequestError as exc:
                return Failure("InvalidEvent", str(exc), code="invalid_event", non_retriable=True)
            out.children.append((spec, child))
            out.timers.append(sql.Timer(run.id, op.id, op.name, op.index, INVOKE, expires))
    return out


def _too_long(op: StepOp, what: str) -> Failure:
    return Failure(
        "TimeoutTooLong",
        f'step "{op.name}": a {what} may last at most one year (366 days)',
        code="timeout_too_long",
        non_retriable=True,
    )


def _done(run_id: str, op: StepOp, payload: bytes, now: int, error: Failure | None = None) -> StepRecord:
    failed = error is not None
    return StepRecord(
        run_id,
        op.id,
        op.name,
        op.index,
        StepStatus.FAILED if failed else StepStatus.COMPLETED,
        None if failed else payload,
        error,
        1,
        now,
        now,
    )


@dataclass(frozen=True, slots=True)
class Resolved:
    """A coordination step completed by the executor, as committed."""

    step: StepRecord
    # The discovery this queued, when the run had none (None: one was queued or running already,
    # or optimize_parallelism waits for the rest of the group).
    discovery: QueueItem | None


def resolve(
    conn: sqlite3.Connection,
    run_id: str,
    app_id: str,
    function_id: str,
    step_id: str,
    payload: bytes,
    error: Failure | None,
    optimize: bool,
    now: int,
) -> Resolved | None:
    """Complete a pending coordination step, once (None if it was completed already)."""
    timer = sql.take_timer(conn, run_id, step_id)
    if timer is None:
        return None
    failed = error is not None
    step = StepRecord(
        run_id,
        step_id,
        timer.name,
        timer.index,
        StepStatus.FAILED if failed else StepStatus.COMPLETED,
        None if failed else payload,
        error,
        1,
        now,
        now,
    )
    sql.insert_steps(conn, run_id, [step])
    discovery = None
    if not (optimize and sql.has_pending(conn, run_id)):
        discovery = sql.enqueue_discovery(conn, run_id, app_id, function_id, now)
    return Resolved(step, discovery)
