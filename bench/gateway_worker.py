"""``python -m bench.gateway_worker``: the bench's SDK worker, its Connect stream carried by tonic.

A probe for ``bench.native_floor``, the worker's counterpart of ``bench.gateway_daemon``. The worker is
``bench/workers/functions.py`` and the SDK unchanged, except that the stream ``WorkerServiceStub.Connect``
opens is ``gateway_probe.Client`` (bench/native/gateway: tonic on a thread of its own, messages handed to
the event loop as bytes through an eventfd) instead of grpc.aio's: what moving the worker's transport below
Python would buy. ``$BENCH_GATEWAY_DIR`` is the folder holding the built module; ``$DURABLY_ADDRESS`` the
daemon's address, as for any worker.
"""

from __future__ import annotations

import asyncio
import os
import runpy
import sys
import types
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
from durably import _worker
from durably.protocol.v1 import worker_pb2

from bench.gateway_daemon import MODULE_DIR


class ClientCall:
    """What the SDK's worker uses of a grpc.aio stream-stream call: ``read`` and ``cancel``."""

    def __init__(self, client: Any, requests: AsyncIterator[worker_pb2.WorkerMessage]) -> None:
        self._client = client
        self._loop = asyncio.get_running_loop()
        self._arrived: deque[worker_pb2.ExecutorMessage | None] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._loop.add_reader(client.fd, self._take)
        self._sending = asyncio.create_task(self._send_all(requests))

    async def _send_all(self, requests: AsyncIterator[worker_pb2.WorkerMessage]) -> None:
        async for message in requests:
            self._client.send(message.SerializeToString())
        self._client.close()

    def _take(self) -> None:
        for _, data in self._client.take():
            self._arrived.append(None if data is None else worker_pb2.ExecutorMessage.FromString(data))
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def read(self) -> worker_pb2.ExecutorMessage | object:
        while not self._arrived:
            self._waiter = self._loop.create_future()
            await self._waiter
        message = self._arrived.popleft()
        if message is None:
            self._arrived.appendleft(None)  # every later read sees the end too
            end: object = grpc.aio.EOF
            return end
        return message

    def cancel(self) -> bool:
        self._sending.cancel()
        self._client.close()
        self._loop.remove_reader(self._client.fd)
        return True


def main() -> None:
    sys.path.insert(0, os.environ[MODULE_DIR])
    import gateway_probe  # type: ignore[import-not-found]  # built by bench.native_floor

    address = os.environ["DURABLY_ADDRESS"]

    class Stub:
        def __init__(self, channel: grpc.aio.Channel) -> None:
            pass  # the SDK's channel is never used: it connects lazily

        def Connect(
            self, requests: AsyncIterator[worker_pb2.WorkerMessage], metadata: Sequence[tuple[str, str]] = ()
        ) -> ClientCall:
            authorization = dict(metadata).get("authorization")
            return ClientCall(gateway_probe.Client(address, authorization), requests)

    _worker.worker_pb2_grpc = types.SimpleNamespace(WorkerServiceStub=Stub)  # type: ignore[attr-defined,assignment]
    runpy.run_module("bench.workers.functions", run_name="__main__")


if __name__ == "__main__":
    main()
