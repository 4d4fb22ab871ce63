"""ApiService: what clients call to send events and read runs."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from durably.protocol.v1 import api_pb2, api_pb2_grpc

from durably_server import convert
from durably_server.convert import RequestError
from durably_server.engine.executor import Executor
from durably_server.model import RunRecord
from durably_server.store.records import RunFilter

DEFAULT_WAIT_MS = 60_000
MAX_WAIT_MS = 3_600_000
MAX_LIST = 1000


async def _found(context: grpc.aio.ServicerContext, run: RunRecord | None, run_id: str) -> RunRecord:
    if run is None:
        await context.abort(grpc.StatusCode.NOT_FOUND, f"no run with id {run_id!r}")
    assert run is not None
    return run


async def _run_id(context: grpc.aio.ServicerContext, run_id: str) -> str:
    if not run_id:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "run_id is empty")
    return run_id


class ApiService(api_pb2_grpc.ApiServiceServicer):
    def __init__(self, executor: Executor) -> None:
        self._executor = executor

    async def SendEvents(
        self, request: api_pb2.SendEventsRequest, context: grpc.aio.ServicerContext
    ) -> api_pb2.SendEventsResponse:
        try:
            events = convert.events_in(request)
        except RequestError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        result = await self._executor.send_events(events)
        return api_pb2.SendEventsResponse(ids=result.ids, run_ids=result.run_ids)

    async def GetRun(self, request: api_pb2.GetRunRequest, context: grpc.aio.ServicerContext) -> api_pb2.GetRunResponse:
        run_id = await _run_id(context, request.run_id)
        run = await _found(context, await self._executor.get_run(run_id), run_id)
        return api_pb2.GetRunResponse(run=convert.run_out(run))

    async def ListRuns(
        self, request: api_pb2.ListRunsRequest, context: grpc.aio.ServicerContext
    ) -> api_pb2.ListRunsResponse:
        limit = request.limit or 100
        if not 0 < limit <= MAX_LIST:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"limit must be 1..{MAX_LIST}, got {request.limit}")
        try:
            status = convert.status_in(request.status)
            token = convert.page_token_in(request.page_token)
        except RequestError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        where = RunFilter(request.function_id, request.event_id, status, token, limit)
        runs = await self._executor.list_runs(where)
        next_token = runs[-1].id if len(runs) == limit else ""
        return api_pb2.ListRunsResponse(runs=[convert.run_out(run) for run in runs], next_page_token=next_token)

    async def WaitForRun(
        self, request: api_pb2.WaitForRunRequest, context: grpc.aio.ServicerContext
    ) -> api_pb2.GetRunResponse:
        run_id = await _run_id(context, request.run_id)
        timeout_ms = request.timeout_ms or DEFAULT_WAIT_MS
        if not 0 < timeout_ms <= MAX_WAIT_MS:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"timeout_ms must be 1..{MAX_WAIT_MS}, got {request.timeout_ms}"
            )
        run = await _found(context, await self._executor.wait_for_run(run_id, timeout_ms / 1000), run_id)
        return api_pb2.GetRunResponse(run=convert.run_out(run))

    async def WatchRun(
        self, request: api_pb2.GetRunRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[api_pb2.WatchRunResponse]:
        run_id = await _run_id(context, request.run_id)
        seen = False
        async for run, first_step in self._executor.watch_run(run_id):
            seen = True
            yield api_pb2.WatchRunResponse(run=convert.run_out(run), first_step=first_step)
        if not seen:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no run with id {run_id!r}")

    async def CancelRun(
        self, request: api_pb2.CancelRunRequest, context: grpc.aio.ServicerContext
    ) -> api_pb2.CancelRunResponse:
        run_id = await _run_id(context, request.run_id)
        result = await self._executor.cancel_run(run_id)
        if result is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no run with id {run_id!r}")
        assert result is not None
        run, cancelled = result
        return api_pb2.CancelRunResponse(run=convert.run_out(run), cancelled=cancelled)

    async def ListFunctions(
        self, request: api_pb2.ListFunctionsRequest, context: grpc.aio.ServicerContext
    ) -> api_pb2.ListFunctionsResponse:
        functions = [convert.function_out(spec, n) for spec, n in self._executor.functions(request.app_id)]
        return api_pb2.ListFunctionsResponse(functions=functions)

    async def GetMetrics(
        self, request: api_pb2.GetMetricsRequest, context: grpc.aio.ServicerContext
    ) -> api_pb2.GetMetricsResponse:
        return convert.metrics_out(self._executor.metrics, self._executor.store.writer.commits)
