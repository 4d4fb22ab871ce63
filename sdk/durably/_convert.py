"""The one place where protobuf messages and SDK types meet.

Everything else in the SDK works with the dataclasses of ``_types`` and ``_execution``; user code never
sees a protobuf object. Both clients and the worker build their requests and read their responses
through the functions below, so the two clients cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime

from google.protobuf.internal.containers import RepeatedCompositeFieldContainer

from durably._durations import to_ms
from durably._encryption import Encryption, open_error, open_event, open_json
from durably._execution import ExecutionOutcome, ExecutionRequest
from durably._function import CronTrigger, Function, Trigger
from durably._json import decode
from durably._memos import Incoming, Memos, Reported
from durably._ops import OpKind, OpRequest, StepOp
from durably._types import ErrorInfo, Event, FunctionInfo, Run, RunStatus, RunStep, check_event
from durably.errors import InvalidArgumentError
from durably.protocol.ids import new_id
from durably.protocol.v1 import api_pb2, common_pb2, worker_pb2

# --- small values ---------------------------------------------------------------------------------


def datetime_from_ms(ms: int) -> datetime | None:
    """Milliseconds since the epoch as an aware UTC datetime; 0 (unset) is None."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC) if ms else None


def failure_to_pb(error: ErrorInfo) -> common_pb2.Failure:
    return common_pb2.Failure(
        name=error.name,
        message=error.message,
        stack=error.stack,
        non_retriable=error.non_retriable,
        code=error.code,
        retry_after_ms=error.retry_after_ms,
    )


def failure_from_pb(failure: common_pb2.Failure) -> ErrorInfo:
    return ErrorInfo(
        name=failure.name,
        message=failure.message,
        stack=failure.stack,
        code=failure.code,
        non_retriable=failure.non_retriable,
        retry_after_ms=failure.retry_after_ms,
    )


_STATUS_FROM_PB: dict[api_pb2.RunStatus.ValueType, RunStatus] = {
    api_pb2.RUN_STATUS_QUEUED: RunStatus.QUEUED,
    api_pb2.RUN_STATUS_RUNNING: RunStatus.RUNNING,
    api_pb2.RUN_STATUS_SLEEPING: RunStatus.SLEEPING,
    api_pb2.RUN_STATUS_WAITING: RunStatus.WAITING,
    api_pb2.RUN_STATUS_COMPLETED: RunStatus.COMPLETED,
    api_pb2.RUN_STATUS_FAILED: RunStatus.FAILED,
    api_pb2.RUN_STATUS_CANCELLED: RunStatus.CANCELLED,
}
_STATUS_TO_PB = {status: number for number, status in _STATUS_FROM_PB.items()}


def run_status_from_pb(status: api_pb2.RunStatus.ValueType) -> RunStatus:
    # An unknown or unspecified status (a newer executor) reads as queued rather than crashing a query.
    return _STATUS_FROM_PB.get(status, RunStatus.QUEUED)


def run_status_to_pb(status: RunStatus | str) -> api_pb2.RunStatus.ValueType:
    try:
        return _STATUS_TO_PB[RunStatus(status)]
    except ValueError:
        valid = ", ".join(s.value for s in RunStatus)
        raise InvalidArgumentError(
            f"unknown run status {status!r}; use one of {valid}", status="INVALID_ARGUMENT"
        ) from None


# --- events ---------------------------------------------------------------------------------------


def event_to_pb(event: Event, position: int = 0, encryption: Encryption | None = None) -> common_pb2.Event:
    """An event ready to send; refuses (InvalidArgumentError) what the executor would refuse."""
    if not isinstance(event, Event):
        raise TypeError(f"send() takes durably.Event objects, got {type(event).__name__} at position {position}")
    try:
        data_json = check_event(event, f"event {position}", encryption)
    except ValueError as exc:
        raise InvalidArgumentError(str(exc), status="INVALID_ARGUMENT") from None
    return checked_event_to_pb(event, data_json)


def checked_event_to_pb(event: Event, data_json: bytes) -> common_pb2.Event:
    """An event that passed :func:`durably._types.check_event`, with the data JSON that check returned."""
    return common_pb2.Event(id=event.id or "", name=event.name, data_json=data_json, ts_ms=event.ts or 0)


def event_from_pb(event: common_pb2.Event, encryption: Encryption | None = None) -> Event:
    data = decode(event.data_json)
    received = Event(
        name=event.name,
        data=data if isinstance(data, dict) else {},
        id=event.id or None,
        ts=event.ts_ms or None,
    )
    return open_event(encryption, received)


# --- the client API -------------------------------------------------------------------------------


def send_events_request(
    events: Event | Sequence[Event], encryption: Encryption | None = None
) -> api_pb2.SendEventsRequest:
    """The request, every event with an id: one made here for an event without one, so that gRPC's
    retry of a call whose answer was lost (``CHANNEL_OPTIONS``) stores each event once."""
    items = [events] if isinstance(events, Event) else list(events)
    request = api_pb2.SendEventsRequest(events=[event_to_pb(event, i, encryption) for i, event in enumerate(items)])
    for event in request.events:
        if not event.id:
            event.id = new_id()
    return request


def send_events_ids(response: api_pb2.SendEventsResponse) -> list[str]:
    return list(response.ids)


def get_run_request(run_id: str) -> api_pb2.GetRunRequest:
    return api_pb2.GetRunRequest(run_id=_run_id(run_id))


def wait_for_run_request(run_id: str, timeout_ms: int) -> api_pb2.WaitForRunRequest:
    return api_pb2.WaitForRunRequest(run_id=_run_id(run_id), timeout_ms=max(1, timeout_ms))


def cancel_run_request(run_id: str) -> api_pb2.CancelRunRequest:
    return api_pb2.CancelRunRequest(run_id=_run_id(run_id))


def list_runs_request(
    function_id: str | None, event_id: str | None, status: RunStatus | str | None, limit: int
) -> api_pb2.ListRunsRequest:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
        raise InvalidArgumentError(f"limit must be between 1 and 1000, got {limit!r}", status="INVALID_ARGUMENT")
    return api_pb2.ListRunsRequest(
        function_id=function_id or "",
        event_id=event_id or "",
        status=run_status_to_pb(status) if status is not None else api_pb2.RUN_STATUS_UNSPECIFIED,
        limit=limit,
    )


def list_functions_request(app_id: str) -> api_pb2.ListFunctionsRequest:
    return api_pb2.ListFunctionsRequest(app_id=app_id)


def run_from_response(
    response: api_pb2.GetRunResponse | api_pb2.CancelRunResponse, encryption: Encryption | None = None
) -> Run:
    return run_from_pb(response.run, encryption)


def runs_from_response(response: api_pb2.ListRunsResponse, encryption: Encryption | None = None) -> list[Run]:
    return [run_from_pb(run, encryption) for run in response.runs]


def functions_from_response(response: api_pb2.ListFunctionsResponse) -> list[FunctionInfo]:
    return [
        FunctionInfo(
            app_id=info.app_id,
            id=info.id,
            event_triggers=list(info.event_triggers),
            retries=info.retries,
            optimize_parallelism=info.optimize_parallelism,
            connected_workers=info.connected_workers,
        )
        for info in response.functions
    ]


def run_from_pb(run: api_pb2.Run, encryption: Encryption | None = None) -> Run:
    """A run as the executor stores it, with what ``encryption`` sealed opened."""
    return Run(
        id=run.id,
        app_id=run.app_id,
        function_id=run.function_id,
        event_id=run.event_id,
        status=run_status_from_pb(run.status),
        output=decode(open_json(encryption, run.output_json)),
        error=open_error(encryption, failure_from_pb(run.error)) if run.HasField("error") else None,
        created_at=datetime_from_ms(run.created_at_ms),
        started_at=datetime_from_ms(run.started_at_ms),
        ended_at=datetime_from_ms(run.ended_at_ms),
        steps=[_run_step_from_pb(step, encryption) for step in run.steps],
    )


def _run_step_from_pb(step: api_pb2.Step, encryption: Encryption | None) -> RunStep:
    failed = step.status == api_pb2.STEP_STATUS_FAILED
    return RunStep(
        id=step.id,
        name=step.name,
        index=step.index,
        status="failed" if failed else "completed",
        output=None if failed else decode(open_json(encryption, step.output_json)),
        error=open_error(encryption, failure_from_pb(step.error)) if step.HasField("error") else None,
        attempts=step.attempts,
        started_at=datetime_from_ms(step.started_at_ms),
        ended_at=datetime_from_ms(step.ended_at_ms),
    )


def _run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not run_id:
        raise InvalidArgumentError(f"run_id must be a non-empty str, got {run_id!r}", status="INVALID_ARGUMENT")
    return run_id


# --- the worker stream ----------------------------------------------------------------------------


def register_message(
    app_id: str, functions: Iterable[Function], capacity: int, worker_name: str, sdk_version: str
) -> worker_pb2.WorkerMessage:
    return worker_pb2.WorkerMessage(
        register=worker_pb2.Register(
            app_id=app_id,
            functions=[function_config(function) for function in functions],
            capacity=capacity,
            worker_name=worker_name,
            sdk_version=sdk_version,
            accepts_batches=True,
            keeps_reported=True,
        )
    )


def function_config(function: Function) -> worker_pb2.FunctionConfig:
    """A function's declaration as the executor registers it."""
    timeouts = function.timeouts
    return worker_pb2.FunctionConfig(
        id=function.id,
        triggers=[_trigger_to_pb(trigger) for trigger in function.triggers],
        retries=function.retries,
        optimize_parallelism=function.optimize_parallelism,
        start_timeout_ms=to_ms(timeouts.start) if timeouts is not None and timeouts.start is not None else 0,
        finish_timeout_ms=to_ms(timeouts.finish) if timeouts is not None and timeouts.finish is not None else 0,
        concurrency=[common_pb2.ConcurrencyLimit(limit=c.limit, key=c.key or "") for c in function.concurrency],
        on_failure=function.on_failure.id if function.on_failure is not None else "",
        cancel_on=[
            worker_pb2.CancelOn(event=rule.event, match=rule.match or "", if_expression=rule.if_ or "")
            for rule in function.cancel_on
        ],
    )


def _trigger_to_pb(trigger: Trigger) -> worker_pb2.Trigger:
    if isinstance(trigger, CronTrigger):
        return worker_pb2.Trigger(cron=worker_pb2.CronTrigger(schedule=trigger.schedule, timezone=trigger.timezone))
    return worker_pb2.Trigger(event=trigger.event, if_expression=trigger.if_ or "")


def heartbeat_message(in_flight: Iterable[str]) -> worker_pb2.WorkerMessage:
    return worker_pb2.WorkerMessage(heartbeat=worker_pb2.Heartbeat(in_flight=list(in_flight)))


def result_message(result: worker_pb2.ExecutionResult) -> worker_pb2.WorkerMessage:
    message = worker_pb2.WorkerMessage()
    message.result.CopyFrom(result)  # ~10x faster than WorkerMessage(result=...) for a 4 MB result
    return message


def batch_message(messages: list[worker_pb2.WorkerMessage]) -> worker_pb2.WorkerMessage:
    batch = worker_pb2.WorkerMessage()
    batch.batch.messages.extend(messages)  # one copy; nesting constructors would copy twice
    return batch


def memos_from_pb(memos: Iterable[worker_pb2.Memo]) -> Iterator[tuple[str, Incoming]]:
    """Memo data stays raw bytes here: it is decoded only if the handler replays that step."""
    for memo in memos:
        kind = memo.WhichOneof("outcome")
        if kind == "error":
            yield memo.id, failure_from_pb(memo.error)
        elif kind == "reported_in":
            yield memo.id, Reported(memo.reported_in)
        else:
            yield memo.id, memo.data_json


def execution_request_from_pb(
    execute: worker_pb2.Execute, memos: Memos, encryption: Encryption | None = None
) -> ExecutionRequest:
    """``memos``: the run's outcomes this execution replays, as the worker's cache assembled them."""
    return ExecutionRequest(
        execution_id=execute.execution_id,
        run_id=execute.run_id,
        function_id=execute.function_id,
        event=event_from_pb(execute.event, encryption),
        memos=memos,
        encryption=encryption,
        attempt=execute.attempt,
        max_attempts=execute.max_attempts,
        targets=tuple(execute.targets),
        plan_only=execute.plan_only,
    )


_OPCODES = {
    OpKind.STEP_RUN: worker_pb2.OPCODE_STEP_RUN,
    OpKind.STEP_ERROR: worker_pb2.OPCODE_STEP_ERROR,
    OpKind.STEP_PLANNED: worker_pb2.OPCODE_STEP_PLANNED,
    OpKind.SLEEP: worker_pb2.OPCODE_SLEEP,
    OpKind.WAIT_FOR_EVENT: worker_pb2.OPCODE_WAIT_FOR_EVENT,
    OpKind.SEND_EVENT: worker_pb2.OPCODE_SEND_EVENT,
    OpKind.INVOKE: worker_pb2.OPCODE_INVOKE,
}


def _add_step_op(ops: RepeatedCompositeFieldContainer[worker_pb2.StepOp], op: StepOp) -> worker_pb2.StepOp:
    """Append ``op`` to a result's ``ops`` in place: building it apart and appending it would copy
    its data (a 4 MB result costs ~5 ms to copy)."""
    message = ops.add(
        op=_OPCODES[op.op],
        id=op.id,
        name=op.name,
        index=op.index,
        data_json=op.data_json,
        started_at_ms=op.started_at_ms,
        ended_at_ms=op.ended_at_ms,
    )
    if op.error is not None:
        message.error.CopyFrom(failure_to_pb(op.error))
    if op.request is not None:
        _request_to_pb(op.request, message)
    return message


def _request_to_pb(request: OpRequest, message: worker_pb2.StepOp) -> None:
    """The fields of a step the executor carries out (only those of its kind are set)."""
    message.wake_at_ms = request.wake_at_ms
    if request.wait is not None:
        wait = request.wait
        message.wait.CopyFrom(
            worker_pb2.WaitForEvent(
                event=wait.event, expires_at_ms=wait.expires_at_ms, match=wait.match, if_expression=wait.if_expression
            )
        )
    message.events.extend(checked_event_to_pb(event, data_json) for event, data_json in request.events)
    if request.invoke is not None:
        invoke = request.invoke
        message.invoke.CopyFrom(
            worker_pb2.Invoke(
                function_id=invoke.function_id, data_json=invoke.data_json, expires_at_ms=invoke.expires_at_ms
            )
        )


def execution_result_to_pb(execution_id: str, outcome: ExecutionOutcome) -> worker_pb2.ExecutionResult:
    result = worker_pb2.ExecutionResult(execution_id=execution_id)
    for op in outcome.ops:
        _add_step_op(result.ops, op)
    if outcome.yielded:
        result.yielded = True
    elif outcome.error is not None:
        result.error.CopyFrom(failure_to_pb(outcome.error))
    else:
        result.output_json = outcome.output_json if outcome.output_json is not None else b"null"
    return result


def partial_results(execution_id: str, ops: Iterable[StepOp], max_bytes: int) -> list[worker_pb2.ExecutionResult]:
    """Early reports of finished targets, each at most about `max_bytes` (one op may exceed it alone),
    so that many large results finishing together never make a message too large for the stream."""
    results: list[worker_pb2.ExecutionResult] = []
    size = 0
    for op in ops:
        op_size = _size_of(op)
        if not results or (size + op_size > max_bytes and len(results[-1].ops) > 0):
            results.append(worker_pb2.ExecutionResult(execution_id=execution_id, partial=True))
            size = 0
        _add_step_op(results[-1].ops, op)
        size += op_size
    return results


def _size_of(op: StepOp) -> int:
    """About the encoded size of a target's op (its data or its error, plus ids and times)."""
    error = op.error
    return len(op.data_json) + (len(error.message) + len(error.stack) if error is not None else 0) + 128


def checkpoint_message(execution_id: str, ops: Iterable[StepOp]) -> worker_pb2.WorkerMessage:
    """A checkpointing discovery's partial result, the steps it ran inline to commit before it goes on,
    built inside the message that carries it (no copy of a big result)."""
    message = worker_pb2.WorkerMessage()
    result = message.result
    result.execution_id = execution_id
    result.partial = True
    for op in ops:
        _add_step_op(result.ops, op)
    return message


def failure_result(execution_id: str, error: ErrorInfo) -> worker_pb2.ExecutionResult:
    """A result that reports only a failure (unknown function, an SDK fault)."""
    return execution_result_to_pb(execution_id, ExecutionOutcome(error=error))


def need_full_state_result(execution_id: str) -> worker_pb2.ExecutionResult:
    """The answer to an ``Execute`` whose ``memo_base`` the worker cannot build on: nothing ran."""
    return worker_pb2.ExecutionResult(execution_id=execution_id, need_full_state=True)


def ends_run(result: worker_pb2.ExecutionResult) -> bool:
    """Whether the executor will end the run with this result (output, or an error it will not retry)."""
    outcome = result.WhichOneof("outcome")
    return outcome == "output_json" or (outcome == "error" and result.error.non_retriable)
