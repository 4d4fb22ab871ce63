"""Hand-made ``Execute`` messages and a way to run them through the worker's entry point."""

from __future__ import annotations

import itertools
import json
from typing import Any

import durably
from durably._convert import memos_from_pb
from durably._ids import hash_step_id, pre_hash_id
from durably._memos import Memos
from durably._worker import handle_execute
from durably.protocol.v1 import common_pb2, worker_pb2

client = durably.Client(app_id="unit", address="127.0.0.1:9")  # never connected by these tests
_serial = itertools.count()


def sid(name: str, index: int = 0) -> str:
    """Hashed id of the ``index``-th occurrence of step ``name``."""
    return hash_step_id(pre_hash_id(name, index))


def memo_ok(name: str, value: Any, index: int = 0) -> worker_pb2.Memo:
    return worker_pb2.Memo(id=sid(name, index), data_json=json.dumps(value).encode())


def memo_err(name: str, error_name: str, message: str, index: int = 0) -> worker_pb2.Memo:
    failure = common_pb2.Failure(name=error_name, message=message, stack="Traceback: ...", code="unknown")
    return worker_pb2.Memo(id=sid(name, index), error=failure)


def make_execute(
    function: durably.Function,
    memos: list[worker_pb2.Memo] | None = None,
    *,
    data: dict[str, Any] | None = None,
    attempt: int = 0,
    run_id: str = "run-1",
    targets: list[str] | None = None,
    plan_only: bool = False,
    memo_base: int = 0,
) -> worker_pb2.Execute:
    return worker_pb2.Execute(
        execution_id=f"exec-{run_id}-{memo_base + len(memos or [])}-{attempt}-{next(_serial)}",
        run_id=run_id,
        function_id=function.id,
        event=common_pb2.Event(
            id="evt-1", name="test/event", data_json=json.dumps(data or {}).encode(), ts_ms=1_700_000_000_000
        ),
        memos=memos or [],
        attempt=attempt,
        max_attempts=4,
        targets=targets or [],
        plan_only=plan_only,
        memo_base=memo_base,
    )


async def no_checkpoint(message: worker_pb2.WorkerMessage) -> bool:
    """For executions that must not checkpoint (targeted, or of functions without checkpointing)."""
    raise AssertionError(f"unexpected checkpoint: {message}")


async def execute_reports(
    function: durably.Function, memos: list[worker_pb2.Memo] | None = None, **kwargs: Any
) -> list[worker_pb2.ExecutionResult]:
    """Every result one execution sends, in order: its partial results, then its final one. The whole
    state is sent (``memo_base`` 0), straight through the worker's entry point."""
    message = make_execute(function, memos, **kwargs)
    reports: list[worker_pb2.ExecutionResult] = []
    memo_state = Memos.of(memos_from_pb(message.memos))

    async def commit(checkpoint: worker_pb2.WorkerMessage) -> bool:
        reports.append(checkpoint.result)
        return True

    reports.append(await handle_execute({function.id: function}, message, memo_state, reports.append, commit))
    assert all(report.execution_id == message.execution_id for report in reports)
    assert all(report.partial and report.WhichOneof("outcome") is None for report in reports[:-1])
    assert not reports[-1].partial and reports[-1].WhichOneof("outcome") is not None
    return reports


async def execute(
    function: durably.Function, memos: list[worker_pb2.Memo] | None = None, **kwargs: Any
) -> worker_pb2.ExecutionResult:
    """The final result of one execution, with the ops of its partial results (if any) put before its
    own: every op the executor got from it, in the order it got them."""
    *partials, final = await execute_reports(function, memos, **kwargs)
    merged = worker_pb2.ExecutionResult()
    merged.CopyFrom(final)
    del merged.ops[:]
    merged.ops.extend([op for report in (*partials, final) for op in report.ops])
    return merged


def outcome(result: worker_pb2.ExecutionResult) -> str | None:
    return result.WhichOneof("outcome")


def output(result: worker_pb2.ExecutionResult) -> Any:
    assert outcome(result) == "output_json", result
    return json.loads(result.output_json)


def ops(result: worker_pb2.ExecutionResult) -> list[tuple[str, str, int]]:
    """(opcode name, step name, index) of every op."""
    return [(worker_pb2.Opcode.Name(op.op), op.name, op.index) for op in result.ops]


def memos_from(result: worker_pb2.ExecutionResult) -> list[worker_pb2.Memo]:
    """What the executor would save from the successful step ops of ``result``."""
    return [
        worker_pb2.Memo(id=op.id, data_json=op.data_json) for op in result.ops if op.op == worker_pb2.OPCODE_STEP_RUN
    ]


class FakeRun:
    """Plays the executor for one run: saves step results in the order they are reported (record
    order), and sends discoveries and targeted executions with the whole state so far."""

    def __init__(self, function: durably.Function) -> None:
        self.function = function
        self.memos: list[worker_pb2.Memo] = []

    async def discover(self, *, plan_only: bool = False) -> worker_pb2.ExecutionResult:
        return self._save(await execute(self.function, self.memos, plan_only=plan_only))

    async def run_targets(self, *names: str) -> worker_pb2.ExecutionResult:
        return self._save(await execute(self.function, self.memos, targets=[sid(name) for name in names]))

    def _save(self, result: worker_pb2.ExecutionResult) -> worker_pb2.ExecutionResult:
        self.memos += memos_from(result)
        return result
