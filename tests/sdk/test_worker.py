"""The worker against a fake executor on loopback: register, execute, heartbeat, reconnect, stop."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import TypeVar

import durably
import pytest
from durably.protocol.v1 import worker_pb2
from fake_executor import FakeExecutor
from sdk_helpers import make_execute

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
