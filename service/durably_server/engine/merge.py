"""Where a worker's report is merged into its run: which steps are recorded, what runs next.

`merge_report` only decides; it changes nothing. The caller commits the decision and
updates the run in memory only after the commit, so memory never holds a result the
file does not.

One lease holds either a discovery (replay the handler, see what comes next) or the
targets of planned steps (run exactly those). Each planned step is its own queue item
with its own attempts, so a failing parallel step is retried alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from durably_server._core import MAX_STEPS, CoreError, LimitExceeded, check_json
from durably_server.engine.coordination import COORDINATION_OPS
from durably_server.engine.retry import RetryPolicy
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
    # Leased items to run again: (item, next attempt number, delay in ms before it).
    retries: list[tuple[QueueItem, int, int]] = field(default_factory=list)
    # Newly planned steps: each becomes a queued target.
    planned: list[StepOp] = field(default_factory=list)
    # Sleeps, waits, invokes and sent events: the executor completes these (see coordination.py).
    coordination: list[StepOp] = field(default_factory=list)
    # A discovery must follow (the caller coalesces it with one already running).
    discover: bool = False

    def fail(self, error: Failure) -> Merge:
        """The run fails with `error`: nothing else this report asked for happens."""
        self.status, self.error = RunStatus.FAILED, error
        self.retries.clear()
        self.planned.clear()
        self.coordination.clear()
        self.discover = False
        return self


_NEW_STEP_OPS = COORDINATION_OPS | {OpKind.STEP_PLANNED}


def _protocol_error(message: str) -> Failure:
    return Failure("ProtocolError", message, code="protocol_error", non_retriable=True)


def _limit_error(exc: LimitExceeded) -> Failure:
    return Failure(type(exc).__name__, str(exc), code="limit_exceeded", non_retriable=True)


def _is_json(raw: bytes) -> bool:
    try:
        check_json(raw)  # in Rust: walks the bytes without building Python objects
    except ValueError:
        return False
    return True


def merge_checkpoint(run: ActiveRun, discovery: QueueItem, ops: tuple[StepOp, ...]) -> list[StepRecord] | None:
    """The steps a discovery ran inline and checkpoints before it goes on, ready to commit.

    None when any of them breaks a rule: nothing is recorded, the worker stops the handler and
    puts them in its final report, and `merge_report` of that report says what happens (a step
    past a limit fails the run, a run that has ended ignores it), so there is one set of rules.
    """
    for op in ops:
        if op.kind is not OpKind.STEP_RUN or op.id in run.pending or run.state.contains(op.id):
            return None
        if not _is_json(op.data_json):
            return None
    try:
        run.state.check_batch([(op.id, op.name, op.index, len(op.data_json)) for op in ops])
    except CoreError:
        return None
    return [_record(run.id, op, StepStatus.COMPLETED, op.data_json, discovery.attempt + 1) for op in ops]


def merge_report(
    run: ActiveRun,
    items: list[QueueItem],
    report: ExecutionReport,
    max_attempts: int,
    optimize: bool,
    policy: RetryPolicy,
    checkpointed: bool = False,
) -> Merge:
    """What a final (or early) report means for the run; `checkpointed`: the execution's discovery
    recorded steps through checkpoints before this report, so it made progress."""
    merge = Merge()
    by_target = {item.target: item for item in items if item.target}
    discovery = next((item for item in items if not item.target), None)
    settled: set[int] = set()  # ids of leased items that got an outcome

    def retry(item: QueueItem, failure: Failure | None) -> bool:
        if item.attempt + 1 >= max_attempts:
            return False
        merge.retries.append((item, item.attempt + 1, policy.delay_ms(item.attempt + 1, failure)))
        settled.add(item.id)
        return True

    outcomes: list[tuple[StepOp, StepStatus, bytes, QueueItem]] = []
    for op in report.ops:
        if op.kind in _NEW_STEP_OPS:
            # Only a discovery reports new steps; a step already pending or recorded is taken once.
            new = discovery is not None and op.id not in run.pending and not run.state.contains(op.id)
            if new and all(op.id != other.id for other in (*merge.planned, *merge.coordination)):
                (merge.planned if op.kind is OpKind.STEP_PLANNED else merge.coordination).append(op)
            continue
        owner = by_target.get(op.id) if by_target else discovery
        if owner is None or owner.id in settled or (owner is discovery and op.id in run.pending):
            continue  # not this execution's to report (a pending step runs only as a target)
        if op.kind is OpKind.STEP_ERROR:
            assert op.error is not None
            if not op.error.non_retriable and retry(owner, op.error):
                continue  # retried alone by the next execution; nothing is recorded
            payload, status = op.error.to_json(), StepStatus.FAILED
        else:
            if not _is_json(op.data_json):
                return merge.fail(_protocol_error(f'step "{op.name}": result is not valid JSON'))
            payload, status = op.data_json, StepStatus.COMPLETED
        settled.add(owner.id)
        if not run.state.contains(op.id):  # a result recorded before never changes
            outcomes.append((op, status, payload, owner))

    try:
        run.state.check_batch([(op.id, op.name, op.index, len(payload)) for op, _, payload, _ in outcomes])
        if merge.planned:
            for op in merge.planned:
                run.state.check(op.id, op.name, op.index, 0)
            planned_total = run.state.step_count + len(outcomes) + len(run.pending) + len(merge.planned)
            if planned_total > MAX_STEPS:
                return merge.fail(
                    Failure(
                        "StepLimitExceeded",
                        f"step limit exceeded: planning {len(merge.planned)} more steps would take the run to "
                        f"{planned_total} steps, over the limit of {MAX_STEPS} steps per run (max_steps)",
                        code="limit_exceeded",
                        non_retriable=True,
                    ),
                )
    except LimitExceeded as exc:
        return merge.fail(_limit_error(exc))
    except CoreError as exc:
        return merge.fail(_protocol_error(str(exc)))
    merge.steps = [_record(run.id, op, status, payload, owner.attempt + 1) for op, status, payload, owner in outcomes]

    # Targets the worker did not answer for: the error it gave, else "not found", decides.
    for item in by_target.values():
        if item.id in settled:
            continue
        error = report.error or Failure(
            "StepNotFound", f"the worker did not report planned step {item.target}", code="step_not_found"
        )
        if error.non_retriable or not retry(item, error):
            return merge.fail(error)

    if discovery is not None:
        if any(item is discovery for item, _, _ in merge.retries):
            pass  # its inline step failed: the retry is the next discovery
        elif report.output_json is not None:
            return _complete(run, merge, report.output_json)
        elif report.error is not None:
            if report.error.non_retriable or not retry(discovery, report.error):
                return merge.fail(report.error)
        elif merge.steps:
            merge.discover = True  # a step ran inline: find what comes next
        elif merge.planned or merge.coordination or run.pending:
            pass  # planned steps run now; the handler resumes when they are in
        elif checkpointed or any(op.kind in _NEW_STEP_OPS for op in report.ops):
            # It stopped after checkpoints, or planned steps that were recorded while it ran (its
            # view was stale): look again.
            merge.discover = True
        else:
            # A handler that stops without reporting a step would loop forever: count it as a failure.
            if not retry(discovery, None):
                return merge.fail(_protocol_error("the worker yielded without reporting any step"))
    elif merge.steps:
        # A planned step finished: with optimize_parallelism the handler is re-invoked once the
        # whole group is in; otherwise after each, so a race can see its winner at once.
        recorded = {step.id for step in merge.steps}
        still_pending = run.pending - recorded - {item.target for item, _, _ in merge.retries}
        merge.discover = not optimize or not still_pending
    return merge


def _complete(run: ActiveRun, merge: Merge, output_json: bytes) -> Merge:
    if not _is_json(output_json):
        return merge.fail(_protocol_error("the handler's output is not valid JSON"))
    try:
        run.state.check_output(len(output_json) + sum(len(s.output_json or b"") for s in merge.steps))
    except LimitExceeded as exc:
        return merge.fail(_limit_error(exc))
    merge.status, merge.output_json = RunStatus.COMPLETED, output_json
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
