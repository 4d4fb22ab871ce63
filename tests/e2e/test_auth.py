"""The token of `durably serve` (and of `durably dev --token-file`): calls without it are refused with
UNAUTHENTICATED before they do anything; the SDK, its workers and the CLI send $DURABLY_TOKEN."""

from __future__ import annotations

import asyncio
import subprocess
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import durably
import grpc
import pytest
from durably.errors import ServiceError
from durably.protocol.v1 import api_pb2, api_pb2_grpc, common_pb2, worker_pb2, worker_pb2_grpc

from .harness import (
    CRASH,
    Daemon,
    Harness,
    environ_without,
    free_port,
    metrics,
    open_client,
    run_cli,
    run_to_end,
    wait_until,
)

TOKEN = "test-token-0123456789abcdef"


@pytest.fixture
def daemon_args(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, ...]:
    """The harness's daemon requires TOKEN; this test's SDK clients and workers send it ($DURABLY_TOKEN)."""
    monkeypatch.setenv("DURABLY_TOKEN", TOKEN)
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n", encoding="utf-8")
    return ("--token-file", str(path))


def _refused(call: grpc.RpcError) -> None:
    assert call.code() == grpc.StatusCode.UNAUTHENTICATED, call
    assert "token" in (call.details() or ""), call.details()


async def test_calls_without_the_token_are_refused_and_change_nothing(harness: Harness) -> None:
    event = common_pb2.Event(name="demo/echo", data_json=b"{}", id="sneaky")
    async with grpc.aio.insecure_channel(harness.address) as channel:
        stub = api_pb2_grpc.ApiServiceStub(channel)
        for metadata in [(), (("authorization", "Bearer wrong-token-0123456789"),), (("authorization", TOKEN),)]:
            with pytest.raises(grpc.RpcError) as caught:
                await stub.SendEvents(api_pb2.SendEventsRequest(events=[event]), timeout=10, metadata=metadata)
            _refused(caught.value)
        with pytest.raises(grpc.RpcError) as caught:  # a server stream: refused before its first message
            async for _ in stub.WatchRun(api_pb2.GetRunRequest(run_id="r"), timeout=10):
                pass
        _refused(caught.value)
    assert metrics(harness.address).events_received == 0
    async with open_client(harness.address) as client:  # sends $DURABLY_TOKEN
        assert await client.list_runs() == []
    assert harness.daemon.alive(), harness.daemon.report()


async def test_workers_and_clients_with_the_token_run_as_usual(harness: Harness) -> None:
    harness.start_worker(CRASH)
    async with open_client(harness.address) as client:
        run = await run_to_end(client, "demo/echo", {"n": 1})
    assert run.status == "completed" and run.output == {"echo": {"n": 1}}, run


def test_the_cli_sends_the_token_and_says_plainly_when_it_has_none(harness: Harness) -> None:
    send = ("send", "demo/nobody", "--id", "cli-1", "--address", harness.address)
    sent = run_cli(*send)
    assert sent.returncode == 0 and sent.stdout.startswith("cli-1"), sent
    refused = run_cli(*send, env=environ_without("DURABLY_TOKEN"))
    assert refused.returncode == 1, refused
    assert refused.stderr.startswith("durably: UNAUTHENTICATED: missing or wrong token"), refused.stderr
    assert metrics(harness.address).events_received == 1


async def test_a_worker_with_a_wrong_token_never_registers_and_says_why(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Started while the daemon is down, the worker first warns that it cannot reach it; once the
    daemon is up, it warns of the refusal (a new kind of failure), not only at debug level."""
    harness.daemon.stop()
    monkeypatch.setenv("DURABLY_TOKEN", "wrong-token-0123456789")
    worker = harness.start_worker(CRASH, wait=False)
    monkeypatch.setenv("DURABLY_TOKEN", TOKEN)
    wait_until(lambda: "UNAVAILABLE" in worker.stderr(), timeout=30, what="the worker to log the outage")
    harness.daemon.start()
    wait_until(lambda: "UNAUTHENTICATED" in worker.stderr(), timeout=30, what="the worker to log the refusal")
    assert harness.connected_workers() == {}, "a worker without the token registered its functions"
    assert worker.alive() and harness.daemon.alive()


async def test_streams_are_refused_as_unauthenticated_every_time(harness: Harness) -> None:
    """Refused while its first message was still on the way, a worker's stream sometimes ended with
    INTERNAL ("Internal error from Core") instead (2 in 300 before the daemon read that message first)."""
    register = worker_pb2.WorkerMessage(register=worker_pb2.Register(app_id="a", worker_name="w"))

    async def requests() -> AsyncIterator[worker_pb2.WorkerMessage]:
        yield register
        await asyncio.sleep(10)  # the stream stays open: the refusal must end it

    codes: Counter[str] = Counter()
    async with grpc.aio.insecure_channel(harness.address) as channel:
        stub = worker_pb2_grpc.WorkerServiceStub(channel)
        for _ in range(300):
            call = stub.Connect(requests(), metadata=(("authorization", "Bearer wrong-token-0123456789"),))
            with pytest.raises(grpc.RpcError) as caught:
                async for _ in call:
                    pass
            codes[caught.value.code().name] += 1
    assert codes == {"UNAUTHENTICATED": 300}, codes


def _serve(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_cli("serve", "--db", str(tmp_path / "d.db"), "--listen", "127.0.0.1:0", env=env)


def test_serve_refuses_to_start_without_a_usable_token(tmp_path: Path) -> None:
    env = environ_without("DURABLY_TOKEN")
    missing = _serve(tmp_path, env)
    assert missing.returncode == 2, missing
    assert "needs a token" in missing.stderr and "$DURABLY_TOKEN" in missing.stderr, missing.stderr
    short = _serve(tmp_path, {**env, "DURABLY_TOKEN": "short"})
    assert short.returncode == 2, short
    assert "shorter than 16 characters" in short.stderr, short.stderr
    assert not (tmp_path / "d.db").exists(), "the daemon opened its store before refusing to start"


def test_serve_takes_its_token_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DURABLY_TOKEN", TOKEN)
    daemon = Daemon(tmp_path, db=tmp_path / "serve.db", port=free_port(), name="serve")
    daemon.argv[daemon.argv.index("dev")] = "serve"
    daemon.env["DURABLY_TOKEN"] = TOKEN
    try:
        daemon.start()
        with durably.SyncClient("app", address=daemon.address) as client:
            assert client.list_runs() == []
        with durably.SyncClient("app", address=daemon.address, token="wrong-token-0123456789") as client:
            with pytest.raises(ServiceError) as caught:
                client.list_runs()
            assert caught.value.status == "UNAUTHENTICATED", caught.value
    finally:
        daemon.stop()
