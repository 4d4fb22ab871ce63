"""In-process fakes of the executor's gRPC services, on 127.0.0.1, for worker and client tests."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import grpc
from durably.protocol.v1 import api_pb2, api_pb2_grpc, worker_pb2, worker_pb2_grpc


class FakeWorkerService(worker_pb2_grpc.WorkerServiceServicer):
    """Records what workers send; ``execute()`` pushes an Execute down the newest stream."""

    def __init__(self, heartbeat_ms: int = 50) -> None:
        self.heartbeat_ms = heartbeat_ms
        self.registers: asyncio.Queue[worker_pb2.Register] = asyncio.Queue()
        self.results: asyncio.Queue[worker_pb2.ExecutionResult] = asyncio.Queue()
        self.heartbeats: asyncio.Queue[list[str]] = asyncio.Queue()
        self.streams: list[asyncio.Queue[worker_pb2.Execute]] = []
        self._ids = itertools.count(1)

    def execute(self, message: worker_pb2.Execute) -> None:
        self.streams[-1].put_nowait(message)

    async def heartbeat_listing(self, execution_id: str, timeout: float = 5.0) -> None:
        """Wait for a heartbeat that lists ``execution_id`` as in flight."""
        async with asyncio.timeout(timeout):
            while execution_id not in await self.heartbeats.get():
                pass

    async def Connect(self, request_iterator: Any, context: Any) -> None:  # type: ignore[override]
        first = await context.read()
        outgoing: asyncio.Queue[worker_pb2.Execute] = asyncio.Queue()
        self.streams.append(outgoing)
        registered = worker_pb2.Registered(worker_id=f"w{next(self._ids)}", heartbeat_interval_ms=self.heartbeat_ms)
        await context.write(worker_pb2.ExecutorMessage(registered=registered))
        self.registers.put_nowait(first.register)

        async def read() -> None:
            while (received := await context.read()) is not grpc.aio.EOF:
                batched = received.WhichOneof("message") == "batch"
                for message in received.batch.messages if batched else [received]:
                    kind = message.WhichOneof("message")
                    if kind == "result":
                        self.results.put_nowait(message.result)
                    elif kind == "heartbeat":
                        self.heartbeats.put_nowait(list(message.heartbeat.in_flight))

        reader = asyncio.create_task(read())
        try:
            while not reader.done():
                get = asyncio.create_task(outgoing.get())
                await asyncio.wait({get, reader}, return_when=asyncio.FIRST_COMPLETED)
                if get.done():
                    await context.write(worker_pb2.ExecutorMessage(execute=get.result()))
                else:
                    get.cancel()
        finally:
            reader.cancel()


def _run(run_id: str, status: int = api_pb2.RUN_STATUS_COMPLETED, **fields: Any) -> api_pb2.Run:
    return api_pb2.Run(id=run_id, app_id="unit", status=status, **fields)  # type: ignore[arg-type]


class FakeApiService(api_pb2_grpc.ApiServiceServicer):
    """Answers from fixed rules: run id "missing" is NOT_FOUND, event name "bad" INVALID_ARGUMENT,
    run id "forever" never ends, others end at their second WaitForRun."""

    def __init__(self) -> None:
        self.wait_calls: dict[str, int] = {}
        self.list_requests: list[api_pb2.ListRunsRequest] = []

    async def SendEvents(self, request: Any, context: Any) -> api_pb2.SendEventsResponse:
        for event in request.events:
            if event.name == "bad":
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "event name 'bad' is not allowed")
        return api_pb2.SendEventsResponse(ids=[e.id or f"gen-{i}" for i, e in enumerate(request.events)])

    async def GetRun(self, request: Any, context: Any) -> api_pb2.GetRunResponse:
        if request.run_id == "missing":
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no run {request.run_id}")
        return api_pb2.GetRunResponse(run=_run(request.run_id, output_json=b'{"ok":true}'))

    async def WaitForRun(self, request: Any, context: Any) -> api_pb2.GetRunResponse:
        if request.run_id == "missing":
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no run {request.run_id}")
        calls = self.wait_calls[request.run_id] = self.wait_calls.get(request.run_id, 0) + 1
        if request.run_id == "forever" or calls < 2:
            await asyncio.sleep(min(request.timeout_ms, 100) / 1000)
            return api_pb2.GetRunResponse(run=_run(request.run_id, api_pb2.RUN_STATUS_RUNNING))
        return api_pb2.GetRunResponse(run=_run(request.run_id, output_json=b"42"))

    async def ListRuns(self, request: Any, context: Any) -> api_pb2.ListRunsResponse:
        self.list_requests.append(request)
        return api_pb2.ListRunsResponse(runs=[_run("r1", function_id=request.function_id)])

    async def WatchRun(self, request: Any, context: Any) -> AsyncIterator[api_pb2.WatchRunResponse]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not faked")
        yield api_pb2.WatchRunResponse()

    async def CancelRun(self, request: Any, context: Any) -> api_pb2.CancelRunResponse:
        return api_pb2.CancelRunResponse(run=_run(request.run_id, api_pb2.RUN_STATUS_CANCELLED), cancelled=True)

    async def ListFunctions(self, request: Any, context: Any) -> api_pb2.ListFunctionsResponse:
        info = api_pb2.FunctionInfo(app_id=request.app_id, id="f", event_triggers=["e"], retries=3, connected_workers=1)
        return api_pb2.ListFunctionsResponse(functions=[info])


class FakeExecutor:
    """A grpc.aio server with both fakes; ``restart()`` keeps the port, like a restarted daemon."""

    def __init__(self) -> None:
        self.workers = FakeWorkerService()
        self.api = FakeApiService()
        self.port = 0
        self._server: Any = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        server = grpc.aio.server()
        worker_pb2_grpc.add_WorkerServiceServicer_to_server(self.workers, server)
        api_pb2_grpc.add_ApiServiceServicer_to_server(self.api, server)
        self.port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        await server.start()
        self._server = server

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=None)
            self._server = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()
