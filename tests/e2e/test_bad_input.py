"""Malformed requests get INVALID_ARGUMENT / NOT_FOUND with a message, and the daemon stays up."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from durably.protocol.v1 import api_pb2, api_pb2_grpc, common_pb2, worker_pb2, worker_pb2_grpc

from .harness import STEPS, Harness

WORKERS = [STEPS]

INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture
async def channel(cluster: Harness) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(cluster.address) as channel:
        yield channel


@pytest.fixture
async def api(channel: grpc.aio.Channel) -> api_pb2_grpc.ApiServiceStub:
    return api_pb2_grpc.ApiServiceStub(channel)


async def _rejected(call: Any, code: grpc.StatusCode = INVALID) -> str:
    """Await a unary call that must fail with `code`; return its message."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, f"{caught.value.code()}: {caught.value.details()}"
    message = caught.value.details() or ""
    assert message.strip(), f"{code} came without a message"
    return message


async def _still_serving(cluster: Harness, api: api_pb2_grpc.ApiServiceStub) -> None:
    assert cluster.daemon.alive(), cluster.daemon.report()
    sent = await api.SendEvents(
        api_pb2.SendEventsRequest(events=[common_pb2.Event(name="demo/run", data_json=b'{"ok": true}')]),
        timeout=10,
    )
    [run_id] = sent.run_ids
    ended = await api.WaitForRun(api_pb2.WaitForRunRequest(run_id=run_id, timeout_ms=30000), timeout=40)
    assert ended.run.status == api_pb2.RUN_STATUS_COMPLETED


def _event(name: str = "demo/run", data_json: bytes = b"{}", event_id: str = "") -> common_pb2.Event:
    return common_pb2.Event(id=event_id, name=name, data_json=data_json)


@pytest.mark.parametrize(
    ("event", "hints"),
    [
        pytest.param(_event(name=""), ("name",), id="empty-name"),
        pytest.param(_event(name="x" * 256), ("name", "255"), id="name-too-long"),
        pytest.param(_event(data_json=b"{not json"), ("json",), id="not-json"),
        pytest.param(_event(data_json=b'{"a": 1'), ("json",), id="truncated-json"),
        pytest.param(_event(data_json=b"[1, 2]"), ("object",), id="json-array"),
        pytest.param(_event(data_json=b'"text"'), ("object",), id="json-string"),
        pytest.param(_event(data_json=b"null"), ("object",), id="json-null"),
        pytest.param(_event(data_json=b'{"ratio": NaN}'), ("json", "nan"), id="nan-is-not-json"),
        pytest.param(_event(data_json=b'{"a": "\xff\xfe"}'), ("utf", "json"), id="invalid-utf8"),
    ],
)
async def test_send_events_rejects_bad_events(
    cluster: Harness, api: api_pb2_grpc.ApiServiceStub, event: common_pb2.Event, hints: tuple[str, ...]
) -> None:
    message = await _rejected(api.SendEvents(api_pb2.SendEventsRequest(events=[event]), timeout=10))
    assert any(hint in message.lower() for hint in hints), f"message {message!r} should mention one of {hints}"
    await _still_serving(cluster, api)


async def test_a_rejected_batch_stores_nothing(cluster: Harness, api: api_pb2_grpc.ApiServiceStub) -> None:
    good_id = f"good-{uuid.uuid4().hex}"
    batch = [_event(event_id=good_id, data_json=b'{"fine": 1}'), _event(name="")]
    await _rejected(api.SendEvents(api_pb2.SendEventsRequest(events=batch), timeout=10))
    listed = await api.ListRuns(api_pb2.ListRunsRequest(event_id=good_id), timeout=10)
    assert list(listed.runs) == [], "the valid event of a rejected request was stored and triggered a run"
    await _still_serving(cluster, api)


async def test_unknown_run_is_not_found(cluster: Harness, api: api_pb2_grpc.ApiServiceStub) -> None:
    message = await _rejected(
        api.GetRun(api_pb2.GetRunRequest(run_id="no-such-run"), timeout=10), grpc.StatusCode.NOT_FOUND
    )
    assert "no-such-run" in message
    request = api_pb2.WaitForRunRequest(run_id="no-such-run", timeout_ms=1000)
    await _rejected(api.WaitForRun(request, timeout=10), grpc.StatusCode.NOT_FOUND)
    await _still_serving(cluster, api)


@pytest.mark.parametrize(
    "request_",
    [
        pytest.param(api_pb2.ListRunsRequest(limit=-1), id="negative-limit"),
        pytest.param(api_pb2.ListRunsRequest(limit=1001), id="limit-over-1000"),
        pytest.param(api_pb2.ListRunsRequest(status=99), id="unknown-status"),  # type: ignore[arg-type]
        pytest.param(api_pb2.ListRunsRequest(page_token="not-a-token"), id="garbage-page-token"),
    ],
)
async def test_list_runs_rejects_bad_arguments(
    cluster: Harness, api: api_pb2_grpc.ApiServiceStub, request_: api_pb2.ListRunsRequest
) -> None:
    message = await _rejected(api.ListRuns(request_, timeout=10))
    if request_.limit:
        assert "limit" in message.lower(), message
    await _still_serving(cluster, api)


async def test_list_runs_accepts_the_limit_bounds(api: api_pb2_grpc.ApiServiceStub) -> None:
    for limit in (0, 1, 1000):
        await api.ListRuns(api_pb2.ListRunsRequest(limit=limit), timeout=10)


async def test_register_with_a_duplicate_function_id_is_refused(
    cluster: Harness, channel: grpc.aio.Channel, api: api_pb2_grpc.ApiServiceStub
) -> None:
    function = worker_pb2.FunctionConfig(id="dup-fn", triggers=[worker_pb2.Trigger(event="demo/dup")], retries=0)
    register = worker_pb2.Register(app_id="tests-dup", functions=[function, function], worker_name="raw:dup")
    stream = worker_pb2_grpc.WorkerServiceStub(channel).Connect()
    await stream.write(worker_pb2.WorkerMessage(register=register))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        reply = await asyncio.wait_for(stream.read(), timeout=10)
        raise AssertionError(f"a Register with a duplicate function id was answered with {reply!r}")
    assert caught.value.code() == INVALID, f"{caught.value.code()}: {caught.value.details()}"
    message = caught.value.details() or ""
    assert "dup-fn" in message and any(w in message.lower() for w in ("duplicate", "twice")), message

    functions = await api.ListFunctions(api_pb2.ListFunctionsRequest(app_id="tests-dup"), timeout=10)
    assert [f.id for f in functions.functions if f.connected_workers] == []
    await _still_serving(cluster, api)
