"""The engine with ``checkpointing=True``: what one discovery sends, and when it stops."""

from __future__ import annotations

import asyncio
from typing import Any

import durably
import pytest
from durably._convert import memos_from_pb
from durably._memos import Memos
from durably._worker import handle_execute
from durably.protocol.v1 import worker_pb2
from sdk_helpers import client, execute_reports, make_execute, memo_ok, ops, outcome, output


def _sequential(names: list[str], ran: list[str]) -> durably.Function:
    @client.function(id="cp-seq", checkpointing=True)
    async def fn(ctx: durably.Context) -> list[str]:
        def body(name: str) -> str:
            ran.append(name)
            return name.upper()

        return [await ctx.step.run(name, body, name) for name in names]

    return fn


async def test_each_new_step_is_checkpointed_and_the_handler_goes_on() -> None:
    ran: list[str] = []
    reports = await execute_reports(_sequential(["a", "b", "c"], ran))
    assert ran == ["a", "b", "c"]
    *checkpoints, final = reports
    assert [ops(report) for report in checkpoints] == [[("OPCODE_STEP_RUN", name, 0)] for name in ("a", "b", "c")]
    assert all(report.partial for report in checkpoints)
    assert output(final) == ["A", "B", "C"]
    assert list(final.ops) == [], "committed steps are not reported twice"


async def test_saved_steps_replay_then_new_ones_are_checkpointed() -> None:
    ran: list[str] = []
    reports = await execute_reports(_sequential(["a", "b", "c"], ran), [memo_ok("a", "A")])
    assert ran == ["b", "c"]
    assert [ops(report) for report in reports[:-1]] == [[("OPCODE_STEP_RUN", "b", 0)], [("OPCODE_STEP_RUN", "c", 0)]]
    assert output(reports[-1]) == ["A", "B", "C"]


async def test_a_refused_checkpoint_stops_the_handler_and_its_step_goes_in_the_final_result() -> None:
    ran: list[str] = []
    fn = _sequential(["a", "b", "c"], ran)
    message = make_execute(fn)
    answers = iter([True, False])
    sent: list[worker_pb2.ExecutionResult] = []

    async def commit(checkpoint: worker_pb2.WorkerMessage) -> bool:
        sent.append(checkpoint.result)
        return next(answers)

    final = await handle_execute({fn.id: fn}, message, Memos.of(memos_from_pb(message.memos)), sent.append, commit)
    assert ran == ["a", "b"], "the handler went on after a refused checkpoint"
    assert [ops(report) for report in sent] == [[("OPCODE_STEP_RUN", "a", 0)], [("OPCODE_STEP_RUN", "b", 0)]]
    assert outcome(final) == "yielded"
    assert ops(final) == [("OPCODE_STEP_RUN", "b", 0)]


async def test_parallel_steps_and_sleeps_end_the_execution_as_without_checkpointing() -> None:
    ran: list[str] = []

    @client.function(id="cp-gather", checkpointing=True)
    async def fn(ctx: durably.Context) -> Any:
        def body(name: str) -> str:
            ran.append(name)
            return name

        await ctx.step.run("a", body, "a")
        await asyncio.gather(ctx.step.run("b", body, "b"), ctx.step.run("c", body, "c"))
        await ctx.step.sleep("nap", 5)
        return "done"

    reports = await execute_reports(fn)
    assert ran == ["a"]
    assert [ops(report) for report in reports] == [
        [("OPCODE_STEP_RUN", "a", 0)],
        [("OPCODE_STEP_PLANNED", "b", 0), ("OPCODE_STEP_PLANNED", "c", 0)],
    ]
    assert outcome(reports[-1]) == "yielded"

    reports = await execute_reports(fn, [memo_ok("a", "a"), memo_ok("b", "b"), memo_ok("c", "c")])
    assert [ops(report) for report in reports] == [[("OPCODE_SLEEP", "nap", 0)]]


async def test_a_failing_step_is_not_checkpointed_but_reported_for_a_retry() -> None:
    @client.function(id="cp-fail", checkpointing=True)
    async def fn(ctx: durably.Context) -> Any:
        await ctx.step.run("ok", lambda: 1)
        await ctx.step.run("bad", _fail)
        return "unreachable"

    reports = await execute_reports(fn)
    assert [ops(report) for report in reports] == [[("OPCODE_STEP_RUN", "ok", 0)], [("OPCODE_STEP_ERROR", "bad", 0)]]
    assert outcome(reports[-1]) == "yielded"


def _fail() -> None:
    raise RuntimeError("boom")


async def test_a_function_without_it_stops_after_one_new_step() -> None:
    @client.function(id="cp-off")
    async def off(ctx: durably.Context) -> Any:
        return [await ctx.step.run("a", lambda: 1), await ctx.step.run("b", lambda: 2)]

    [final] = await execute_reports(off)
    assert outcome(final) == "yielded" and ops(final) == [("OPCODE_STEP_RUN", "a", 0)]


def test_the_client_sets_the_default_and_a_function_overrides_it() -> None:
    on = durably.Client(app_id="unit", address="127.0.0.1:9", checkpointing=True)

    async def handler(ctx: durably.Context) -> None:
        return None

    with pytest.raises(TypeError, match="checkpointing"):
        durably.Client(app_id="unit", checkpointing="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="checkpointing must be a bool"):
        client.function(id="v", checkpointing=1)  # type: ignore[arg-type]
    assert on.function(id="x")(handler).checkpointing is True
    assert on.function(id="y", checkpointing=False)(handler).checkpointing is False
    assert client.function(id="z")(handler).checkpointing is False
    assert client.function(id="w", on_failure=handler, checkpointing=True)(handler).on_failure.checkpointing  # type: ignore[union-attr]
