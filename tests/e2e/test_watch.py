"""WatchRun streams a run as it changes; ListFunctions and GetMetrics describe the daemon."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from durably.protocol.v1 import api_pb2, api_pb2_grpc

from .harness import CRASH, Harness, await_until, find_run

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
