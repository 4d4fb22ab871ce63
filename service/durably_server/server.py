"""The daemon process: open the store, serve gRPC, stop cleanly on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sqlite3
import sys
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from durably.protocol.v1 import api_pb2_grpc, worker_pb2_grpc

from durably_server.api.api_service import ApiService
from durably_server.api.auth import TokenCheck
from durably_server.api.store_errors import StoreErrors
from durably_server.api.tls import ServerTls
from durably_server.api.worker_service import WorkerService
from durably_server.engine.executor import Executor
from durably_server.engine.retry import RetryPolicy
from durably_server.store import Store, StoreLockedError, StoreOpenError

log = logging.getLogger("durably")

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
GRACE_SECONDS = 2.0
GC_THRESHOLDS = (50_000, 20, 20)
"""The cycle collector's thresholds. Each step allocates many short-lived objects (protobuf messages,
dataclasses, futures) that die by reference counting; at the default 700 allocations the young
generation was collected several times per step, ~5 % of the daemon's CPU under load."""
KEEPALIVE_TIME_MS = 20_000
"""The daemon pings every connection this often, calls under way or not."""
MIN_PING_TIMEOUT_MS = 10_000
"""gRPC judges a ping's answer by time that ran while the daemon itself stood still: frozen (a paused VM,
SIGSTOP, swap) just after it sent one (it sends one as data arrives, to size its windows), it reads the
answer on waking only after the timer fired, and drops a connection that was never silent, and the worker's
executions with it (test_worker_loss.py found it). The leases count silence in the daemon's waking time;
the transport cannot, so it waits at least this long, whatever a short ``--worker-timeout`` says."""


def ping_timeout_ms(worker_timeout_ms: int) -> int:
    """How long a ping may go unanswered before its connection is closed: never sooner than a silent worker
    is taken for gone, nor sooner than MIN_PING_TIMEOUT_MS."""
    return max(worker_timeout_ms, MIN_PING_TIMEOUT_MS)


@dataclass(frozen=True, slots=True)
class Settings:
    db_path: Path
    listen: str
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    heartbeat_ms: int = 5000
    worker_timeout_ms: int = 15_000
    token: str | None = None
    """What every call must carry (``authorization: Bearer <token>``); None: anyone may call (dev)."""
    tls: ServerTls | None = None
    """Serve TLS (and require client certificates if it has a client CA); None: plain text."""


class PortError(RuntimeError):
    """The listen address could not be bound."""


async def serve(settings: Settings) -> None:
    """Run the daemon until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    store = Store(settings.db_path, loop)
    try:
        executor = Executor(store, settings.retry, settings.heartbeat_ms, settings.worker_timeout_ms)
    except sqlite3.Error as exc:  # nothing was served yet: stop, and let the next start read it all again
        store.close()
        raise StoreOpenError(f"cannot read the database {settings.db_path} at start-up: {exc}") from None
    server = grpc.aio.server(
        # The token is checked first: a caller without it learns nothing, not even that the store is busy.
        interceptors=[*([TokenCheck(settings.token)] if settings.token else []), StoreErrors()],
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            # Never share a port with another process: a second daemon must fail loudly.
            ("grpc.so_reuseport", 0),
            # A peer that answers no ping for ping_timeout_ms is gone (a host vanished, a route died: no
            # FIN, no RST): its connection is closed, and its calls with it. gRPC waits ping_timeout for any
            # ping's answer (1 min unless set), whatever keepalive_timeout says.
            ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
            ("grpc.keepalive_timeout_ms", ping_timeout_ms(settings.worker_timeout_ms)),
            ("grpc.http2.ping_timeout_ms", ping_timeout_ms(settings.worker_timeout_ms)),
            ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
            ("grpc.keepalive_permit_without_calls", 1),
        ],
    )
    api_pb2_grpc.add_ApiServiceServicer_to_server(ApiService(executor), server)
    worker_pb2_grpc.add_WorkerServiceServicer_to_server(WorkerService(executor), server)
    try:
        if settings.tls is None:
            port = server.add_insecure_port(settings.listen)
        else:
            port = server.add_secure_port(settings.listen, settings.tls.credentials())
    except RuntimeError as exc:
        store.close()
        raise PortError(f"cannot listen on {settings.listen}: {exc}") from None
    if port == 0:
        store.close()
        raise PortError(f"cannot listen on {settings.listen}")
    host = settings.listen.rsplit(":", 1)[0]
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    executor.start()
    gc.collect()
    gc.freeze()  # what start-up built lives as long as the daemon: never scan it again
    gc.set_threshold(*GC_THRESHOLDS)
    if settings.tls is not None:
        mtls = settings.tls.requires_client_cert
        print(f"durably: serving TLS ({'client certificates required' if mtls else 'no client certificates'})")
    print(f"durably: listening on {host}:{port} (db: {settings.db_path})", flush=True)
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        # The server refuses new calls at once and gives those under way the grace; the executor ends
        # the workers' streams as soon as what they run has reported (or the grace is over).
        stopping = asyncio.ensure_future(server.stop(GRACE_SECONDS))
        await executor.drain(GRACE_SECONDS)
        await stopping
        await executor.stop()
        store.close()


def run(settings: Settings) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(serve(settings))
    except (StoreLockedError, StoreOpenError, PortError) as exc:
        print(f"durably: {exc}", file=sys.stderr)
        return 1
    return 0
