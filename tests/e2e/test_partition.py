"""A network partition that closes nothing (a route gone, a NAT that forgot the flow, a host vanished: no
FIN, no RST): the worker's connection to the daemon falls silent. The SDK's gRPC keepalive (a ping after
10 s without a word from the daemon, the connection given up 5 s later) makes the worker notice and connect
again, instead of waiting for TCP to give up a quarter of an hour later; meanwhile the daemon, hearing
nothing more on the old stream, takes that worker for gone after ``--worker-timeout``."""

from __future__ import annotations

import time

import pytest
from durably._grpc import KEEPALIVE_TIME_MS, KEEPALIVE_TIMEOUT_MS

from .harness import CRASH, Harness, await_until, describe, open_client, run_to_end
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
