"""Where a worker's report is merged into its run: which steps are recorded, what runs next.

`merge_report` only decides; it changes nothing. The caller commits the decision and
records the steps in the run's state only after the commit, so memory never holds a
result the file does not.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from durably_server._core import CoreError, DuplicateStep, LimitExceeded
from durably_server.convert import loads_strict
from durably_server.engine.runs import ActiveRun
from durably_server.model import (
    ExecutionReport,
    Failure,
    OpKind,
    QueueItem,
    RunStatus,
    StepOp,
    StepRecord,
    StepStatus,
)


@dataclass(slots=True)
class Merge:
    steps: list[StepRecord] = field(default_factory=list)
    # Set when the run ends with this report.
    status: RunStatus | None = None
    output_json: bytes | None = None
    error: Failure | None = None
    # Attempt number of the execution to queue next (None: nothing to queue).
    next_attempt: int | None = None


def _protocol_error(message: str) -> Failure:
    return Failure("ProtocolError", message, code="protocol_error", non_retriable=True)


def _is_json(raw: bytes) -> bool:
    try:
        loads_strict(raw)
    except ValueError:
        return False
    return True


def merge_report(run: ActiveRun, item: QueueItem, report: ExecutionReport, max_attempts: int) -> Merge:
    merge = Merge()
    retry_left = item.attempt + 1 < max_attempts
    seen: set[str] = set()
    for op in report.ops:
        if op.kind is OpKind.STEP_ERROR:
            assert op.error is not None
            if retry_left and not op.error.non_retriable:
                # The step is retried alone by the next execution; nothing is recorded.
                merge.next_attempt = item.attempt + 1
                continue
            payload, status = op.error.to_json(), StepStatus.FAILED
        else:
            if not _is_json(op.data_json):
                return _fail(merge, _protocol_error(f'step "{op.name}": result is not valid JSON'))
            payload, status = op.data_json, StepStatus.COMPLETED
        if op.id in seen:
            return _fail(merge, _protocol_error(f'step "{op.name}" ({op.id}) was reported twice'))
        seen.add(op.id)
        try:
            run.state.check(op.id, op.name, op.index, len(payload))
        except DuplicateStep:
            continue  # already recorded: a step's outcome never changes
        except LimitExceeded as exc:
            return _fail(merge, Failure(type(exc).__name__, str(exc), code="limit_exceeded", non_retriable=True))
        except CoreError as exc:
            return _fail(merge, _protocol_error(str(exc)))
        merge.steps.append(_record(run.id, op, status, payload, item.attempt + 1))

    if merge.next_attempt is not None:
        return merge
    if report.output_json is not None:
        if not _is_json(report.output_json):
            return _fail(merge, _protocol_error("the handler's output is not valid JSON"))
        merge.status, merge.output_json = RunStatus.COMPLETED, report.output_json
    elif report.error is not None:
        if report.error.non_retriable or not retry_left:
            return _fail(merge, report.error)
        merge.next_attempt = item.attempt + 1
    elif report.ops:
        merge.next_attempt = 0  # a fresh execution discovers what comes next
    elif retry_left:
        # A handler that stops without reporting a step would loop forever: count it as a failure.
        merge.next_attempt = item.attempt + 1
    else:
        return _fail(merge, _protocol_error("the worker yielded without reporting any step"))
    return merge


def _fail(merge: Merge, error: Failure) -> Merge:
    merge.status, merge.error, merge.next_attempt = RunStatus.FAILED, error, None
    return merge


def _record(run_id: str, op: StepOp, status: StepStatus, payload: bytes, attempts: int) -> StepRecord:
    failed = status is StepStatus.FAILED
    return StepRecord(
        run_id=run_id,
        id=op.id,
        name=op.name,
        index=op.index,
        status=status,
        output_json=None if failed else payload,
        error=op.error if failed else None,
        attempts=attempts,
        started_ms=op.started_ms,
        ended_ms=op.ended_ms,
    )
