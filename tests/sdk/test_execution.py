"""The execution engine, driven through the worker's entry point with hand-made Execute messages."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import threading
from typing import Any

import durably
import pytest
from durably.protocol.v1 import worker_pb2
from sdk_helpers import client, execute, memo_err, memo_ok, memos_from, ops, outcome, output, sid

RUN = "OPCODE_STEP_RUN"
ERROR = "OPCODE_STEP_ERROR"
PLANNED = "OPCODE_STEP_PLANNED"


def _three_steps() -> tuple[durably.Function, dict[str, int]]:
    calls = {"handler": 0, "one": 0, "two": 0, "three": 0}

    def one() -> dict[str, str]:
        calls["one"] += 1
        return {"value": "A"}

    async def two(previous: dict[str, str]) -> dict[str, str]:
        calls["two"] += 1
        return {"value": previous["value"] + "B"}

    def three(previous: dict[str, str], *, suffix: str) -> dict[str, str]:
        calls["three"] += 1
        return {"value": previous["value"] + suffix}

    @client.function(id="three-steps", trigger=durably.on_event("test/event"))
    async def handler(ctx: durably.Context) -> dict[str, Any]:
        calls["handler"] += 1
        r1 = await ctx.step.run("step-one", one)
        r2 = await ctx.step.run("step-two", two, r1)
        r3 = await ctx.step.run("step-three", three, r2, suffix="C")
        return {"r1": r1, "r2": r2, "r3": r3}

    return handler, calls


async def test_three_sequential_steps_take_three_executions() -> None:
    fn, calls = _three_steps()

    first = await execute(fn)
    assert ops(first) == [(RUN, "step-one", 0)]
    assert outcome(first) == "yielded" and first.yielded
    assert json.loads(first.ops[0].data_json) == {"value": "A"}
    assert first.ops[0].id == sid("step-one")
    assert 0 < first.ops[0].started_at_ms <= first.ops[0].ended_at_ms
    assert calls == {"handler": 1, "one": 1, "two": 0, "three": 0}

    memos = memos_from(first)
    second = await execute(fn, memos)
    assert ops(second) == [(RUN, "step-two", 0)]
    assert outcome(second) == "yielded"
    assert json.loads(second.ops[0].data_json) == {"value": "AB"}
    assert calls == {"handler": 2, "one": 1, "two": 1, "three": 0}

    memos += memos_from(second)
    third = await execute(fn, memos)
    assert ops(third) == [(RUN, "step-three", 0)]
    assert output(third) == {"r1": {"value": "A"}, "r2": {"value": "AB"}, "r3": {"value": "ABC"}}
    assert calls == {"handler": 3, "one": 1, "two": 1, "three": 1}


async def test_all_memoized_replays_without_running_bodies() -> None:
    fn, calls = _three_steps()
    memos = [memo_ok("step-one", {"value": "x"}), memo_ok("step-two", {"value": "y"}), memo_ok("step-three", 7)]
    result = await execute(fn, memos)
    assert result.ops == []
    assert output(result) == {"r1": {"value": "x"}, "r2": {"value": "y"}, "r3": 7}
    assert calls == {"handler": 1, "one": 0, "two": 0, "three": 0}


async def test_repeated_step_id_gets_counted_indexes_and_distinct_hashes() -> None:
    ran: list[int] = []

    def send(i: int) -> int:
        ran.append(i)
        return i

    @client.function(id="loop")
    async def loop(ctx: durably.Context) -> list[int]:
        return [await ctx.step.run("send", send, i) for i in range(3)]

    memos: list[worker_pb2.Memo] = []
    seen_ids = []
    for expected_index in range(3):
        result = await execute(loop, memos)
        assert ops(result) == [(RUN, "send", expected_index)]
        seen_ids.append(result.ops[0].id)
        memos += memos_from(result)
        if expected_index < 2:
            assert result.yielded
        else:
            assert output(result) == [0, 1, 2]
    assert seen_ids == [sid("send", 0), sid("send", 1), sid("send", 2)]
    assert len(set(seen_ids)) == 3
    assert ran == [0, 1, 2]


async def test_memo_hit_returns_saved_value_without_running_the_body() -> None:
    def body() -> str:
        raise AssertionError("a memoized step's body ran")

    @client.function(id="memo-hit")
    async def fn(ctx: durably.Context) -> Any:
        return await ctx.step.run("s", body)

    assert output(await execute(fn, [memo_ok("s", {"saved": [1, 2]})])) == {"saved": [1, 2]}
    assert output(await execute(fn, [memo_ok("s", None)])) is None


async def test_memo_error_raises_step_error_the_handler_can_catch() -> None:
    def body() -> None:
        raise AssertionError("a failed step's body ran again")

    caught: list[durably.StepError] = []

    @client.function(id="memo-error-caught")
    async def fn(ctx: durably.Context) -> str:
        try:
            await ctx.step.run("charge", body)
        except durably.StepError as exc:
            caught.append(exc)
            return "recovered"
        return "not reached"

    result = await execute(fn, [memo_err("charge", "ValueError", "card declined")])
    assert output(result) == "recovered"
    assert result.ops == []
    [exc] = caught
    assert (exc.step_id, exc.error_name, exc.error_message, exc.stack) == (
        "charge",
        "ValueError",
        "card declined",
        "Traceback: ...",
    )
    assert "charge" in str(exc) and "card declined" in str(exc)


async def test_uncaught_step_error_fails_the_run_without_retries() -> None:
    @client.function(id="memo-error-uncaught")
    async def fn(ctx: durably.Context) -> None:
        await ctx.step.run("charge", lambda: None)

    result = await execute(fn, [memo_err("charge", "ValueError", "card declined")])
    assert outcome(result) == "error"
    assert result.error.name == "StepError"
    assert result.error.non_retriable is True
    assert result.error.code == "step_errored"
    assert "card declined" in result.error.message and "charge" in result.error.message


@pytest.mark.parametrize(
    ("raised", "non_retriable", "code"),
    [
        (ValueError("boom"), False, "unknown"),
        (durably.NonRetriableError("boom"), True, "non_retriable_error"),
        (durably.RetryAfterError("boom", after=5), False, "retry_after_error"),
    ],
)
async def test_step_body_failure_is_reported_as_a_step_error_op(
    raised: Exception, non_retriable: bool, code: str
) -> None:
    after: list[str] = []

    def body() -> None:
        raise raised

    @client.function(id="failing-step")
    async def fn(ctx: durably.Context) -> None:
        await ctx.step.run("ok", lambda: 1)
        try:
            await ctx.step.run("bad", body)
        except Exception:  # _Interrupt is not an Exception: this must not swallow it
            after.append("caught")
        after.append("continued")

    result = await execute(fn, [memo_ok("ok", 1)])
    assert ops(result) == [(ERROR, "bad", 0)]
    assert outcome(result) == "yielded"
    error = result.ops[0].error
    assert (error.name, error.message, error.non_retriable, error.code) == (
        type(raised).__name__,
        "boom",
        non_retriable,
        code,
    )
    assert type(raised).__name__ in error.stack and "body" in error.stack
    assert result.ops[0].data_json == b""
    assert after == []


class Opaque:
    pass


def _function_value() -> Any:
    return {"f": len}


@pytest.mark.parametrize(
    ("value", "path"),
    [
        pytest.param({1, 2}, "$ is a set", id="set"),
        pytest.param({"payment": Opaque()}, "$.payment is a ", id="object"),
        pytest.param({"ratio": float("nan")}, "$.ratio is NaN", id="nan"),
        pytest.param([1.0, float("inf")], "$[1] is Infinity", id="infinity"),
        pytest.param(b"raw", "$ is bytes", id="bytes"),
        pytest.param(_function_value(), "$.f is a function", id="function"),
        pytest.param({"a": {1: "x"}}, "$.a has a key 1 of type int", id="non-str-key"),
    ],
)
async def test_unrepresentable_step_result_fails_the_step_for_good(value: Any, path: str) -> None:
    @client.function(id="bad-output")
    async def fn(ctx: durably.Context) -> None:
        await ctx.step.run("produce", lambda: value)
        raise AssertionError("the handler got past an unrepresentable result")

    result = await execute(fn)
    assert ops(result) == [(ERROR, "produce", 0)]
    assert outcome(result) == "yielded"
    error = result.ops[0].error
    assert error.name == "OutputUnserializableError"
    assert error.code == "output_unserializable" and error.non_retriable
    assert error.message.startswith('step "produce" returned a value JSON cannot represent: ')
    assert path in error.message, error.message


async def test_circular_step_result_is_refused() -> None:
    loop_value: list[Any] = [1]
    loop_value.append({"back": loop_value})

    @client.function(id="circular")
    async def fn(ctx: durably.Context) -> None:
        await ctx.step.run("produce", lambda: loop_value)

    result = await execute(fn)
    assert "$[1].back" in result.ops[0].error.message and "circular" in result.ops[0].error.message


async def test_tuple_result_comes_back_as_a_list_on_first_run_and_replay() -> None:
    seen: list[Any] = []

    @client.function(id="tuple")
    async def fn(ctx: durably.Context) -> Any:
        made = await ctx.step.run("make", lambda: (1, "two", (3,)))
        seen.append(made)
        return made

    first = await execute(fn)
    assert output(first) == [1, "two", [3]]
    assert json.loads(first.ops[0].data_json) == [1, "two", [3]]
    replay = await execute(fn, memos_from(first))
    assert output(replay) == [1, "two", [3]]
    assert seen == [[1, "two", [3]], [1, "two", [3]]]


async def test_sync_bodies_run_in_a_thread_and_async_bodies_on_the_loop() -> None:
    loop_thread = threading.get_ident()
    threads: dict[str, int] = {}

    def sync_body(x: int, *, y: int) -> int:
        threads["sync"] = threading.get_ident()
        return x + y

    async def async_body(x: int) -> int:
        threads["async"] = threading.get_ident()
        await asyncio.sleep(0)
        return x * 2

    class AsyncCallable:
        async def __call__(self, x: int) -> int:
            threads["callable"] = threading.get_ident()
            return x + 1

    def returns_awaitable(x: int) -> Any:
        return async_body(x)

    @client.function(id="callables")
    async def fn(ctx: durably.Context) -> list[int]:
        return [
            await ctx.step.run("sync", sync_body, 1, y=2),
            await ctx.step.run("async", async_body, 5),
            await ctx.step.run("callable", AsyncCallable(), 9),
            await ctx.step.run("partial", functools.partial(async_body, 20)),
            await ctx.step.run("awaitable", returns_awaitable, 50),
        ]

    memos: list[worker_pb2.Memo] = []
    for _ in range(5):
        result = await execute(fn, memos)
        memos += memos_from(result)
    assert output(result) == [3, 10, 10, 40, 100]
    assert threads["sync"] != loop_thread
    assert threads["async"] == loop_thread and threads["callable"] == loop_thread


async def test_step_called_inside_a_step_fails_for_good() -> None:
    @client.function(id="nested")
    async def fn(ctx: durably.Context) -> None:
        async def outer() -> int:
            return await ctx.step.run("inner", lambda: 1)

        await ctx.step.run("outer", outer)

    result = await execute(fn)
    assert ops(result) == [(ERROR, "outer", 0)]
    error = result.ops[0].error
    assert (error.name, error.code, error.non_retriable) == ("StepNestedError", "step_nested", True)
    assert '"inner"' in error.message and '"outer"' in error.message


async def test_nested_step_caught_inside_the_body_does_not_shift_step_indexes() -> None:
    @client.function(id="nested-caught")
    async def fn(ctx: durably.Context) -> Any:
        async def outer() -> str:
            try:
                await ctx.step.run("x", lambda: 1)
            except durably.NonRetriableError:
                return "refused"
            return "allowed"

        first = await ctx.step.run("outer", outer)
        second = await ctx.step.run("x", lambda: 2)
        return [first, second]

    first = await execute(fn)
    assert ops(first) == [(RUN, "outer", 0)]
    second = await execute(fn, memos_from(first))
    assert ops(second) == [(RUN, "x", 0)]  # index 0: the refused nested call did not count
    assert output(second) == ["refused", 2]


@dataclasses.dataclass
class Line:
    sku: str
    qty: int


@dataclasses.dataclass
class Order:
    id: str
    lines: list[Line]
    note: Line | None = None


async def test_output_type_dataclass_round_trip() -> None:
    got: list[Order] = []

    @client.function(id="dataclass-output")
    async def fn(ctx: durably.Context) -> str:
        order = await ctx.step.run("load", lambda: Order("o1", [Line("a", 2)], Line("n", 0)), output_type=Order)
        got.append(order)
        return order.lines[0].sku

    first = await execute(fn)
    assert json.loads(first.ops[0].data_json) == {
        "id": "o1",
        "lines": [{"sku": "a", "qty": 2}],
        "note": {"sku": "n", "qty": 0},
    }
    assert output(first) == "a"
    replay = await execute(fn, memos_from(first))
    assert output(replay) == "a"
    assert got[0] == got[1] == Order("o1", [Line("a", 2)], Line("n", 0))
    assert isinstance(got[1].lines[0], Line)


class FakeModel:
    """Duck-typed like a pydantic model: model_dump(mode="json") / model_validate."""

    def __init__(self, n: int) -> None:
        self.n = n

    def model_dump(self, mode: str = "python") -> dict[str, Any]:
        assert mode == "json"
        return {"n": self.n}

    @classmethod
    def model_validate(cls, value: dict[str, Any]) -> FakeModel:
        return cls(value["n"])


async def test_output_type_model_round_trip() -> None:
    got: list[FakeModel] = []

    @client.function(id="model-output")
    async def fn(ctx: durably.Context) -> int:
        model = await ctx.step.run("load", lambda: FakeModel(4), output_type=FakeModel)
        got.append(model)
        return model.n

    first = await execute(fn)
    assert output(first) == 4
    assert output(await execute(fn, memos_from(first))) == 4
    assert all(isinstance(m, FakeModel) and m.n == 4 for m in got) and len(got) == 2


async def test_dataclass_without_output_type_is_refused_with_a_hint() -> None:
    @client.function(id="dataclass-no-type")
    async def fn(ctx: durably.Context) -> None:
        await ctx.step.run("load", lambda: Line("a", 1))

    result = await execute(fn)
    assert "output_type=Line" in result.ops[0].error.message


async def test_task_group_of_new_steps_plans_them() -> None:
    ran: list[str] = []

    @client.function(id="task-group")
    async def fn(ctx: durably.Context) -> None:
        async with asyncio.TaskGroup() as group:
            for name in ("a", "b", "c"):
                group.create_task(ctx.step.run(name, ran.append, name))

    result = await execute(fn)
    assert ops(result) == [(PLANNED, "a", 0), (PLANNED, "b", 0), (PLANNED, "c", 0)]
    assert result.yielded and ran == []


async def test_swallowed_interrupt_still_yields() -> None:
    @client.function(id="swallow")
    async def fn(ctx: durably.Context) -> str:
        await asyncio.gather(ctx.step.run("a", lambda: 1), ctx.step.run("b", lambda: 2), return_exceptions=True)
        return "should not count"

    result = await execute(fn)
    assert ops(result) == [(PLANNED, "a", 0), (PLANNED, "b", 0)] and result.yielded


async def test_handler_return_value_must_be_json() -> None:
    @client.function(id="bad-return")
    async def fn(ctx: durably.Context) -> Any:
        return {"when": {1, 2}}

    result = await execute(fn)
    assert outcome(result) == "error"
    assert (result.error.name, result.error.code, result.error.non_retriable) == (
        "OutputUnserializableError",
        "output_unserializable",
        True,
    )
    assert "$.when is a set" in result.error.message


@pytest.mark.parametrize(
    ("raised", "non_retriable", "code"),
    [(RuntimeError("nope"), False, "unknown"), (durably.NonRetriableError("nope"), True, "non_retriable_error")],
)
async def test_handler_error_outside_steps(raised: Exception, non_retriable: bool, code: str) -> None:
    @client.function(id="handler-error")
    async def fn(ctx: durably.Context) -> None:
        await ctx.step.run("before", lambda: 1)
        raise raised

    result = await execute(fn, [memo_ok("before", 1)])
    assert result.ops == []
    assert outcome(result) == "error"
    assert (result.error.name, result.error.message, result.error.non_retriable, result.error.code) == (
        type(raised).__name__,
        "nope",
        non_retriable,
        code,
    )


async def test_step_ran_then_handler_raised_reports_both() -> None:
    @client.function(id="ran-then-raised")
    async def fn(ctx: durably.Context) -> None:
        await ctx.step.run("only", lambda: 1)
        raise RuntimeError("after the step")

    result = await execute(fn)
    assert ops(result) == [(RUN, "only", 0)]
    assert outcome(result) == "error" and result.error.message == "after the step"


async def test_context_carries_the_execute_message() -> None:
    seen: dict[str, Any] = {}

    @client.function(id="ctx")
    async def fn(ctx: durably.Context) -> None:
        seen.update(
            event=ctx.event,
            events=ctx.events,
            run_id=ctx.run_id,
            attempt=ctx.attempt,
            function_id=ctx.function_id,
            extra=ctx.logger.extra,
        )

    result = await execute(fn, data={"k": [1]}, attempt=2, run_id="run-42")
    assert output(result) is None
    assert seen["event"] == durably.Event(name="test/event", data={"k": [1]}, id="evt-1", ts=1_700_000_000_000)
    assert seen["events"] == [seen["event"]]
    assert (seen["run_id"], seen["attempt"], seen["function_id"]) == ("run-42", 2, "ctx")
    assert seen["extra"]["run_id"] == "run-42"


async def test_unknown_function_is_reported_not_raised() -> None:
    from durably._memos import Memos
    from durably._worker import handle_execute
    from sdk_helpers import make_execute, no_checkpoint

    fn, _ = _three_steps()
    message = make_execute(fn)
    message.function_id = "nobody"
    result = await handle_execute({fn.id: fn}, message, Memos.of([]), print, no_checkpoint)
    assert (result.error.name, result.error.code, result.error.non_retriable) == (
        "FunctionNotFound",
        "function_not_found",
        True,
    )
    assert "nobody" in result.error.message


async def test_step_after_the_execution_ended_is_refused() -> None:
    kept: list[durably.Context] = []

    @client.function(id="late-step")
    async def fn(ctx: durably.Context) -> None:
        kept.append(ctx)

    await execute(fn)
    with pytest.raises(RuntimeError, match="after its execution ended"):
        await kept[0].step.run("late", lambda: 1)


async def test_replaying_many_memos_is_cheap() -> None:
    @client.function(id="many")
    async def fn(ctx: durably.Context) -> int:
        total = 0
        for i in range(1000):
            total += await ctx.step.run(f"s{i}", lambda: 0)
        return total

    memos = [memo_ok(f"s{i}", i) for i in range(1000)]
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await execute(fn, memos)
    assert output(result) == sum(range(1000))
    assert loop.time() - started < 0.5


async def test_replays_share_decoded_scalars_but_never_a_mutable_value() -> None:
    from durably._execution import ExecutionRequest
    from durably._execution import execute as run_execution
    from durably._memos import MemoCache
    from sdk_helpers import no_checkpoint

    got: list[tuple[Any, Any]] = []

    @client.function(id="scalars")
    async def fn(ctx: durably.Context) -> None:
        text = await ctx.step.run("text", lambda: "never runs")
        items = await ctx.step.run("items", lambda: ["never runs"])
        got.append((text, items))
        items.append("changed by the handler")
        await ctx.step.run("next", lambda: None)

    cache = MemoCache(10)
    memos = cache.receive("run", 0, [(sid("text"), json.dumps("x" * 1000).encode()), (sid("items"), b'["a"]')])
    assert memos is not None
    for attempt in range(2):
        request = ExecutionRequest(f"e{attempt}", "run", fn.id, durably.Event("test/event"), memos, attempt)
        await run_execution(fn, request, lambda ops: None, lambda ops: no_checkpoint(worker_pb2.WorkerMessage()))
    (text1, items1), (text2, items2) = got
    assert text1 == "x" * 1000 and text1 is text2, "an immutable result is decoded once per run"
    assert items1 == ["a", "changed by the handler"] and items2 == ["a", "changed by the handler"]
    assert items1 is not items2
