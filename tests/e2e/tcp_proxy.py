"""A loopback TCP proxy between the SDK and the daemon, for the network faults no process fault makes:
an answer lost on the way back (test_lost_answers.py), a connection gone silent (test_partition.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time


class Link:
    """One proxied connection. Once `cut`, what either side sends is read and dropped, and nothing is
    closed: no FIN, no RST, as when a route dies, a NAT forgets the flow or a host vanishes."""

    def __init__(self) -> None:
        self.cut = False
        self.daemon_closed_at: float | None = None
        """When (time.monotonic) the daemon's end closed, if it did."""


class TcpProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.links: list[Link] = []
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> str:
        """Listen on a free loopback port; returns the address to give the SDK."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"127.0.0.1:{port}"

    async def close(self) -> None:
        for task in self._pipes:
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        for writer in self._writers:  # those a cut left open
            writer.transport.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def cut_all(self) -> int:
        """Cut every connection made so far (later ones pass); returns how many."""
        for link in self.links:
            link.cut = True
        return len(self.links)

    async def _accept(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        server_in, server_out = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        link = Link()
        self.links.append(link)
        self._writers += (client_out, server_out)
        for pipe in (
            self._copy(client_in, server_out, link),
            self._until_daemon_closes(server_in, client_out, server_out, link),
        ):
            task = asyncio.create_task(pipe)
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _copy(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, link: Link) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while data := await source.read(65536):
                if not link.cut:
                    sink.write(data)
                    await sink.drain()
        if not link.cut:  # a cut passes on no close either
            sink.close()

    async def _until_daemon_closes(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, upstream: asyncio.StreamWriter, link: Link
    ) -> None:
        await self._answers(source, sink, upstream, link)
        link.daemon_closed_at = time.monotonic()

    async def _answers(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, upstream: asyncio.StreamWriter, link: Link
    ) -> None:
        """What the daemon sends back (`upstream` is the way to the daemon, for a subclass that cuts it)."""
        await self._copy(source, sink, link)
