"""``python -m bench.gateway_daemon serve ...``: durably's daemon, its worker stream also served by tonic.

A probe for ``bench.native_floor``, not a way to run durably. The daemon is the real one, started by its
own command line (same store, engine, API server and grpc.aio worker stream); when it registers its
``WorkerService`` servicer, the same servicer is also attached to ``gateway_probe.Gateway`` (bench/native/
gateway, a tonic server on a port of its own, printed as ``gateway: listening on HOST:PORT``). A worker
pointed at that port runs on the same engine code, with gRPC's transport in Rust instead of grpc.aio:
what moving only the transport would buy. ``$BENCH_GATEWAY_DIR`` is the folder holding the built module.
"""

from __future__ import annotations

import asyncio
import os
import sys
import types
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, NoReturn

import grpc
from durably.protocol.v1 import worker_pb2, worker_pb2_grpc

if TYPE_CHECKING:  # the daemon is imported by main() only: the driver and the probe's worker import MODULE_DIR
    from durably_server.api.worker_service import WorkerService

MODULE_DIR = "BENCH_GATEWAY_DIR"


class _Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


class _Context:
    """The part of grpc.aio's ServicerContext that WorkerService.Connect uses."""

    async def abort(self, code: grpc.StatusCode, details: str = "") -> NoReturn:
        raise _Aborted(code, details)


class GatewayStreams:
    """Feeds each gateway stream's messages to ``service.Connect`` and sends back what it yields."""

    def __init__(self, service: WorkerService, gateway: Any) -> None:
        self._service = service
        self._gateway = gateway
        self._inboxes: dict[int, asyncio.Queue[worker_pb2.WorkerMessage | None]] = {}
        self._serving: set[asyncio.Task[None]] = set()
        asyncio.get_running_loop().add_reader(gateway.fd, self._arrived)
        print(f"gateway: listening on 127.0.0.1:{gateway.port}", flush=True)

    def _arrived(self) -> None:
        for stream, data in self._gateway.take():
            inbox = self._inboxes.get(stream)
            if inbox is None:
                if data is None:
                    continue
                inbox = self._inboxes[stream] = asyncio.Queue()
                task = asyncio.create_task(self._serve(stream, inbox))
                self._serving.add(task)
                task.add_done_callback(self._serving.discard)
            inbox.put_nowait(None if data is None else worker_pb2.WorkerMessage.FromString(data))

    async def _serve(self, stream: int, inbox: asyncio.Queue[worker_pb2.WorkerMessage | None]) -> None:
        async def requests() -> AsyncIterator[worker_pb2.WorkerMessage]:
            while (message := await inbox.get()) is not None:
                yield message

        try:
            async for answer in self._service.Connect(requests(), _Context()):
                self._gateway.send(stream, answer.SerializeToString())
            self._gateway.close(stream, 0, "")
        except _Aborted as exc:
            self._gateway.close(stream, exc.code.value[0], exc.details)
        finally:
            self._inboxes.pop(stream, None)


def main() -> None:
    sys.path.insert(0, os.environ[MODULE_DIR])
    import gateway_probe  # type: ignore[import-not-found]  # built by bench.native_floor
    from durably_server import cli, server

    attached: list[GatewayStreams] = []

    def add_servicer(servicer: WorkerService, grpc_server: grpc.aio.Server) -> None:
        worker_pb2_grpc.add_WorkerServiceServicer_to_server(servicer, grpc_server)
        attached.append(GatewayStreams(servicer, gateway_probe.Gateway()))

    # serve() registers the servicer through this module attribute: the one place to hook in from outside.
    hook = types.SimpleNamespace(add_WorkerServiceServicer_to_server=add_servicer)
    server.worker_pb2_grpc = hook  # type: ignore[attr-defined,assignment]
    cli.main(sys.argv[1:])


if __name__ == "__main__":
    main()
