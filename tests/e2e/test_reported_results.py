"""A worker's own results are not sent back to it (``Register.keeps_reported``), at the protocol level
(generated stubs, no SDK): the next ``Execute`` names each one (``Memo.reported_in``) instead of
carrying it; a worker that no longer has it answers ``need_full_state`` and gets it whole; a worker
that did not register ``keeps_reported`` always gets the data. The SDK's side (a long run's results
not sent back at all) is in test_state_transfer.py."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3

import durably
import grpc
from durably.protocol.v1 import worker_pb2, worker_pb2_grpc

from .harness import Harness, describe, find_run, open_client

STEP_ID = hashlib.sha1(b"one", usedforsecurity=False).hexdigest()
RESULT = b'"' + b"r" * 100_000 + b'"'


async def _register(stub: worker_pb2_grpc.WorkerServiceStub, *, keeps: bool) -> grpc.aio.StreamStreamCall:
    function = worker_pb2.FunctionConfig(id="raw-kept", triggers=[worker_pb2.Trigger(event="raw/kept")], retries=0)
    call = stub.Connect()
    register = worker_pb2.Register(
        app_id="tests", functions=[function], capacity=4, worker_name="raw-kept", keeps_reported=keeps
    )
    await call.write(worker_pb2.WorkerMessage(register=register))
    first = await asyncio.wait_for(call.read(), timeout=10)
    assert first is not grpc.aio.EOF and first.WhichOneof("message") == "registered", first
    return call


async def _execute(call: grpc.aio.StreamStreamCall) -> worker_pb2.Execute:
    message = await asyncio.wait_for(call.read(), timeout=10)
    assert message is not grpc.aio.EOF and message.WhichOneof("message") == "execute", message
    return message.execute


async def _run_step_one(call: grpc.aio.StreamStreamCall, client: durably.Client) -> tuple[str, str]:
    """Start a run and answer its first execution with step "one"; (run id, that execution's id)."""
    [event_id] = await client.send(durably.Event(name="raw/kept", data={}))
    run = await find_run(client, event_id)
    first = await _execute(call)
    assert first.run_id == run.id and not first.memos
    op = worker_pb2.StepOp(op=worker_pb2.OPCODE_STEP_RUN, id=STEP_ID, name="one", index=0, data_json=RESULT)
    await call.write(
        worker_pb2.WorkerMessage(result=worker_pb2.ExecutionResult(execution_id=first.execution_id, ops=[op]))
    )
    return run.id, first.execution_id


async def _next_memo(
    call: grpc.aio.StreamStreamCall, run_id: str, kind: str
) -> tuple[worker_pb2.Execute, worker_pb2.Memo]:
    """The run's next Execute, carrying step "one" as `kind` ("data_json" or "reported_in")."""
    execute = await _execute(call)
    assert execute.run_id == run_id
    [memo] = execute.memos
    assert memo.id == STEP_ID and memo.WhichOneof("outcome") == kind, memo
    return execute, memo


async def _finish(call: grpc.aio.StreamStreamCall, client: durably.Client, execute: worker_pb2.Execute) -> None:
    result = worker_pb2.ExecutionResult(execution_id=execute.execution_id, output_json=b'"done"')
    await call.write(worker_pb2.WorkerMessage(result=result))
    done = await client.wait_for_run(execute.run_id, timeout=15)
    assert done.status == "completed" and done.output == "done", describe(done)
    [step] = done.steps
    assert step.output == RESULT.decode().strip('"'), "the recorded result is not what the worker sent"


async def test_the_next_execute_names_the_workers_own_result_and_a_worker_without_it_gets_it_whole(
    harness: Harness,
) -> None:
    async with grpc.aio.insecure_channel(harness.address) as channel, open_client(harness.address) as client:
        call = await _register(worker_pb2_grpc.WorkerServiceStub(channel), keeps=True)
        run_id, reported_in = await _run_step_one(call, client)

        named, memo = await _next_memo(call, run_id, "reported_in")
        assert memo.reported_in == reported_in and not memo.data_json

        # This worker says it no longer has it: the same work comes again with the whole state.
        answer = worker_pb2.ExecutionResult(execution_id=named.execution_id, need_full_state=True)
        await call.write(worker_pb2.WorkerMessage(result=answer))
        whole, memo = await _next_memo(call, run_id, "data_json")
        assert whole.memo_base == 0 and memo.data_json == RESULT

        await _finish(call, client, whole)
        assert harness.daemon.alive(), harness.daemon.report()
        call.cancel()


async def test_a_worker_that_does_not_keep_its_results_gets_them_back(harness: Harness) -> None:
    async with grpc.aio.insecure_channel(harness.address) as channel, open_client(harness.address) as client:
        call = await _register(worker_pb2_grpc.WorkerServiceStub(channel), keeps=False)
        run_id, _ = await _run_step_one(call, client)

        second, memo = await _next_memo(call, run_id, "data_json")
        assert memo.data_json == RESULT

        await _finish(call, client, second)
        call.cancel()


async def test_results_that_cannot_be_read_back_hold_the_run_back_without_spinning(harness: Harness) -> None:
    """The step row an Execute must carry is gone from the store (a store fault): its reads are tried
    again after growing pauses, not in a loop, and the run goes on once the row is back."""
    async with grpc.aio.insecure_channel(harness.address) as channel, open_client(harness.address) as client:
        call = await _register(worker_pb2_grpc.WorkerServiceStub(channel), keeps=True)
        run_id, _ = await _run_step_one(call, client)
        named, _ = await _next_memo(call, run_id, "reported_in")

        db = sqlite3.connect(harness.workdir / "durably.db", isolation_level=None, timeout=10)
        try:
            [row] = db.execute("SELECT * FROM steps WHERE run_id = ?", (run_id,)).fetchall()
            db.execute("DELETE FROM steps WHERE run_id = ?", (run_id,))
            # The worker no longer has the result: the daemon must read it back, and cannot.
            answer = worker_pb2.ExecutionResult(execution_id=named.execution_id, need_full_state=True)
            await call.write(worker_pb2.WorkerMessage(result=answer))
            await asyncio.sleep(3)
            failures = harness.daemon.stderr().count("could not read back the results")
            assert 1 <= failures <= 4, f"{failures} reads in 3 s:\n{harness.daemon.report()}"
            db.execute(f"INSERT INTO steps VALUES ({', '.join('?' * len(row))})", row)
        finally:
            db.close()

        whole, memo = await _next_memo(call, run_id, "data_json")
        assert memo.data_json == RESULT
        await _finish(call, client, whole)
        call.cancel()
