"""The one place protobuf meets the daemon's own types, and where requests are validated.

Anything a client or worker sends passes through here; what is malformed raises
`RequestError` with a message a person can act on, which the services turn into
INVALID_ARGUMENT. Nothing past this module sees a protobuf message.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from durably.protocol.v1 import api_pb2, common_pb2, worker_pb2

from durably_server._core import MAX_JSON_DEPTH, json_depth
from durably_server.engine.metrics import Metrics
from durably_server.engine.scheduler import Lease
from durably_server.expressions import ExpressionError, match_expression, parse
from durably_server.ids import new_id, now_ms
from durably_server.model import (
    Checkpointed,
    ConcurrencyLimit,
    Event,
    ExecutionReport,
    Failure,
    FunctionSpec,
    InvokeSpec,
    OpKind,
    RunRecord,
    RunStatus,
    StepOp,
    StepRecord,
    StepStatus,
    WaitSpec,
)

MAX_EVENTS_PER_REQUEST = 5000
MAX_EVENT_BYTES = 3 * 1024 * 1024
MAX_NAME_LENGTH = 255
MAX_RETRIES = 20
DEFAULT_CAPACITY = 64
MAX_CAPACITY = 10_000
_ID_PATTERN = re.compile(r"[A-Za-z0-9_.:/\-]{1,128}")
_ULID = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")


class RequestError(ValueError):
    """A malformed request; the message says what to fix."""


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def loads_strict(raw: bytes) -> object:
    """`json.loads` without Python's extensions: NaN and Infinity are refused, as JSON says."""
    return json.loads(raw, parse_constant=_no_constant)


# ---- events -------------------------------------------------------------------------------


def _check_json_object(raw: bytes, what: str) -> bytes:
    if not raw:
        return b"{}"
    if len(raw) > MAX_EVENT_BYTES:
        raise RequestError(f"{what}: data is {len(raw)} bytes, more than the {MAX_EVENT_BYTES}-byte limit")
    if (depth := json_depth(raw)) > MAX_JSON_DEPTH:  # json.loads recurses: measured first, without it
        raise RequestError(f"{what}: data_json is nested {depth} levels deep, more than {MAX_JSON_DEPTH}")
    try:
        value = loads_strict(raw)
    except ValueError as exc:
        raise RequestError(f"{what}: data_json is not valid UTF-8 JSON ({exc})") from None
    if not isinstance(value, dict):
        raise RequestError(f"{what}: data_json must be a JSON object, got {type(value).__name__}")
    return raw


def check_event(event: Event, what: str, default_id: str, now: int) -> Event:
    """A valid event with its id and time filled in, or RequestError saying what is wrong."""
    name = event.name.strip()
    if not name:
        raise RequestError(f"{what}: the event name is empty")
    if len(name) > MAX_NAME_LENGTH:
        raise RequestError(f"{what}: the event name is longer than {MAX_NAME_LENGTH} characters")
    if len(event.id) > MAX_NAME_LENGTH:
        raise RequestError(f"{what}: the event id is longer than {MAX_NAME_LENGTH} characters")
    if event.ts_ms < 0:
        raise RequestError(f"{what}: ts_ms is negative")
    data = _check_json_object(event.data_json, f"{what} ({name})")
    return Event(event.id or default_id, name, data, event.ts_ms or now)


def _event_in(pb: common_pb2.Event) -> Event:
    return Event(pb.id, pb.name, pb.data_json, pb.ts_ms)


def events_in(request: api_pb2.SendEventsRequest) -> list[Event]:
    if not request.events:
        raise RequestError("send at least one event")
    if len(request.events) > MAX_EVENTS_PER_REQUEST:
        raise RequestError(f"{len(request.events)} events in one request; the limit is {MAX_EVENTS_PER_REQUEST}")
    now = now_ms()
    return [check_event(_event_in(pb), f"events[{n}]", new_id(now), now) for n, pb in enumerate(request.events)]


def event_out(event: Event) -> common_pb2.Event:
    return common_pb2.Event(id=event.id, name=event.name, data_json=event.data_json, ts_ms=event.ts_ms)


# ---- workers ------------------------------------------------------------------------------


def register_in(message: worker_pb2.Register) -> tuple[list[FunctionSpec], int]:
    app_id = message.app_id
    if not _ID_PATTERN.fullmatch(app_id):
        raise RequestError(f"app_id {app_id!r} must be 1-128 characters of letters, digits and _.:/-")
    if not message.functions:
        raise RequestError("register at least one function")
    specs: dict[str, FunctionSpec] = {}
    for fn in message.functions:
        if not _ID_PATTERN.fullmatch(fn.id):
            raise RequestError(f"function id {fn.id!r} must be 1-128 characters of letters, digits and _.:/-")
        if fn.id in specs:
            raise RequestError(f"function id {fn.id!r} is registered twice in app {app_id!r}")
        if not 0 <= fn.retries <= MAX_RETRIES:
            raise RequestError(f"function {fn.id!r}: retries must be 0..{MAX_RETRIES}, got {fn.retries}")
        triggers, filters, crons = [], [], []
        for trigger in fn.triggers:
            if trigger.HasField("cron"):
                crons.append(_cron_in(fn.id, trigger.cron.schedule, trigger.cron.timezone or "UTC"))
                continue
            name = _event_name_in(fn.id, trigger.event)
            triggers.append(name)
            if trigger.if_expression.strip():
                filters.append((name, _expression_in(fn.id, trigger.if_expression, ("event",))))
        cancel_on = [
            (
                _event_name_in(fn.id, rule.event),
                _match_in(fn.id, rule.match),
                _expression_in(fn.id, rule.if_expression, ("event", "async")) if rule.if_expression.strip() else "",
            )
            for rule in fn.cancel_on
        ]
        specs[fn.id] = FunctionSpec(
            app_id,
            fn.id,
            tuple(triggers),
            fn.retries,
            fn.optimize_parallelism,
            _timeout_in(fn.id, "start_timeout_ms", fn.start_timeout_ms),
            _timeout_in(fn.id, "finish_timeout_ms", fn.finish_timeout_ms),
            _concurrency_in(fn.id, fn.concurrency),
            fn.on_failure,
            tuple(filters),
            tuple(crons),
            tuple(cancel_on),
        )
    for spec in specs.values():
        if spec.on_failure and spec.on_failure not in specs:
            raise RequestError(
                f"function {spec.id!r}: on_failure names {spec.on_failure!r}, which is not registered with it"
            )
    capacity = message.capacity or DEFAULT_CAPACITY
    if not 0 < capacity <= MAX_CAPACITY:
        raise RequestError(f"capacity must be 1..{MAX_CAPACITY}, got {message.capacity}")
    return list(specs.values()), capacity


MAX_TIMEOUT_MS = 366 * 86_400_000
MAX_CONCURRENCY_LIMITS = 2
_KEY_PATH = re.compile(r"event(\.[A-Za-z0-9_\-]+)+")


def _timeout_in(function_id: str, name: str, value: int) -> int:
    if not 0 <= value <= MAX_TIMEOUT_MS:
        raise RequestError(f"function {function_id!r}: {name} must be 0..{MAX_TIMEOUT_MS} (one year), got {value}")
    return value


def _concurrency_in(function_id: str, limits: Sequence[common_pb2.ConcurrencyLimit]) -> tuple[ConcurrencyLimit, ...]:
    if len(limits) > MAX_CONCURRENCY_LIMITS:
        raise RequestError(f"function {function_id!r}: at most {MAX_CONCURRENCY_LIMITS} concurrency limits")
    out = []
    for limit in limits:
        if not 1 <= limit.limit <= MAX_CAPACITY:
            raise RequestError(f"function {function_id!r}: a concurrency limit must be 1..{MAX_CAPACITY}")
        if limit.key and not _KEY_PATH.fullmatch(limit.key):
            raise RequestError(
                f"function {function_id!r}: concurrency key {limit.key!r} must be a field path like event.data.userId"
            )
        out.append(ConcurrencyLimit(limit.limit, limit.key))
    return tuple(out)


def _event_name_in(function_id: str, name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME_LENGTH:
        raise RequestError(f"function {function_id!r}: an event name must be 1-{MAX_NAME_LENGTH} characters")
    return name


def _expression_in(function_id: str, source: str, roots: tuple[str, ...]) -> str:
    try:
        parse(source, roots=roots)
    except ExpressionError as exc:
        raise RequestError(f"function {function_id!r}: {exc}") from None
    return source.strip()


def _match_in(function_id: str, path: str) -> str:
    if not path.strip():
        return ""
    try:
        match_expression(path.strip())
    except ExpressionError as exc:
        raise RequestError(f"function {function_id!r}: match {path!r}: {exc}") from None
    return path.strip()


def _cron_in(function_id: str, schedule: str, zone: str) -> tuple[str, str]:
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise RequestError(f"function {function_id!r}: unknown time zone {zone!r}") from None
    if len(schedule.split()) != 5 or not croniter.is_valid(schedule):
        raise RequestError(f"function {function_id!r}: {schedule!r} is not a five-field cron schedule")
    return schedule.strip(), zone


def _failure_in(pb: common_pb2.Failure) -> Failure:
    return Failure(pb.name or "Error", pb.message, pb.stack, pb.code, pb.non_retriable, max(0, pb.retry_after_ms))


def failure_out(failure: Failure) -> common_pb2.Failure:
    return common_pb2.Failure(
        name=failure.name,
        message=failure.message,
        stack=failure.stack,
        non_retriable=failure.non_retriable,
        code=failure.code,
    )


_OPS = {
    worker_pb2.OPCODE_STEP_RUN: OpKind.STEP_RUN,
    worker_pb2.OPCODE_STEP_ERROR: OpKind.STEP_ERROR,
    worker_pb2.OPCODE_STEP_PLANNED: OpKind.STEP_PLANNED,
    worker_pb2.OPCODE_SLEEP: OpKind.SLEEP,
    worker_pb2.OPCODE_WAIT_FOR_EVENT: OpKind.WAIT_FOR_EVENT,
    worker_pb2.OPCODE_SEND_EVENT: OpKind.SEND_EVENT,
    worker_pb2.OPCODE_INVOKE: OpKind.INVOKE,
}


def _op_in(kind: OpKind, op: worker_pb2.StepOp) -> StepOp:
    wait = invoke = None
    if kind is OpKind.WAIT_FOR_EVENT:
        w = op.wait
        wait = WaitSpec(w.event.strip(), w.expires_at_ms, w.match.strip(), w.if_expression.strip())
    elif kind is OpKind.INVOKE:
        invoke = InvokeSpec(op.invoke.function_id.strip(), op.invoke.data_json, op.invoke.expires_at_ms)
    return StepOp(
        kind,
        op.id,
        op.name,
        op.index,
        op.data_json,
        _failure_in(op.error) if kind is OpKind.STEP_ERROR else None,
        op.started_at_ms,
        op.ended_at_ms,
        op.wake_at_ms,
        wait,
        tuple(_event_in(event) for event in op.events),
        invoke,
    )


def report_in(result: worker_pb2.ExecutionResult) -> ExecutionReport:
    """Turn a worker's result into a report; a malformed one becomes a retriable failure."""
    ops = []
    for op in result.ops:
        kind = _OPS.get(op.op)
        if kind is None:
            return ExecutionReport(
                result.execution_id,
                (),
                error=Failure("ProtocolError", f"unknown opcode {op.op} for step {op.name!r}", code="protocol_error"),
            )
        if kind is OpKind.STEP_ERROR and not op.HasField("error"):
            return ExecutionReport(
                result.execution_id,
                (),
                error=Failure("ProtocolError", f"step {op.name!r}: STEP_ERROR without an error", code="protocol_error"),
            )
        if kind is OpKind.WAIT_FOR_EVENT and not op.wait.event.strip():
            return ExecutionReport(
                result.execution_id,
                (),
                error=Failure("ProtocolError", f"step {op.name!r}: a wait needs an event name", code="protocol_error"),
            )
        ops.append(_op_in(kind, op))
    outcome = result.WhichOneof("outcome")
    return ExecutionReport(
        result.execution_id,
        tuple(ops),
        output_json=result.output_json if outcome == "output_json" else None,
        error=_failure_in(result.error) if outcome == "error" else None,
        need_full_state=outcome == "need_full_state",
        partial=result.partial,
    )


def execute_out(lease: Lease, max_attempts: int) -> worker_pb2.ExecutorMessage:
    """Built in place: constructing the parts apart and nesting them copies every memo's payload
    again (milliseconds per MB)."""
    run = lease.run
    message = worker_pb2.ExecutorMessage()
    execute = message.execute
    execute.execution_id = lease.execution_id
    execute.run_id = run.id
    execute.function_id = run.function_id
    execute.event.CopyFrom(event_out(run.event))
    reported = lease.reported
    for sid, payload, is_error in lease.memos:
        if sid in reported and not is_error:
            execute.memos.add(id=sid, reported_in=reported[sid])
            continue
        assert payload is not None, "a payload the run's state did not hold was not read back"
        if is_error:
            execute.memos.add(id=sid).error.CopyFrom(failure_out(Failure.from_json(payload)))
        else:
            execute.memos.add(id=sid, data_json=payload)
    execute.attempt = lease.attempt
    execute.max_attempts = max_attempts
    execute.targets.extend(lease.targets)
    execute.plan_only = lease.plan_only
    execute.memo_base = lease.memo_base
    return message


def checkpointed_out(answer: Checkpointed) -> worker_pb2.ExecutorMessage:
    return worker_pb2.ExecutorMessage(
        checkpointed=worker_pb2.Checkpointed(execution_id=answer.execution_id, committed=answer.committed)
    )


# ---- runs ---------------------------------------------------------------------------------

_STATUS_OUT = {
    RunStatus.QUEUED: api_pb2.RUN_STATUS_QUEUED,
    RunStatus.RUNNING: api_pb2.RUN_STATUS_RUNNING,
    RunStatus.SLEEPING: api_pb2.RUN_STATUS_SLEEPING,
    RunStatus.WAITING: api_pb2.RUN_STATUS_WAITING,
    RunStatus.COMPLETED: api_pb2.RUN_STATUS_COMPLETED,
    RunStatus.FAILED: api_pb2.RUN_STATUS_FAILED,
    RunStatus.CANCELLED: api_pb2.RUN_STATUS_CANCELLED,
}
_STATUS_IN: dict[int, RunStatus] = {int(pb): status for status, pb in _STATUS_OUT.items()}


def page_token_in(token: str) -> str:
    """Page tokens are run ids (ULIDs): the list continues below that id."""
    if token and not _ULID.fullmatch(token):
        raise RequestError(f"page_token {token[:40]!r} is not a token this API returned")
    return token


def status_in(value: int) -> RunStatus | None:
    if value == api_pb2.RUN_STATUS_UNSPECIFIED:
        return None
    status = _STATUS_IN.get(value)
    if status is None:
        raise RequestError(f"unknown run status {value}")
    return status


def _step_out(step: StepRecord) -> api_pb2.Step:
    pb = api_pb2.Step(
        id=step.id,
        name=step.name,
        index=step.index,
        status=api_pb2.STEP_STATUS_COMPLETED if step.status is StepStatus.COMPLETED else api_pb2.STEP_STATUS_FAILED,
        attempts=step.attempts,
        started_at_ms=step.started_ms,
        ended_at_ms=step.ended_ms,
    )
    if step.output_json is not None:
        pb.output_json = step.output_json
    if step.error is not None:
        pb.error.CopyFrom(failure_out(step.error))
    return pb


def run_out(run: RunRecord) -> api_pb2.Run:
    pb = api_pb2.Run(
        id=run.id,
        app_id=run.app_id,
        function_id=run.function_id,
        event_id=run.event_id,
        status=_STATUS_OUT[run.status],
        created_at_ms=run.created_ms,
        started_at_ms=run.started_ms,
        ended_at_ms=run.ended_ms,
        steps=[_step_out(step) for step in run.steps],
    )
    if run.output_json is not None:
        pb.output_json = run.output_json
    if run.error is not None:
        pb.error.CopyFrom(failure_out(run.error))
    return pb


def metrics_out(metrics: Metrics, commits: int) -> api_pb2.GetMetricsResponse:
    return api_pb2.GetMetricsResponse(commits=commits, **dataclasses.asdict(metrics))


def function_out(spec: FunctionSpec, connected: int) -> api_pb2.FunctionInfo:
    return api_pb2.FunctionInfo(
        app_id=spec.app_id,
        id=spec.id,
        event_triggers=list(spec.event_triggers),
        retries=spec.retries,
        optimize_parallelism=spec.optimize_parallelism,
        connected_workers=connected,
        start_timeout_ms=spec.start_timeout_ms,
        finish_timeout_ms=spec.finish_timeout_ms,
        concurrency=[common_pb2.ConcurrencyLimit(limit=c.limit, key=c.key) for c in spec.concurrency],
        on_failure=spec.on_failure,
    )
