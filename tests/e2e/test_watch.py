"""WatchRun streams a run as it changes; ListFunctions and GetMetrics describe the daemon."""

from __future__ import annotations

import asyncio

import durably
import grpc
import pytest
from durably.protocol.v1 import api_pb2, api_pb2_grpc

from .harness import CRASH, Harness, await_until, find_run, open_client, wait_until

WORKERS = [CRASH]


async def test_watch_run_streams_each_change_until_the_run_ends(cluster: Harness, client: object) -> None:
    import durably

    assert isinstance(client, durably.Client)
    [event_id] = await client.send(durably.Event(name="demo/crash-between", data={}))
    run = await find_run(client, event_id)
    async with grpc.aio.insecure_channel(cluster.daemon.address) as channel:
        api = api_pb2_grpc.ApiServiceStub(channel)
        seen: list[tuple[str, int]] = []
        steps: list[str] = []
        first_steps: list[int] = []

        async def watch() -> None:
            async for reply in api.WatchRun(api_pb2.GetRunRequest(run_id=run.id), timeout=30):
                first_steps.append(reply.first_step)
                steps.extend(step.name for step in reply.run.steps)
                seen.append((api_pb2.RunStatus.Name(reply.run.status), len(steps)))

        watching = asyncio.create_task(watch())
        await await_until(lambda: cluster.observations("step", run=run.id, name="two"), what="step two to start")
        # Step one is recorded while two runs: the stream shows it before the run moves on.
        await await_until(lambda: ("RUN_STATUS_RUNNING", 1) in seen, what=f"a running run with one step in {seen}")
        cluster.release(f"go-{run.id}")
        await asyncio.wait_for(watching, 30)
    assert seen[-1] == ("RUN_STATUS_COMPLETED", 3), seen
    assert any(status == "RUN_STATUS_RUNNING" for status, _ in seen), seen
    # Each step is sent once, in order: a message's first step is the count of those sent before it.
    final = await client.get_run(run.id)
    assert steps == [step.name for step in final.steps], (steps, final.steps)
    assert first_steps == [0, *(count for _, count in seen[:-1])], (first_steps, seen)


async def test_watch_of_an_unknown_run_is_not_found(cluster: Harness) -> None:
    async with grpc.aio.insecure_channel(cluster.daemon.address) as channel:
        api = api_pb2_grpc.ApiServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in api.WatchRun(api_pb2.GetRunRequest(run_id="01NOSUCHRUN0000000000000000"), timeout=10):
                pass
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def _watch_to_the_end(client: durably.Client, run_id: str, snapshots: list[durably.Run]) -> None:
    async for run in client.watch_run(run_id, timeout=60):
        snapshots.append(run)


def _check_snapshots(snapshots: list[durably.Run], final: durably.Run) -> None:
    """Whole runs, each step once and in order, ending with the ended run."""
    assert snapshots[-1].status == "completed" and snapshots[-1] == final, (snapshots[-1], final)
    names = [step.name for step in final.steps]
    assert names == ["one", "two", "three"], names
    for run in snapshots:
        assert [step.name for step in run.steps] == names[: len(run.steps)], run.steps
    counts = [len(run.steps) for run in snapshots]
    assert counts == sorted(counts), counts


async def test_client_watch_run_yields_the_whole_run_at_each_change(cluster: Harness, client: durably.Client) -> None:
    [event_id] = await client.send(durably.Event(name="demo/crash-between", data={}))
    run = await find_run(client, event_id)
    snapshots: list[durably.Run] = []
    watching = asyncio.create_task(_watch_to_the_end(client, run.id, snapshots))
    await await_until(
        lambda: any(len(r.steps) == 1 and r.status == "running" for r in snapshots),
        what=f"a running run with step one in {snapshots}",
    )
    cluster.release(f"go-{run.id}")
    await asyncio.wait_for(watching, 30)
    _check_snapshots(snapshots, await client.get_run(run.id))


async def test_client_watch_run_times_out_and_knows_unknown_runs(cluster: Harness, client: durably.Client) -> None:
    [event_id] = await client.send(durably.Event(name="demo/crash-between", data={}))
    run = await find_run(client, event_id)
    seen: list[durably.Run] = []
    with pytest.raises(TimeoutError, match="has not ended"):
        async for snapshot in client.watch_run(run.id, timeout=0.5):
            seen.append(snapshot)
    assert seen and seen[-1].status in ("queued", "running"), seen
    with pytest.raises(durably.RunNotFoundError):
        async for _ in client.watch_run("01NOSUCHRUN0000000000000000"):
            pass
    cluster.release(f"go-{run.id}")
    await client.wait_for_run(run.id, timeout=30)


def test_sync_client_watch_run_of_an_ended_run_yields_it_once(cluster: Harness) -> None:
    with durably.SyncClient(app_id="tests", address=cluster.address) as client:
        [event_id] = client.send(durably.Event(name="demo/echo", data={"x": 1}))
        [run] = wait_until(lambda: client.list_runs(event_id=event_id), what=f"a run for event {event_id}")
        run_id = run.id
        done = client.wait_for_run(run_id, timeout=30)
        assert list(client.watch_run(run_id)) == [done]
        with pytest.raises(durably.RunNotFoundError):
            list(client.watch_run("01NOSUCHRUN0000000000000000"))


async def test_client_watch_run_goes_on_across_a_daemon_restart(harness: Harness) -> None:
    harness.start_worker(CRASH)
    async with open_client(harness.address) as client:
        [event_id] = await client.send(durably.Event(name="demo/crash-between", data={}))
        run = await find_run(client, event_id)
        snapshots: list[durably.Run] = []
        watching = asyncio.create_task(_watch_to_the_end(client, run.id, snapshots))
        await await_until(lambda: any(len(r.steps) == 1 for r in snapshots), what=f"step one in {snapshots}")
        harness.daemon.kill9()
        harness.daemon.start()  # same db file, same port: the watch reconnects and starts over
        harness.release(f"go-{run.id}")
        await asyncio.wait_for(watching, 60)
        _check_snapshots(snapshots, await client.get_run(run.id))


async def test_list_functions_and_metrics_describe_the_daemon(cluster: Harness, client: object) -> None:
    import durably

    assert isinstance(client, durably.Client)
    async with grpc.aio.insecure_channel(cluster.daemon.address) as channel:
        api = api_pb2_grpc.ApiServiceStub(channel)
        before = await api.GetMetrics(api_pb2.GetMetricsRequest(), timeout=10)
        [event_id] = await client.send(durably.Event(name="demo/echo", data={"x": 1}))
        await client.wait_for_run((await find_run(client, event_id)).id, timeout=30)
        after = await api.GetMetrics(api_pb2.GetMetricsRequest(), timeout=10)
        functions = await api.ListFunctions(api_pb2.ListFunctionsRequest(app_id="tests"), timeout=10)
    assert after.events_received == before.events_received + 1
    assert after.runs_completed == before.runs_completed + 1
    # One execution: the single new step runs inline and the handler returns in the same execution.
    assert after.executions_dispatched == before.executions_dispatched + 1
    assert after.commits > before.commits
    echo = next(f for f in functions.functions if f.id == "echo")
    assert echo.connected_workers == 1 and list(echo.event_triggers) == ["demo/echo"]
