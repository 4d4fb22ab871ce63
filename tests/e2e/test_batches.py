"""Batches on the worker stream, at the protocol level (generated stubs, no SDK): several messages in
one ``WorkerBatch`` / ``ExecutorBatch``, read in order; the executor batches only for workers that
registered with ``accepts_batches``."""

from __future__ import annotations

import asyncio
import json

import durably
import grpc
from durably.protocol.v1 import worker_pb2, worker_pb2_grpc

from .harness import Harness, describe, find_run, open_client

RUNS = 30


async def _register(stub: worker_pb2_grpc.WorkerServiceStub, *, batches: bool) -> grpc.aio.StreamStreamCall:
    function = worker_pb2.FunctionConfig(id="raw-batch", triggers=[worker_pb2.Trigger(event="raw/batch")], retries=0)
    call = stub.Connect()
    register = worker_pb2.Register(
        app_id="tests", functions=[function], capacity=RUNS, worker_name="raw-batch", accepts_batches=batches
    )
    await call.write(worker_pb2.WorkerMessage(register=register))
    first = await asyncio.wait_for(call.read(), timeout=10)
    assert first is not grpc.aio.EOF and first.WhichOneof("message") == "registered", first
    return call


async def _executes(call: grpc.aio.StreamStreamCall, count: int) -> tuple[list[worker_pb2.Execute], list[str]]:
    """Read until `count` executions have arrived; also the kind of every message read."""
    executes: list[worker_pb2.Execute] = []
    kinds: list[str] = []
    while len(executes) < count:
        message = await asyncio.wait_for(call.read(), timeout=10)
        assert message is not grpc.aio.EOF
        kind = message.WhichOneof("message")
        kinds.append(kind)
        inner = message.batch.messages if kind == "batch" else [message]
        assert all(m.WhichOneof("message") == "execute" for m in inner), message
        executes.extend(m.execute for m in inner)
    return executes, kinds


async def _send_runs(client: durably.Client) -> list[str]:
    events = [durably.Event(name="raw/batch", data={"i": i}) for i in range(RUNS)]
    return [(await find_run(client, event_id)).id for event_id in await client.send(events)]


def _answer(execute: worker_pb2.Execute) -> worker_pb2.WorkerMessage:
    data = json.loads(execute.event.data_json)
    result = worker_pb2.ExecutionResult(execution_id=execute.execution_id, output_json=json.dumps(data["i"]).encode())
    return worker_pb2.WorkerMessage(result=result)


async def test_the_executor_batches_for_a_worker_that_accepts_it_and_reads_a_batch_in_order(
    harness: Harness,
) -> None:
    async with grpc.aio.insecure_channel(harness.address) as channel, open_client(harness.address) as client:
        call = await _register(worker_pb2_grpc.WorkerServiceStub(channel), batches=True)
        run_ids = await _send_runs(client)
        executes, kinds = await _executes(call, RUNS)
        assert sorted(e.run_id for e in executes) == sorted(run_ids)
        assert "batch" in kinds and len(kinds) < RUNS, f"{RUNS} executions ready at once came as {kinds}"

        # All the answers in one batch, plus a message that has no place in a batch (ignored).
        stray = worker_pb2.WorkerMessage(register=worker_pb2.Register(app_id="tests"))
        answers = [_answer(e) for e in executes]
        await call.write(worker_pb2.WorkerMessage(batch=worker_pb2.WorkerBatch(messages=[*answers, stray])))
        for run_id in run_ids:
            done = await client.wait_for_run(run_id, timeout=15)
            assert done.status == "completed", describe(done)
        outputs = {run.output for run in await client.list_runs(function_id="raw-batch", limit=RUNS)}
        assert outputs == set(range(RUNS))
        assert harness.daemon.alive(), harness.daemon.report()
        call.cancel()


async def test_a_worker_that_does_not_accept_batches_gets_one_message_at_a_time(harness: Harness) -> None:
    async with grpc.aio.insecure_channel(harness.address) as channel, open_client(harness.address) as client:
        call = await _register(worker_pb2_grpc.WorkerServiceStub(channel), batches=False)
        run_ids = await _send_runs(client)
        executes, kinds = await _executes(call, RUNS)
        assert kinds == ["execute"] * RUNS
        for execute in executes:
            await call.write(_answer(execute))
        for run_id in run_ids:
            done = await client.wait_for_run(run_id, timeout=15)
            assert done.status == "completed", describe(done)
        assert harness.daemon.alive(), harness.daemon.report()
        call.cancel()
