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
from .tcp_proxy import Link, TcpProxy

HEADERS = 0x1
FRAME_HEADER_BYTES = 9


class AnswerDroppingProxy(TcpProxy):
    def __init__(self, upstream_port: int) -> None:
        super().__init__(upstream_port)
        self.armed = False
        self.dropped = 0

    async def _answers(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, upstream: asyncio.StreamWriter, link: Link
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
