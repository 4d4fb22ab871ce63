"""State transfer is not O(N²): over a long sequential run, the executor sends each saved result at most
once (workers keep a per-run cache), and none back to the worker that reported it (it keeps what it
reports); a worker that replaces a killed one (no cache) still gets the whole state, so the run
finishes with every step's output right. Each test has a daemon of its own, so
``GetMetrics`` counts that run alone."""

from __future__ import annotations

import durably
import grpc
import pytest
from durably.protocol.v1 import api_pb2, api_pb2_grpc
from durably_server.engine.runs import HELD_PAYLOAD_BYTES

from .harness import Harness, WorkerSpec, await_until, describe, find_run, metrics, open_client, run_to_end

TRANSFER = WorkerSpec("limits_transfer.py", ("transfer-seq",))


def expected(i: int, width: int) -> str:
    """What step ``s<i>`` returns (the worker's ``expected``)."""
    head = f"s{i}:"
    return head + "z" * (width - len(head))


async def start_blocked(harness: Harness, client: durably.Client, n: int, width: int, block: int) -> durably.Run:
    """A run of ``n`` steps returning all results, once its step ``s<block>`` has started (and waits)."""
    [event_id] = await client.send(
        durably.Event(name="transfer/seq", data={"n": n, "width": width, "block": block, "return_all": True})
    )
    run = await find_run(client, event_id)
    await await_until(
        lambda: harness.observations("step", run=run.id, name=f"s{block}", phase="started"),
        timeout=30,
        what=f"step s{block} to start",
    )
    return run


def raw_run(address: str, run_id: str) -> api_pb2.Run:
    with grpc.insecure_channel(address) as channel:
        return api_pb2_grpc.ApiServiceStub(channel).GetRun(api_pb2.GetRunRequest(run_id=run_id), timeout=30).run


async def test_a_500_step_run_on_one_worker_sends_it_none_of_its_own_results_back(harness: Harness) -> None:
    harness.start_worker(TRANSFER)
    n, width = 500, 200
    before = metrics(harness.address)
    async with open_client(harness.address) as client:
        done = await run_to_end(client, "transfer/seq", {"n": n, "width": width}, timeout=60)
    after = metrics(harness.address)

    assert done.status == "completed", describe(done)
    assert done.output == {"count": n, "results": None}
    run = raw_run(harness.address, done.id)
    assert len(run.steps) == n
    state_bytes = sum(len(step.output_json) for step in run.steps)
    assert state_bytes == n * (width + 2)

    sent_bytes = after.memo_bytes_sent - before.memo_bytes_sent
    sent_memos = after.memos_sent - before.memos_sent
    executions = after.executions_dispatched - before.executions_dispatched
    naive = sum(range(n)) * (width + 2)
    print(
        f"{n} steps, state {state_bytes} B: {executions} executions sent {sent_memos} memos, "
        f"{sent_bytes} B ({sent_bytes / state_bytes:.2f}x the state; resending everything would be {naive} B)"
    )
    assert executions >= n, f"only {executions} executions for {n} sequential steps: is the metric counted?"
    assert sent_memos < 3 * n, f"sent {sent_memos} memos for {n} steps"
    # Every step ran on this one worker, which kept what it reported: the executor named the results
    # (each step checked it got the previous step's result, see the worker) and sent no data.
    assert not harness.observations("bad-input", run=done.id), "a step got the wrong previous result"
    assert sent_bytes == 0, f"sent {sent_bytes} B of memos for a state of {state_bytes} B made by this worker"
    # The other direction: each result reached the daemon once, and so did the output.
    received = after.result_bytes_received - before.result_bytes_received
    assert received == state_bytes + len(run.output_json), f"received {received} B for {state_bytes} B of results"


@pytest.mark.parametrize(
    ("n", "width", "block"),
    [(100, 60, 50), (12, HELD_PAYLOAD_BYTES + 1000, 6)],
    ids=["small-results", "results-the-daemon-reads-back"],  # the daemon does not hold these in memory
)
async def test_a_worker_killed_mid_run_is_replaced_by_one_with_no_cache(
    harness: Harness, n: int, width: int, block: int
) -> None:
    first = harness.start_worker(TRANSFER)
    async with open_client(harness.address) as client:
        run = await start_blocked(harness, client, n, width, block)
        first.kill9()
        second = harness.start_worker(TRANSFER, wait=False)
        harness.release(f"release-{run.id}")
        done = await client.wait_for_run(run.id, timeout=60)

    assert done.status == "completed", describe(done)
    results = [expected(i, width) for i in range(n)]
    assert done.output == {"count": n, "results": results}, describe(done)
    assert not harness.observations("bad-input", run=run.id), "a step got the wrong previous result"

    stored = raw_run(harness.address, run.id)
    assert [s.name for s in stored.steps] == [f"s{i}" for i in range(n)]
    assert [s.output_json for s in stored.steps] == [f'"{r}"'.encode() for r in results]

    # Steps before the blocked one ran once on the first worker, the rest once on the new worker.
    finished = {o["name"]: o["pid"] for o in harness.observations("step", run=run.id, phase="finished")}
    counts = len(harness.observations("step", run=run.id, phase="finished"))
    assert counts == n, f"{counts} bodies finished for {n} steps: a saved step ran again"
    assert all(finished[f"s{i}"] == first.pid for i in range(block)), "a step before the crash ran on the new worker"
    assert all(finished[f"s{i}"] == second.pid for i in range(block, n))
    started = [o["pid"] for o in harness.observations("step", run=run.id, name=f"s{block}", phase="started")]
    assert started == [first.pid, second.pid]


async def test_a_restarted_daemon_reads_back_the_big_results_it_does_not_hold(harness: Harness) -> None:
    """kill -9 of the daemon mid-run: after the restart it loads the run without its big results (over
    HELD_PAYLOAD_BYTES) and reads them back from the store for the reconnected worker's full state."""
    n, width, block = 6, HELD_PAYLOAD_BYTES + 1000, 3
    worker = harness.start_worker(TRANSFER)
    async with open_client(harness.address) as client:
        run = await start_blocked(harness, client, n, width, block)
    harness.daemon.kill9()
    harness.daemon.start()
    harness.release(f"release-{run.id}")

    async with open_client(harness.address) as client:
        done = await client.wait_for_run(run.id, timeout=60)
    assert done.status == "completed", describe(done)
    assert done.output == {"count": n, "results": [expected(i, width) for i in range(n)]}, describe(done)
    assert not harness.observations("bad-input", run=run.id), "a step got the wrong previous result"
    finished = [o["name"] for o in harness.observations("step", run=run.id, phase="finished")]
    assert [f"s{i}" for i in range(block)] == finished[:block], "a step recorded before the crash ran again"
    assert worker.alive()
