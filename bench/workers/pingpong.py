"""The gRPC floor's server: a bidirectional stream that echoes every message, nothing else.

Generic handler with bytes in and bytes out (no proto), on grpc.aio as the daemon uses it. Prints
``pingpong: listening on HOST:PORT`` when ready; SIGTERM stops it.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator

import grpc

METHOD = "/bench.PingPong/Stream"


async def echo(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    async for message in requests:
        yield message


async def main() -> None:
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "bench.PingPong", {"Stream": grpc.stream_stream_rpc_method_handler(echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    print(f"pingpong: listening on 127.0.0.1:{port}", flush=True)
    await stop.wait()
    await server.stop(1)


if __name__ == "__main__":
    asyncio.run(main())
