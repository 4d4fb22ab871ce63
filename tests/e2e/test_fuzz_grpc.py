"""Hostile input on every method (docs: reliability.md T17): messages built field by field from the
.proto descriptors by Hypothesis (odd strings and unicode, out-of-range and negative numbers, unknown
enum values, bytes that are not JSON or are JSON nested too deep, NaN, huge exponents, nested messages)
and raw garbage on the HTTP/2 port. Every call ends with a status a client can act on, never UNKNOWN or
INTERNAL (an exception the daemon did not handle), and the daemon serves a real run afterwards.

Seeded (`derandomize`), so a failure is the same failure on every machine; raise FUZZ_EXAMPLES to search
longer.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from durably.protocol.v1 import api_pb2, api_pb2_grpc, common_pb2, worker_pb2, worker_pb2_grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .harness import STEPS, Harness, env_channel, env_metadata

WORKERS = [STEPS]
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
CALL_TIMEOUT_S = 3.0
ACCEPTABLE = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.DEADLINE_EXCEEDED,  # a wait the fuzzer asked to last longer than the call may
}
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

_JSONISH = st.sampled_from(
    [
        b"{}",
        b'{"a": 1}',
        b"null",
        b"[]",
        b'{"a": NaN}',
        b'{"a": Infinity}',
        b'{"a": 1e999}',
        b'{"a": "\\ud800"}',
        b"\xff\xfe",
        b"[" * 5000 + b"]" * 5000,
        b'{"a":' * 3000 + b"1" + b"}" * 3000,
        b'{"a": 1',
        b"",
    ]
)
_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
_NAMES = st.sampled_from(["", "demo/run", "x" * 256, "x" * 100_000, " ", "\x00", "a/b\u202e", "three-steps"])
_INTS = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
}


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return st.text(max_size=300) | _NAMES
    if kind == FieldDescriptor.TYPE_BYTES:
        return _JSONISH | st.binary(max_size=64) | _JSON_VALUES.map(lambda v: json.dumps(v).encode())
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_ENUM:
        return st.integers(-3, 12)  # proto3 enums are open: unknown values arrive as numbers
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(width=32 if kind == FieldDescriptor.TYPE_FLOAT else 64)
    low, high = _INTS[kind]
    edges = st.sampled_from([low, high, 0, -1 if low < 0 else 1, 1000, 3_600_000, 2**31])
    return st.integers(low, high) | edges.filter(lambda n: low <= n <= high)


def messages(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Messages of this type with any subset of fields set to hostile values (oneofs: the last set wins)."""
    cls = GetMessageClass(descriptor)
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth >= 3:
                continue
            value: st.SearchStrategy[Any] = st.deferred(lambda f=field: messages(f.message_type, depth + 1))
        else:
            value = _scalar(field)
        fields[field.name] = st.lists(value, max_size=3) if field.is_repeated else value
    return st.fixed_dictionaries({}, optional=fields).map(lambda values: _build(cls, values))


def _build(cls: type[Message], values: dict[str, Any]) -> Message:
    message = cls()
    for name, value in values.items():
        field = getattr(message, name)
        if isinstance(value, list):
            field.extend(value)
        elif isinstance(value, Message):
            field.CopyFrom(value)
        else:
            setattr(message, name, value)
    return message


@pytest.fixture(scope="module")
def channel(cluster: Harness) -> Iterator[grpc.Channel]:
    with env_channel(cluster.address) as channel:
        yield channel


def _acceptable(exc: grpc.RpcError, request: Message) -> None:
    assert exc.code() in ACCEPTABLE, f"{exc.code()}: {exc.details()} for {type(request).__name__} {request!r:.2000}"
    if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
        assert (exc.details() or "").strip(), f"{exc.code()} without a message"


UNARY = [
    ("SendEvents", api_pb2.SendEventsRequest),
    ("GetRun", api_pb2.GetRunRequest),
    ("ListRuns", api_pb2.ListRunsRequest),
    ("WaitForRun", api_pb2.WaitForRunRequest),
    ("CancelRun", api_pb2.CancelRunRequest),
    ("ListFunctions", api_pb2.ListFunctionsRequest),
]


@pytest.mark.parametrize(("method", "request_type"), UNARY, ids=[name for name, _ in UNARY])
def test_hostile_client_calls_get_a_status_a_client_can_act_on(
    cluster: Harness, channel: grpc.Channel, method: str, request_type: type[Message]
) -> None:
    call = getattr(api_pb2_grpc.ApiServiceStub(channel), method)

    @FUZZ
    @given(messages(request_type.DESCRIPTOR))
    def one(request: Message) -> None:
        try:
            call(request, timeout=CALL_TIMEOUT_S, metadata=env_metadata())
        except grpc.RpcError as exc:
            _acceptable(exc, request)

    one()
    assert cluster.daemon.alive(), cluster.daemon.report()


def test_hostile_watch_requests_get_a_status_a_client_can_act_on(cluster: Harness, channel: grpc.Channel) -> None:
    watch = api_pb2_grpc.ApiServiceStub(channel).WatchRun

    @FUZZ
    @given(messages(api_pb2.GetRunRequest.DESCRIPTOR))
    def one(request: Message) -> None:
        try:
            for _ in watch(request, timeout=1.0, metadata=env_metadata()):
                pass
        except grpc.RpcError as exc:
            _acceptable(exc, request)

    one()


def test_hostile_worker_streams_are_refused_or_ignored(cluster: Harness, channel: grpc.Channel) -> None:
    """A stream opened with any message, then a few more of any kind: the stream may be refused or end
    by the deadline; the daemon must not fail on it."""
    connect = worker_pb2_grpc.WorkerServiceStub(channel).Connect

    @FUZZ
    @given(st.lists(messages(worker_pb2.WorkerMessage.DESCRIPTOR), min_size=1, max_size=4))
    def one(sent: list[Message]) -> None:
        try:
            for _ in connect(iter(sent), timeout=0.5, metadata=env_metadata()):
                pass
        except grpc.RpcError as exc:
            _acceptable(exc, sent[0])

    one()
    assert cluster.daemon.alive(), cluster.daemon.report()


def test_garbage_on_the_port_closes_that_connection_only(cluster: Harness, channel: grpc.Channel) -> None:
    host, port = cluster.address.rsplit(":", 1)
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    junk = [b"\x00" * 64, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", os.urandom(4096), preface + b"\xff" * 64]
    for data in junk:
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(5)
            while sock.recv(4096):
                pass
    api = api_pb2_grpc.ApiServiceStub(channel)
    event = common_pb2.Event(name="demo/run", data_json=b'{"ok": true}', id="after-garbage")
    api.SendEvents(api_pb2.SendEventsRequest(events=[event]), timeout=10, metadata=env_metadata())
    # The fuzzed streams may have registered functions of their own on demo/run: pick this module's.
    mine = api_pb2.ListRunsRequest(function_id="three-steps", event_id="after-garbage")
    listed = api.ListRuns(mine, timeout=10, metadata=env_metadata())
    [run] = listed.runs
    ended = api.WaitForRun(
        api_pb2.WaitForRunRequest(run_id=run.id, timeout_ms=30_000), timeout=40, metadata=env_metadata()
    )
    assert ended.run.status == api_pb2.RUN_STATUS_COMPLETED, ended
