"""merge_report decides what a worker's report does to its run; these pin each decision."""

from __future__ import annotations

import hashlib

from durably_server._core import RunState
from durably_server.engine.merge import merge_checkpoint, merge_report
from durably_server.engine.retry import RetryPolicy
from durably_server.engine.runs import ActiveRun
from durably_server.model import (
    Event,
    ExecutionReport,
    Failure,
    OpKind,
    QueueItem,
    RunStatus,
    StepOp,
    StepStatus,
)

POLICY = RetryPolicy(base_ms=100, max_ms=1000, jitter=0.0)


def sha(name: str) -> str:
    return hashlib.sha1(name.encode()).hexdigest()


def run_with(state: RunState | None = None) -> ActiveRun:
    event = Event("e1", "demo/run", b"{}", 1)
    return ActiveRun("r1", "app", "fn", event, RunState() if state is None else state, RunStatus.RUNNING)


def item(n: int, target: str = "", attempt: int = 0) -> QueueItem:
    return QueueItem(n, "r1", "app", "fn", attempt, 0, target)


def ran(name: str, data: bytes = b"1") -> StepOp:
    return StepOp(OpKind.STEP_RUN, sha(name), name, 0, data)


def failed(name: str, non_retriable: bool = False) -> StepOp:
    return StepOp(OpKind.STEP_ERROR, sha(name), name, 0, error=Failure("ValueError", "boom", "", "", non_retriable))


def planned(name: str) -> StepOp:
    return StepOp(OpKind.STEP_PLANNED, sha(name), name, 0)


def report(*ops: StepOp, **outcome: object) -> ExecutionReport:
    return ExecutionReport("x", ops, **outcome)  # type: ignore[arg-type]


def test_inline_step_then_yield_records_it_and_discovers_next() -> None:
    merge = merge_report(run_with(), [item(1)], report(ran("a")), 4, False, POLICY)
    assert [s.name for s in merge.steps] == ["a"] and merge.discover and merge.status is None


def test_last_step_and_output_complete_the_run() -> None:
    merge = merge_report(run_with(), [item(1)], report(ran("c"), output_json=b'{"ok":1}'), 4, False, POLICY)
    assert merge.status is RunStatus.COMPLETED and merge.output_json == b'{"ok":1}' and len(merge.steps) == 1


def test_planned_steps_wait_and_a_pending_one_is_planned_once() -> None:
    run = run_with()
    run.pending.add(sha("a"))
    merge = merge_report(run, [item(1)], report(planned("a"), planned("b"), planned("b")), 4, False, POLICY)
    assert [op.name for op in merge.planned] == ["b"] and not merge.discover and not merge.steps


def test_a_discovery_that_replans_pending_steps_waits_quietly() -> None:
    run = run_with()
    run.pending.update({sha("a"), sha("b")})
    merge = merge_report(run, [item(1)], report(planned("a"), planned("b")), 4, False, POLICY)
    assert not merge.planned and not merge.discover and not merge.retries and merge.status is None


def test_failing_target_is_retried_alone_and_default_mode_rediscovers() -> None:
    run = run_with()
    run.pending.update({sha("a"), sha("b")})
    items = [item(1, sha("a")), item(2, sha("b"))]
    merge = merge_report(run, items, report(ran("a"), failed("b")), 4, False, POLICY)
    assert [s.name for s in merge.steps] == ["a"]
    assert [(i.target, attempt, delay) for i, attempt, delay in merge.retries] == [(sha("b"), 1, 100)]
    assert merge.discover  # without optimize_parallelism every completion re-invokes


def test_optimize_parallelism_waits_for_the_whole_group() -> None:
    run = run_with()
    run.pending.update({sha("a"), sha("b")})
    merge = merge_report(run, [item(1, sha("a"))], report(ran("a")), 4, True, POLICY)
    assert merge.steps and not merge.discover
    merge = merge_report(run, [item(2, sha("b"))], report(ran("b")), 4, True, POLICY)
    assert not merge.discover  # "a" is still pending in `run` (the caller records after commit)
    run.pending.discard(sha("a"))
    merge = merge_report(run, [item(2, sha("b"))], report(ran("b")), 4, True, POLICY)
    assert merge.discover


def test_exhausted_step_is_recorded_as_failed_for_the_handler_to_see() -> None:
    merge = merge_report(run_with(), [item(1, attempt=3)], report(failed("a")), 4, False, POLICY)
    assert merge.steps[0].status is StepStatus.FAILED and merge.steps[0].attempts == 4 and merge.discover


def test_non_retriable_step_error_is_recorded_at_once() -> None:
    merge = merge_report(run_with(), [item(1)], report(failed("a", non_retriable=True)), 4, False, POLICY)
    assert merge.steps[0].status is StepStatus.FAILED and not merge.retries


def test_unreported_target_is_retried_then_fails_the_run() -> None:
    target = item(1, sha("a"), attempt=0)
    merge = merge_report(run_with(), [target], report(), 2, False, POLICY)
    assert [(i.id, a) for i, a, _ in merge.retries] == [(1, 1)]
    merge = merge_report(run_with(), [item(1, sha("a"), attempt=1)], report(), 2, False, POLICY)
    assert merge.status is RunStatus.FAILED and merge.error is not None and merge.error.name == "StepNotFound"


def test_function_error_retries_then_fails_and_non_retriable_fails_at_once() -> None:
    boom = Failure("KeyError", "k")
    assert merge_report(run_with(), [item(1)], report(error=boom), 4, False, POLICY).retries
    assert (
        merge_report(run_with(), [item(1, attempt=3)], report(error=boom), 4, False, POLICY).status is RunStatus.FAILED
    )
    fatal = Failure("NonRetriableError", "no", non_retriable=True)
    assert merge_report(run_with(), [item(1)], report(error=fatal), 4, False, POLICY).error == fatal


def test_oversized_output_fails_the_run_with_the_limit_error() -> None:
    state = RunState(max_step_bytes=10)
    merge = merge_report(run_with(state), [item(1)], report(ran("big", b'"0123456789"')), 4, False, POLICY)
    assert merge.status is RunStatus.FAILED and merge.error is not None
    assert merge.error.name == "StepOutputTooLarge" and merge.error.code == "limit_exceeded"


def test_a_report_under_a_wrong_id_is_a_protocol_error() -> None:
    bad = StepOp(OpKind.STEP_RUN, sha("other"), "a", 0, b"1")
    merge = merge_report(run_with(), [item(1)], report(bad), 4, False, POLICY)
    assert merge.status is RunStatus.FAILED and merge.error is not None and merge.error.name == "ProtocolError"


def test_invalid_json_and_nan_results_are_refused() -> None:
    for data in (b"{nope", b"NaN"):
        merge = merge_report(run_with(), [item(1)], report(ran("a", data)), 4, False, POLICY)
        assert merge.status is RunStatus.FAILED


def test_yield_without_any_step_counts_as_a_failed_attempt() -> None:
    assert merge_report(run_with(), [item(1)], report(), 4, False, POLICY).retries
    assert merge_report(run_with(), [item(1, attempt=3)], report(), 4, False, POLICY).status is RunStatus.FAILED


def test_a_recorded_step_reported_again_is_ignored() -> None:
    state = RunState()
    state.record(sha("a"), "a", 0, b"1", False)
    merge = merge_report(run_with(state), [item(1)], report(ran("a", b"2"), ran("b")), 4, False, POLICY)
    assert [s.name for s in merge.steps] == []  # a discovery runs at most one step: "a" settled it


def test_backoff_doubles_up_to_the_cap_and_retry_after_wins() -> None:
    policy = RetryPolicy(base_ms=100, max_ms=1000, jitter=0.0)
    assert [policy.delay_ms(n) for n in range(1, 7)] == [100, 200, 400, 800, 1000, 1000]
    assert policy.delay_ms(3, Failure("RetryAfterError", "later", retry_after_ms=5000)) == 5000
    jittery = RetryPolicy(base_ms=1000, max_ms=10_000, jitter=0.2)
    assert all(1000 <= jittery.delay_ms(1) <= 1200 for _ in range(100))


def test_a_retried_step_waits_its_backoff() -> None:
    merge = merge_report(run_with(), [item(1, attempt=2)], report(failed("a")), 5, False, POLICY)
    assert [(a, d) for _, a, d in merge.retries] == [(3, 400)]


def test_a_checkpoint_records_steps_that_ran_with_the_discovery_attempt() -> None:
    steps = merge_checkpoint(run_with(), item(1, attempt=2), (ran("a"),))
    assert steps is not None and [(s.name, s.status, s.attempts) for s in steps] == [("a", StepStatus.COMPLETED, 3)]


def test_a_checkpoint_that_breaks_a_rule_records_nothing() -> None:
    state = RunState()
    state.record(sha("a"), "a", 0, b"1", False)
    run = run_with(state)
    run.pending.add(sha("p"))
    for ops in ((failed("x"),), (planned("x"),), (ran("a"),), (ran("p"),), (ran("x", b"{nope"),)):
        assert merge_checkpoint(run, item(1), ops) is None, ops
    big = b'"' + b"x" * (4 * 1024 * 1024) + b'"'
    assert merge_checkpoint(run, item(1), (ran("huge", big),)) is None


def test_a_discovery_that_stops_after_checkpoints_is_followed_by_another() -> None:
    merge = merge_report(run_with(), [item(1)], report(), 4, False, POLICY, checkpointed=True)
    assert merge.discover and merge.status is None and not merge.retries
