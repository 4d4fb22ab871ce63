"""Client and SyncClient against a fake API service: conversions, error mapping, wait_for_run."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator

import durably
import pytest
from durably.errors import InvalidArgumentError, UnavailableError
from durably.protocol.v1 import api_pb2
from fake_executor import FakeExecutor


@pytest.fixture
async def executor() -> AsyncIterator[FakeExecutor]:
    fake = FakeExecutor()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_async_client_calls(executor: FakeExecutor) -> None:
    async with durably.Client("unit", address=executor.address) as client:
        assert await client.send(durably.Event("e", {"a": 1}, id="given")) == ["given"]
        made = await client.send([durably.Event("e"), durably.Event("e")])  # ids made by the SDK (ULIDs)
        assert len(made) == 2 and len(set(made)) == 2 and all(len(i) == 26 for i in made), made
        run = await client.get_run("r9")
        assert (run.id, run.status, run.output) == ("r9", "completed", {"ok": True})
        runs = await client.list_runs(function_id="f", status=durably.RunStatus.FAILED, limit=5)
        assert [r.function_id for r in runs] == ["f"]
        request = executor.api.list_requests[-1]
        assert (request.function_id, request.status, request.limit) == ("f", api_pb2.RUN_STATUS_FAILED, 5)
        await client.list_runs(status="queued")
        assert executor.api.list_requests[-1].status == api_pb2.RUN_STATUS_QUEUED
        cancelled = await client.cancel_run("r9")
        assert cancelled.status == "cancelled"
        [info] = await client.list_functions()
        assert (info.app_id, info.id, info.event_triggers, info.connected_workers) == ("unit", "f", ["e"], 1)


async def test_errors_are_mapped(executor: FakeExecutor) -> None:
    async with durably.Client("unit", address=executor.address) as client:
        with pytest.raises(durably.RunNotFoundError, match="missing"):
            await client.get_run("missing")
        with pytest.raises(InvalidArgumentError, match="event name 'bad' is not allowed") as caught:
            await client.send(durably.Event("bad"))
        assert isinstance(caught.value, ValueError) and caught.value.status == "INVALID_ARGUMENT"
    async with durably.Client("unit", address=f"127.0.0.1:{_closed_port()}") as down:
        with pytest.raises(UnavailableError, match="cannot reach the durably executor") as unavailable:
            await down.get_run("r")
        assert isinstance(unavailable.value, ConnectionError)


async def test_wait_for_run_loops_until_the_run_ends(executor: FakeExecutor) -> None:
    async with durably.Client("unit", address=executor.address) as client:
        run = await client.wait_for_run("r1", timeout=5)
        assert (run.status, run.output) == ("completed", 42)
        assert executor.api.wait_calls["r1"] == 2
        with pytest.raises(TimeoutError, match=r"has not ended after 0\.3 s"):
            await client.wait_for_run("forever", timeout=0.3)
        with pytest.raises(durably.RunNotFoundError):
            await client.wait_for_run("missing", timeout=1)
    async with durably.Client("unit", address=f"127.0.0.1:{_closed_port()}") as down:
        with pytest.raises(TimeoutError, match="could not be reached"):
            await down.wait_for_run("r", timeout=0.3)


async def test_sync_client_shares_the_behaviour(executor: FakeExecutor) -> None:
    def scenario() -> None:
        with durably.SyncClient("unit", address=executor.address) as client:
            assert client.send(durably.Event("e", id="x")) == ["x"]
            assert client.get_run("r2").output == {"ok": True}
            assert client.wait_for_run("r3", timeout=5).output == 42
            assert client.list_runs()[0].id == "r1"
            assert client.cancel_run("r4").status == "cancelled"
            assert client.list_functions()[0].id == "f"
            with pytest.raises(durably.RunNotFoundError):
                client.get_run("missing")
            with pytest.raises(InvalidArgumentError):
                client.send(durably.Event("bad"))
            with pytest.raises(TimeoutError):
                client.wait_for_run("forever", timeout=0.2)

    await asyncio.to_thread(scenario)


def test_one_client_serves_several_event_loops() -> None:
    """A module-level client used from two loops (e.g. one per test) gets a channel per loop."""
    executor = FakeExecutor()
    client = durably.Client("unit", address="placeholder")

    async def start() -> None:
        await executor.start()
        client.address = executor.address

    server_loop = asyncio.new_event_loop()
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(server_loop)
        server_loop.run_until_complete(start())
        ready.set()
        server_loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(5)
    try:
        for _ in range(2):
            assert asyncio.run(client.get_run("r")).id == "r"
    finally:
        asyncio.run_coroutine_threadsafe(executor.stop(), server_loop).result(5)
        server_loop.call_soon_threadsafe(server_loop.stop)
        thread.join(5)
        server_loop.close()
