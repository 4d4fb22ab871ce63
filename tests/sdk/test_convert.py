"""Protobuf <-> SDK types (durably._convert)."""

from __future__ import annotations

from datetime import UTC, datetime

import durably
from durably import _convert
from durably._execution import ExecutionOutcome
from durably._ops import OpKind, StepOp
from durably._types import ErrorInfo
from durably.protocol.v1 import api_pb2, common_pb2, worker_pb2


def test_run_from_pb() -> None:
    run = api_pb2.Run(
        id="r",
        app_id="app",
        function_id="f",
        event_id="e",
        status=api_pb2.RUN_STATUS_FAILED,
        output_json=b"",
        error=common_pb2.Failure(name="StepError", message="m", code="step_errored", non_retriable=True),
        created_at_ms=1_700_000_000_000,
        started_at_ms=1_700_000_000_500,
        ended_at_ms=0,
        steps=[
            api_pb2.Step(
                id="h1", name="one", index=0, status=api_pb2.STEP_STATUS_COMPLETED, output_json=b'{"a":1}', attempts=1
            ),
            api_pb2.Step(
                id="h2",
                name="two",
                index=1,
                status=api_pb2.STEP_STATUS_FAILED,
                error=common_pb2.Failure(name="E"),
                attempts=4,
            ),
        ],
    )
    got = _convert.run_from_pb(run)
    assert got.status == "failed"
    assert got.status is durably.RunStatus.FAILED
    assert got.output is None
    assert got.error == ErrorInfo(name="StepError", message="m", code="step_errored", non_retriable=True)
    assert got.created_at == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert got.started_at is not None and got.started_at.tzinfo is UTC
    assert got.ended_at is None
    one, two = got.steps
    assert (one.name, one.status, one.output, one.error, one.attempts) == ("one", "completed", {"a": 1}, None, 1)
    assert (two.name, two.index, two.status, two.output, two.attempts) == ("two", 1, "failed", None, 4)
    assert two.error is not None and two.error.name == "E"
    assert not durably.RunStatus.RUNNING.ended and got.status.ended


def test_events_both_ways() -> None:
    event = durably.Event(name="n", data={"k": "v"}, id="i", ts=5)
    assert _convert.event_from_pb(_convert.event_to_pb(event)) == event
    assert _convert.event_from_pb(common_pb2.Event(name="n")) == durably.Event(name="n")
    sent = _convert.event_to_pb(durably.Event(name="n"))
    assert (sent.id, sent.ts_ms, sent.data_json) == ("", 0, b"{}")


def test_execution_result_has_exactly_one_outcome() -> None:
    op = StepOp(OpKind.STEP_RUN, "h", "s", 0, 1, 2, data_json=b"1")
    returned = _convert.execution_result_to_pb("x", ExecutionOutcome(ops=[op], output_json=b"null"))
    assert returned.WhichOneof("outcome") == "output_json" and returned.output_json == b"null"
    assert returned.ops[0] == worker_pb2.StepOp(
        op=worker_pb2.OPCODE_STEP_RUN, id="h", name="s", index=0, data_json=b"1", started_at_ms=1, ended_at_ms=2
    )
    assert not returned.ops[0].HasField("error")
    yielded = _convert.execution_result_to_pb("x", ExecutionOutcome(yielded=True))
    assert yielded.WhichOneof("outcome") == "yielded"
    failed = _convert.execution_result_to_pb("x", ExecutionOutcome(error=ErrorInfo("E", "m")))
    assert failed.WhichOneof("outcome") == "error" and failed.error.name == "E"


def test_register_message() -> None:
    client = durably.Client("app", address="127.0.0.1:9")

    @client.function(id="f", trigger=durably.on_event("e"), retries=5, optimize_parallelism=True)
    async def fn(ctx: durably.Context) -> None:
        return None

    message = _convert.register_message("app", [fn], 8, "host:1", "0.1.0")
    assert message.register == worker_pb2.Register(
        app_id="app",
        functions=[
            worker_pb2.FunctionConfig(
                id="f", triggers=[worker_pb2.Trigger(event="e")], retries=5, optimize_parallelism=True
            )
        ],
        capacity=8,
        worker_name="host:1",
        sdk_version="0.1.0",
        accepts_batches=True,
        keeps_reported=True,
    )


def test_failures_carry_retry_after_both_ways() -> None:
    info = ErrorInfo("RetryAfterError", "later", code="retry_after_error", retry_after_ms=1500)
    message = _convert.failure_to_pb(info)
    assert message.retry_after_ms == 1500
    assert _convert.failure_from_pb(message) == info


def test_send_gives_every_event_an_id_before_the_first_try() -> None:
    """So that gRPC's retry of a send whose answer was lost stores each event once."""
    events = [durably.Event("a/b"), durably.Event("a/b", id="mine"), durably.Event("a/b")]
    request = _convert.send_events_request(events)
    first, mine, third = (event.id for event in request.events)
    assert mine == "mine"
    assert len(first) == len(third) == 26 and first != third, (first, third)
