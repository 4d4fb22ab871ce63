"""A network partition that closes nothing (a route gone, a NAT that forgot the flow, a host vanished: no
FIN, no RST): the worker's connection to the daemon falls silent. The SDK's gRPC keepalive (a ping after
10 s without a word from the daemon, the connection given up 5 s later) makes the worker notice and connect
again, instead of waiting for TCP to give up a quarter of an hour later; meanwhile the daemon, hearing
nothing more on the old stream, takes that worker for gone after ``--worker-timeout``. The daemon's own
keepalive closes what such a client leaves behind (its connection, and any call under way on it) once a
ping goes unanswered for ``--worker-timeout`` (at least 10 s: ``server.ping_timeout_ms``)."""

from __future__ import annotations

import time

import grpc
import pytest
from durably._grpc import KEEPALIVE_TIME_MS, KEEPALIVE_TIMEOUT_MS
from durably.protocol.v1 import api_pb2, api_pb2_grpc
from durably_server import server

from .harness import CRASH, Harness, await_until, describe, env_metadata, open_client, run_to_end
from .tcp_proxy import TcpProxy

NOTICE_S = (KEEPALIVE_TIME_MS + KEEPALIVE_TIMEOUT_MS) / 1000


@pytest.mark.slow
@pytest.mark.parametrize("daemon_args", [("--heartbeat", "1s", "--worker-timeout", "3s")])
async def test_a_worker_cut_off_without_a_word_notices_and_connects_again(harness: Harness) -> None:
    proxy = TcpProxy(harness.daemon.port)
    address = await proxy.start()
    try:
        # Not harness.start_worker(wait=True): it would block this loop, which runs the proxy.
        worker = harness.start_worker(CRASH, wait=False, env={"DURABLY_ADDRESS": address})
        await await_until(lambda: harness.connected("echo") == 1, timeout=30, what="the worker to register")
        cut_at = time.monotonic()
        assert proxy.cut_all() == 1, proxy.links
        await await_until(lambda: "ended" in worker.stderr(), timeout=NOTICE_S + 15, what="the worker to notice")
        noticed_s = time.monotonic() - cut_at
        await await_until(lambda: harness.connected("echo") == 1, timeout=30, what="the worker to register again")
        async with open_client(harness.address) as client:
            run = await run_to_end(client, "demo/echo", {"n": 1})
    finally:
        await proxy.close()
    print(f"the worker noticed the silent connection after {noticed_s:.1f} s")
    assert noticed_s <= NOTICE_S + 2, f"noticed after {noticed_s:.1f} s"
    assert run.status == "completed", describe(run)
    assert {o["pid"] for o in harness.observations(run=run.id)} == {worker.pid}, "not run by the worker cut off"
    assert len(proxy.links) == 2, "the worker connected again through the proxy"
    assert "lease expired" in harness.daemon.stderr(), "the daemon never took the silent stream for gone"


@pytest.mark.slow
@pytest.mark.parametrize("daemon_args", [("--heartbeat", "1s", "--worker-timeout", "3s")])
async def test_the_daemon_closes_the_connection_of_a_client_cut_off_without_a_word(harness: Harness) -> None:
    """A raw channel without keepalive of its own (as any gRPC client may be): only the daemon can notice,
    by a ping unanswered for the worker timeout (3 s here, so the 10 s floor). Without ping_timeout, gRPC would
    wait a minute for it."""
    gone_s = (server.KEEPALIVE_TIME_MS + server.ping_timeout_ms(3_000)) / 1000
    proxy = TcpProxy(harness.daemon.port)
    address = await proxy.start()
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            api = api_pb2_grpc.ApiServiceStub(channel)
            await api.GetMetrics(api_pb2.GetMetricsRequest(), timeout=10, metadata=env_metadata())
            cut_at = time.monotonic()
            assert proxy.cut_all() == 1, proxy.links
            await await_until(lambda: proxy.links[0].daemon_closed_at, timeout=gone_s + 15, what="the daemon to close")
    finally:
        await proxy.close()
    closed_at = proxy.links[0].daemon_closed_at
    assert closed_at is not None
    print(f"the daemon closed the silent connection after {closed_at - cut_at:.1f} s")
    assert closed_at - cut_at <= gone_s + 2, f"closed after {closed_at - cut_at:.1f} s"
