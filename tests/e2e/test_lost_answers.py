"""A SendEvents whose answer is lost on the way back (docs: reliability.md T6): the SDK's retry stores
each event once, because the SDK gave every event its id before the first try.

Between the client and the daemon sits a TCP proxy that reads the HTTP/2 frames the daemon sends and,
when armed, cuts both connections instead of passing on the first answer's HEADERS frame: the daemon
has committed the events (it answers only then), the client has heard nothing and sees UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import contextlib

import durably

from .harness import APP_ID, CRASH, Harness, metrics, open_client

HEADERS = 0x1
FRAME_HEADER_BYTES = 9


class AnswerDroppingProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.armed = False
        self.dropped = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"127.0.0.1:{port}"

    async def close(self) -> None:
        for task in self._pipes:
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _accept(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        server_in, server_out = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        for pipe in (self._copy(client_in, server_out), self._frames(server_in, client_out, server_out)):
            task = asyncio.create_task(pipe)
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _copy(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        sink.close()

    async def _frames(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, upstream: asyncio.StreamWriter
    ) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                header = await source.readexactly(FRAME_HEADER_BYTES)
                payload = await source.readexactly(int.from_bytes(header[:3], "big"))
                stream = int.from_bytes(header[5:9], "big") & 0x7FFFFFFF
                if self.armed and header[3] == HEADERS and stream > 0:
                    self.armed = False
                    self.dropped += 1
                    sink.transport.abort()
                    upstream.transport.abort()
                    return
                sink.write(header + payload)
                await sink.drain()
        sink.close()


async def test_a_send_whose_answer_was_lost_is_retried_and_stores_each_event_once(harness: Harness) -> None:
    harness.start_worker(CRASH)  # serves "echo", triggered by demo/echo
    proxy = AnswerDroppingProxy(harness.daemon.port)
    address = await proxy.start()
    client = durably.Client(APP_ID, address=address)
    try:
        proxy.armed = True
        ids = await client.send([durably.Event("demo/echo", {"n": 1}), durably.Event("demo/echo", {"n": 2})])
    finally:
        await client.close()
        await proxy.close()
    assert proxy.dropped == 1, "the proxy never cut an answer: the test proves nothing"
    assert metrics(harness.address).events_received == 4, "the daemon did not get both tries"
    async with open_client(harness.address) as direct:
        runs = await direct.list_runs(function_id="echo")
        assert sorted(run.event_id for run in runs) == sorted(ids), runs
        for run in runs:
            done = await direct.wait_for_run(run.id, timeout=30)
            assert done.status == "completed", done
