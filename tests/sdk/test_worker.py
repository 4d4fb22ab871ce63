"""The worker against a fake executor on loopback: register, execute, heartbeat, reconnect, stop."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import durably
import pytest
from durably.protocol.v1 import worker_pb2
from fake_executor import FakeExecutor
from sdk_helpers import make_execute, memo_ok, sid

T = TypeVar("T")


@pytest.fixture
async def executor() -> AsyncIterator[FakeExecutor]:
    fake = FakeExecutor()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


def _functions(client: durably.Client, gate: asyncio.Event) -> list[durably.Function]:
    @client.function(id="echo", trigger=durably.on_event("demo/echo"), retries=2)
    async def echo(ctx: durably.Context) -> dict[str, object]:
        return {"echo": await ctx.step.run("echo", lambda: ctx.event.data)}

    @client.function(id="gated", trigger=durably.on_event("demo/gated"))
    async def gated(ctx: durably.Context) -> str:
        async def wait() -> str:
            await gate.wait()
            return "released"

        return await ctx.step.run("wait", wait)

    return [echo, gated]


async def _next(queue: asyncio.Queue[T], timeout: float = 5.0) -> T:
    return await asyncio.wait_for(queue.get(), timeout)


async def test_registers_executes_and_heartbeats(executor: FakeExecutor) -> None:
    client = durably.Client("unit", address=executor.address)
    gate = asyncio.Event()
    echo, gated = _functions(client, gate)
    async with durably.Worker(client, [echo, gated], capacity=3, worker_name="tester") as worker:
        register = await _next(executor.workers.registers)
        assert isinstance(register, worker_pb2.Register)
        assert (register.app_id, register.capacity, register.worker_name, register.sdk_version) == (
            "unit",
            3,
            "tester",
            "0.1.0",
        )
        assert [(f.id, [t.event for t in f.triggers], f.retries) for f in register.functions] == [
            ("echo", ["demo/echo"], 2),
            ("gated", ["demo/gated"], 3),
        ]
        assert worker.worker_id == "w1"

        executor.workers.execute(make_execute(echo, data={"hello": 1}))
        result = await _next(executor.workers.results)
        assert isinstance(result, worker_pb2.ExecutionResult)
        assert [json.loads(op.data_json) for op in result.ops] == [{"hello": 1}]
        assert json.loads(result.output_json) == {"echo": {"hello": 1}}

        slow = make_execute(gated, run_id="slow")
        executor.workers.execute(slow)
        await executor.workers.heartbeat_listing(slow.execution_id)
        gate.set()
        result = await _next(executor.workers.results)
        assert result.execution_id == slow.execution_id and json.loads(result.output_json) == "released"

        missing = make_execute(echo, run_id="missing")
        missing.function_id = "nope"
        executor.workers.execute(missing)
        result = await _next(executor.workers.results)
        assert (result.error.name, result.error.code, result.error.non_retriable) == (
            "FunctionNotFound",
            "function_not_found",
            True,
        )


async def test_reconnects_after_the_executor_restarts(executor: FakeExecutor) -> None:
    client = durably.Client("unit", address=executor.address)
    echo, gated = _functions(client, asyncio.Event())
    async with durably.Worker(client, [echo, gated]) as worker:
        await _next(executor.workers.registers)
        for expected in ("w2", "w3"):
            await executor.restart()
            await _next(executor.workers.registers, timeout=5)
            executor.workers.execute(make_execute(echo, data={"after": expected}))
            result = await _next(executor.workers.results)
            assert json.loads(result.output_json) == {"echo": {"after": expected}}
            assert worker.worker_id == expected


async def test_waits_for_an_executor_that_is_not_up_yet() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = durably.Client("unit", address=f"127.0.0.1:{port}")
    echo, gated = _functions(client, asyncio.Event())
    worker = durably.Worker(client, [echo, gated])
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.sleep(0.5)  # a few failed attempts
        late = FakeExecutor()
        late.port = port
        await late.start()
        try:
            register = await _next(late.workers.registers, timeout=5)
            assert isinstance(register, worker_pb2.Register)
        finally:
            worker.stop()
            await asyncio.wait_for(task, 5)
            await late.stop()
    finally:
        task.cancel()


async def test_stop_lets_running_executions_report(executor: FakeExecutor) -> None:
    client = durably.Client("unit", address=executor.address)
    gate = asyncio.Event()
    echo, gated = _functions(client, gate)
    worker = durably.Worker(client, [echo, gated])
    task = asyncio.create_task(worker.run())
    await _next(executor.workers.registers)
    slow = make_execute(gated, run_id="slow")
    executor.workers.execute(slow)
    await executor.workers.heartbeat_listing(slow.execution_id)
    worker.stop()
    await asyncio.sleep(0.05)
    gate.set()
    await asyncio.wait_for(task, 5)
    result = await _next(executor.workers.results)
    assert result.execution_id == slow.execution_id and json.loads(result.output_json) == "released"


async def test_cancelling_run_stops_at_once(executor: FakeExecutor) -> None:
    client = durably.Client("unit", address=executor.address)
    echo, gated = _functions(client, asyncio.Event())
    task = asyncio.create_task(durably.Worker(client, [echo, gated]).run())
    await _next(executor.workers.registers)
    executor.workers.execute(make_execute(gated, run_id="never"))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)


# --- the per-stream memo cache (Execute.memo_base) -------------------------------------------------


def _memo(index: int, value: object) -> worker_pb2.Memo:
    return memo_ok("s", value, index)


def _replayer(client: durably.Client, seen: dict[str, list[object]], gate: asyncio.Event) -> durably.Function:
    """Replays its saved "s" steps, runs the next one inline (after ``gate``) and stops at the one
    after: ``seen[run_id]`` is every saved result the execution replayed plus "ran". Never ends."""

    async def body() -> str:
        await gate.wait()
        return "ran"

    @client.function(id="replayer")
    async def replayer(ctx: durably.Context) -> None:
        got: list[object] = []
        while True:
            got.append(await ctx.step.run("s", body))
            seen[ctx.run_id] = list(got)

    return replayer


async def _execute(
    executor: FakeExecutor, function: durably.Function, memos: list[worker_pb2.Memo], **kwargs: Any
) -> worker_pb2.ExecutionResult:
    message = make_execute(function, memos, **kwargs)
    executor.workers.execute(message)
    result = await _next(executor.workers.results)
    assert result.execution_id == message.execution_id
    return result


async def test_memo_deltas_build_on_what_the_stream_sent(executor: FakeExecutor) -> None:
    client = durably.Client("unit", address=executor.address)
    seen: dict[str, list[object]] = {}
    gate = asyncio.Event()
    gate.set()
    fn = _replayer(client, seen, gate)
    async with durably.Worker(client, [fn]):
        await _next(executor.workers.registers)

        full = await _execute(executor, fn, [_memo(0, "m0"), _memo(1, "m1")])
        assert full.yielded and seen["run-1"] == ["m0", "m1", "ran"]

        delta = await _execute(executor, fn, [_memo(2, "m2")], memo_base=2)
        assert delta.yielded and seen["run-1"] == ["m0", "m1", "m2", "ran"]

        nothing_new = await _execute(executor, fn, [], memo_base=3)
        assert nothing_new.yielded and seen["run-1"] == ["m0", "m1", "m2", "ran"]

        del seen["run-1"]
        wrong = await _execute(executor, fn, [_memo(5, "m5")], memo_base=5)
        assert wrong.WhichOneof("outcome") == "need_full_state" and wrong.need_full_state
        assert list(wrong.ops) == [] and "run-1" not in seen  # nothing ran

        stale = await _execute(executor, fn, [_memo(3, "m3")], memo_base=3)
        assert stale.need_full_state  # the mismatch dropped the run: only a full state will do

        again = await _execute(executor, fn, [_memo(0, "x0")])
        assert again.yielded and seen["run-1"] == ["x0", "ran"]


async def test_a_second_execute_builds_on_the_first_before_it_ends(executor: FakeExecutor) -> None:
    client = durably.Client("unit", address=executor.address)
    seen: dict[str, list[object]] = {}
    gate = asyncio.Event()
    fn = _replayer(client, seen, gate)
    async with durably.Worker(client, [fn]):
        await _next(executor.workers.registers)
        first = make_execute(fn, [_memo(0, "m0")], run_id="r")
        second = make_execute(fn, [_memo(1, "m1")], run_id="r", memo_base=1)
        executor.workers.execute(first)
        executor.workers.execute(second)
        await executor.workers.heartbeat_listing(second.execution_id)
        gate.set()
        results = {result.execution_id: result for result in [await _next(executor.workers.results) for _ in "12"]}
        assert [op.index for op in results[first.execution_id].ops] == [1]  # saw only its own state
        assert [op.index for op in results[second.execution_id].ops] == [2]
        assert all(result.yielded for result in results.values())


@pytest.mark.parametrize(
    ("raised", "dropped"),
    [(None, True), (durably.NonRetriableError("no"), True), (RuntimeError("try again"), False)],
)
async def test_the_cache_drops_a_run_that_ended(
    executor: FakeExecutor, raised: Exception | None, dropped: bool
) -> None:
    client = durably.Client("unit", address=executor.address)

    @client.function(id="ends")
    async def ends(ctx: durably.Context) -> object:
        value = await ctx.step.run("s", lambda: "ran")
        if raised is not None:
            raise raised
        return value

    async with durably.Worker(client, [ends]):
        await _next(executor.workers.registers)
        first = await _execute(executor, ends, [_memo(0, "m0")])
        assert first.WhichOneof("outcome") == ("error" if raised else "output_json")
        later = await _execute(executor, ends, [], memo_base=1)
        assert later.need_full_state is dropped


async def test_the_cache_keeps_the_most_recently_executed_runs(executor: FakeExecutor) -> None:
    client = durably.Client("unit", address=executor.address)
    seen: dict[str, list[object]] = {}
    gate = asyncio.Event()
    gate.set()
    fn = _replayer(client, seen, gate)
    async with durably.Worker(client, [fn], memo_cache_runs=2):
        await _next(executor.workers.registers)
        for run_id in ("r1", "r2"):
            assert (await _execute(executor, fn, [_memo(0, run_id)], run_id=run_id)).yielded
        assert (await _execute(executor, fn, [], run_id="r1", memo_base=1)).yielded  # r1 is now the newest
        assert (await _execute(executor, fn, [_memo(0, "r3")], run_id="r3")).yielded  # evicts r2
        assert (await _execute(executor, fn, [], run_id="r2", memo_base=1)).need_full_state
        for run_id in ("r1", "r3"):
            assert (await _execute(executor, fn, [], run_id=run_id, memo_base=1)).yielded


async def test_the_cache_is_per_stream(executor: FakeExecutor) -> None:
    client = durably.Client("unit", address=executor.address)
    seen: dict[str, list[object]] = {}
    gate = asyncio.Event()
    gate.set()
    fn = _replayer(client, seen, gate)
    async with durably.Worker(client, [fn]):
        await _next(executor.workers.registers)
        assert (await _execute(executor, fn, [_memo(0, "m0")])).yielded
        await executor.restart()
        await _next(executor.workers.registers)
        assert (await _execute(executor, fn, [], memo_base=1)).need_full_state


async def test_each_execution_decodes_its_own_copy_of_a_saved_result(executor: FakeExecutor) -> None:
    client = durably.Client("unit", address=executor.address)
    seen: asyncio.Queue[dict[str, object]] = asyncio.Queue()
    gate = asyncio.Event()

    @client.function(id="mutates")
    async def mutates(ctx: durably.Context) -> None:
        saved = await ctx.step.run("s", dict)
        seen.put_nowait(dict(saved))
        saved["mutated"] = True  # user code may do this; another execution must not see it
        await ctx.step.run("next", gate.wait)

    async with durably.Worker(client, [mutates]):
        await _next(executor.workers.registers)
        executor.workers.execute(make_execute(mutates, [_memo(0, {"k": 1})]))
        assert await _next(seen) == {"k": 1}
        executor.workers.execute(make_execute(mutates, [], memo_base=1))  # still running the first
        assert await _next(seen) == {"k": 1}
        gate.set()
        for _ in "12":
            assert (await _next(executor.workers.results)).WhichOneof("outcome") == "output_json"


def test_memo_cache_runs_must_be_positive() -> None:
    client = durably.Client("unit", address="127.0.0.1:9")
    echo, _ = _functions(client, asyncio.Event())
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="memo_cache_runs"):
            durably.Worker(client, [echo], memo_cache_runs=bad)  # type: ignore[arg-type]


async def test_a_finished_target_is_sent_before_the_others_end(executor: FakeExecutor) -> None:
    client = durably.Client("unit", address=executor.address)
    gate = asyncio.Event()

    @client.function(id="two-targets")
    async def two(ctx: durably.Context) -> None:
        await asyncio.gather(ctx.step.run("quick", lambda: "q"), ctx.step.run("held", gate.wait))

    async with durably.Worker(client, [two]):
        await _next(executor.workers.registers)
        message = make_execute(two, targets=[sid("held"), sid("quick")])
        executor.workers.execute(message)
        partial = await _next(executor.workers.results)
        assert partial.execution_id == message.execution_id
        assert partial.partial and partial.WhichOneof("outcome") is None
        assert [(op.name, json.loads(op.data_json)) for op in partial.ops] == [("quick", "q")]
        gate.set()
        final = await _next(executor.workers.results)
        assert final.execution_id == message.execution_id and not final.partial and final.yielded
        assert [(op.name, json.loads(op.data_json)) for op in final.ops] == [("held", True)]


async def test_a_function_with_on_failure_registers_two_functions(executor: FakeExecutor) -> None:
    client = durably.Client("unit", address=executor.address)

    async def on_failure(ctx: durably.Context) -> str:
        return f"handled {ctx.event.data['run_id']}"

    @client.function(id="charge", trigger=durably.on_event("order/placed"), retries=1, on_failure=on_failure)
    async def charge(ctx: durably.Context) -> None:
        return None

    async with durably.Worker(client, [charge]):
        register = await _next(executor.workers.registers)
        assert [(f.id, f.on_failure, f.retries, len(f.triggers)) for f in register.functions] == [
            ("charge", "charge-failure", 1, 1),
            ("charge-failure", "", 1, 0),
        ]
        assert charge.on_failure is not None
        executor.workers.execute(make_execute(charge.on_failure, data={"run_id": "r-7"}))
        result = await _next(executor.workers.results)
        assert json.loads(result.output_json) == "handled r-7"
