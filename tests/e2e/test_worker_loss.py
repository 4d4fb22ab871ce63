"""Worker loss (issue 5): a worker that goes silent loses its lease to another worker and its late
result is refused; a worker killed mid-step leaves the run to the worker still connected."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time

import durably
import grpc
import pytest
from durably._grpc import KEEPALIVE_TIME_MS, KEEPALIVE_TIMEOUT_MS
from durably.protocol.v1 import worker_pb2, worker_pb2_grpc

from .harness import Harness, WorkerProcess, WorkerSpec, await_until, describe, find_run, open_client, wait_until

WORKER_LOSS = WorkerSpec("failures_worker_loss.py", ("hold",))
GIVE_UP_S = (KEEPALIVE_TIME_MS + KEEPALIVE_TIMEOUT_MS) / 1000
"""How long the SDK waits for a daemon that answers nothing before it gives the connection up."""
QUICK_EXPIRY = ("--heartbeat", "200ms", "--worker-timeout", "1s")


async def started_on(harness: Harness, run_id: str, count: int) -> list[int]:
    """Pids of the workers that started step `slow` of `run_id`, once it started `count` times."""

    def check() -> list[int] | None:
        found = harness.observations("step", run=run_id, name="slow", phase="started")
        return [o["pid"] for o in found] if len(found) >= count else None

    pids: list[int] = await await_until(check, timeout=15, what=f"step slow of run {run_id} to start {count}x")
    return pids


def prepared_by(harness: Harness, run_id: str) -> int:
    [prepared] = harness.observations("step", run=run_id, name="prepare")
    return int(prepared["pid"])


def two_workers(harness: Harness) -> dict[int, WorkerProcess]:
    workers = [harness.start_worker(WORKER_LOSS), harness.start_worker(WORKER_LOSS)]
    wait_until(lambda: harness.connected("hold") == 2, timeout=30, what="both workers to be connected")
    return {w.pid: w for w in workers}


@pytest.mark.parametrize("daemon_args", [QUICK_EXPIRY])
async def test_silent_worker_loses_its_step_and_its_late_result_is_refused(harness: Harness) -> None:
    workers = two_workers(harness)
    async with open_client(harness.address) as client:
        [event_id] = await client.send(durably.Event(name="failures/hold", data={}))
        run = await find_run(client, event_id)
        [first_pid] = await started_on(harness, run.id, 1)
        silent = workers[first_pid]
        [other_pid] = [pid for pid in workers if pid != first_pid]

        silent.pause()  # SIGSTOP: the connection stays open, the heartbeats stop
        try:
            paused_at = time.time()
            harness.release(f"release-{run.id}")  # whoever runs the step now finishes it at once
            pids = await started_on(harness, run.id, 2)
            assert pids == [first_pid, other_pid], f"step slow started on {pids}"
            taken_after = harness.observations("step", run=run.id, name="slow", phase="started")[1]["t"] - paused_at
            assert 0.5 <= taken_after < 3.0, f"the step moved to the other worker {taken_after:.2f} s after SIGSTOP"

            done = await client.wait_for_run(run.id, timeout=15)
            assert done.status == "completed", describe(done)
            prepare_pid = prepared_by(harness, run.id)
            assert done.output == {"prepared_by": prepare_pid, "slow": {"pid": other_pid}, "finished_by": other_pid}
        finally:
            silent.resume()

        # The paused worker wakes up, its step body finishes ... and its result is refused.
        await await_until(
            lambda: harness.observations("step", run=run.id, name="slow", phase="finished", pid=first_pid),
            timeout=10,
            what="the resumed worker's step to finish",
        )
        await asyncio.sleep(0.5)
        after = await client.get_run(run.id)
        assert after.status == "completed", describe(after)
        assert after.output == done.output, describe(after)
        slow = [s for s in after.steps if s.name == "slow"]
        assert len(slow) == 1, f"step slow recorded {len(slow)} times: {describe(after)}"
        assert slow[0].output == {"pid": other_pid}, f"the late result replaced the recorded one: {describe(after)}"
        assert slow[0].status == "completed" and slow[0].attempts >= 1
        assert [s.name for s in after.steps] == ["prepare", "slow"], describe(after)
        assert harness.count("step", run=run.id, name="prepare") == 1, "a recorded step ran again"

        # The resumed worker is still alive and connects again.
        assert silent.alive(), silent.report()
        await await_until(lambda: harness.connected("hold") == 2, timeout=10, what="the resumed worker to reconnect")


@pytest.mark.parametrize("daemon_args", [QUICK_EXPIRY])
async def test_a_daemon_that_stood_still_takes_no_worker_for_gone(harness: Harness) -> None:
    """The daemon frozen (SIGSTOP) past the worker timeout heard no heartbeat meanwhile, through no fault
    of the workers: once it goes on, they keep their leases (they lost them all at once, their steps ran
    again, found by test_nemesis.py) and their connections (gRPC had often just sent a ping, to size its
    windows, when the freeze came: judged by a 1 s ping timeout on waking, it dropped the worker's
    connection now and then; the daemon's ping timeout is at least 10 s)."""
    harness.start_worker(WORKER_LOSS)
    async with open_client(harness.address) as client:
        [event_id] = await client.send(durably.Event(name="failures/hold", data={}))
        run = await find_run(client, event_id)
        await started_on(harness, run.id, 1)
        harness.daemon.pause()
        await asyncio.sleep(2.5)
        harness.daemon.resume()
        await asyncio.sleep(1.0)
        harness.release(f"release-{run.id}")
        done = await client.wait_for_run(run.id, timeout=15)
    assert done.status == "completed", describe(done)
    assert "lease expired" not in harness.daemon.stderr(), harness.daemon.report()
    assert harness.count("step", run=run.id, name="slow", phase="started") == 1, "the step ran again"


@pytest.mark.slow
async def test_a_worker_gives_up_a_frozen_daemon_and_connects_again_once_it_goes_on(harness: Harness) -> None:
    """Frozen (SIGSTOP), the daemon answers no ping: 5 s after one goes out (gRPC pings on its own too,
    to size its windows, so one often has just gone out; else within the 10 s keepalive) the worker gives
    the connection up as if the network had failed (test_partition.py) and keeps trying; once the daemon
    goes on, the worker registers again and the run it was holding completes (its step runs again: the
    first body's result went with the stream)."""
    worker = harness.start_worker(WORKER_LOSS)
    async with open_client(harness.address) as client:
        [event_id] = await client.send(durably.Event(name="failures/hold", data={}))
        run = await find_run(client, event_id)
        await started_on(harness, run.id, 1)
        harness.daemon.pause()
        paused_at = time.monotonic()
        try:
            await await_until(
                lambda: "ping timeout" in worker.stderr(), timeout=GIVE_UP_S + 5, what="the worker to give up"
            )
        finally:
            harness.daemon.resume()
        print(f"the worker gave up the frozen daemon after {time.monotonic() - paused_at:.1f} s")
        await await_until(lambda: harness.connected("hold") == 1, timeout=30, what="the worker to register again")
        harness.release(f"release-{run.id}")
        done = await client.wait_for_run(run.id, timeout=30)
    assert done.status == "completed", describe(done)
    assert worker.alive()
    assert harness.count("step", run=run.id, name="slow", phase="started") == 2, "not run again after the reconnect"


async def test_worker_killed_mid_step_the_other_connected_worker_finishes_the_run(harness: Harness) -> None:
    workers = two_workers(harness)
    async with open_client(harness.address) as client:
        [event_id] = await client.send(durably.Event(name="failures/hold", data={}))
        run = await find_run(client, event_id)
        [victim_pid] = await started_on(harness, run.id, 1)
        [survivor_pid] = [pid for pid in workers if pid != victim_pid]

        workers[victim_pid].kill9()
        harness.release(f"release-{run.id}")
        done = await client.wait_for_run(run.id, timeout=15)

        assert done.status == "completed", describe(done)
        prepare_pid = prepared_by(harness, run.id)
        assert done.output == {"prepared_by": prepare_pid, "slow": {"pid": survivor_pid}, "finished_by": survivor_pid}
        assert await started_on(harness, run.id, 2) == [victim_pid, survivor_pid]
        finished = harness.observations("step", run=run.id, name="slow", phase="finished")
        assert [o["pid"] for o in finished] == [survivor_pid]
        assert [s.name for s in done.steps] == ["prepare", "slow"], describe(done)
        assert harness.count("step", run=run.id, name="prepare") == 1, "a recorded step ran again"
        assert workers[survivor_pid].alive()


async def register(
    stub: worker_pb2_grpc.WorkerServiceStub, function: worker_pb2.FunctionConfig
) -> grpc.aio.StreamStreamCall:
    """Open a worker stream straight from the generated stubs (no SDK) and register `function`."""
    call = stub.Connect()
    register = worker_pb2.Register(app_id="tests", functions=[function], capacity=1, worker_name="raw-test-worker")
    await call.write(worker_pb2.WorkerMessage(register=register))
    first = await asyncio.wait_for(call.read(), timeout=10)
    assert first is not grpc.aio.EOF and first.WhichOneof("message") == "registered", first
    return call


@pytest.mark.parametrize("daemon_args", [QUICK_EXPIRY])
async def test_result_sent_after_the_lease_expired_is_refused(harness: Harness) -> None:
    """At the protocol level: a worker silent past --worker-timeout loses its execution; a result it
    sends later for that execution (here on a new stream) is not recorded, whatever it claims."""
    hold = worker_pb2.FunctionConfig(id="hold", triggers=[worker_pb2.Trigger(event="failures/hold")], retries=3)
    async with grpc.aio.insecure_channel(harness.address) as channel, open_client(harness.address) as client:
        stub = worker_pb2_grpc.WorkerServiceStub(channel)
        silent = await register(stub, hold)
        [event_id] = await client.send(durably.Event(name="failures/hold", data={}))
        run = await find_run(client, event_id)
        message = await asyncio.wait_for(silent.read(), timeout=10)
        assert message is not grpc.aio.EOF and message.WhichOneof("message") == "execute", message
        lost = message.execute
        assert lost.run_id == run.id

        # A real worker connects; the raw one sends nothing (no heartbeat, no result) ...
        real = harness.start_worker(WORKER_LOSS)
        await await_until(lambda: harness.connected("hold") == 2, timeout=30, what="both workers to be connected")
        # ... so the daemon ends its stream and the real worker gets the execution.
        try:
            ended = await asyncio.wait_for(silent.read(), timeout=5)
            assert ended is grpc.aio.EOF, f"expected the silent worker's stream to end, got {ended}"
        except grpc.aio.AioRpcError:
            pass  # ended with an error status: ended all the same
        assert await started_on(harness, run.id, 1) == [real.pid]

        # The silent worker comes back (a new stream, another function) with its late result:
        # step "slow" done and the handler finished.
        late = await register(
            stub, worker_pb2.FunctionConfig(id="late-sender", triggers=[worker_pb2.Trigger(event="failures/never")])
        )
        slow_id = hashlib.sha1(b"slow", usedforsecurity=False).hexdigest()
        result = worker_pb2.ExecutionResult(
            execution_id=lost.execution_id,
            ops=[
                worker_pb2.StepOp(
                    op=worker_pb2.OPCODE_STEP_RUN, id=slow_id, name="slow", index=0, data_json=b'{"pid": -1}'
                )
            ],
            output_json=json.dumps({"late": True}).encode(),
        )
        await late.write(worker_pb2.WorkerMessage(result=result))
        await asyncio.sleep(0.5)
        meanwhile = await client.get_run(run.id)
        assert meanwhile.status == "running", f"the late result was taken: {describe(meanwhile)}"
        assert [s.name for s in meanwhile.steps] == ["prepare"], f"the late result was taken: {describe(meanwhile)}"

        harness.release(f"release-{run.id}")
        done = await client.wait_for_run(run.id, timeout=15)
        assert done.status == "completed", describe(done)
        assert done.output == {"prepared_by": real.pid, "slow": {"pid": real.pid}, "finished_by": real.pid}
        assert [(s.name, s.output) for s in done.steps] == [("prepare", real.pid), ("slow", {"pid": real.pid})]
        assert harness.daemon.alive(), harness.daemon.report()
        late.cancel()
