"""gRPC plumbing shared by both clients and the worker: where the executor is, channel options, and
how gRPC failures become SDK exceptions (so callers never handle ``grpc.RpcError`` themselves).

Error mapping (documented for users in ``durably.errors``):

* ``INVALID_ARGUMENT`` -> :class:`InvalidArgumentError` (a ``ValueError``) with the executor's message;
* ``NOT_FOUND`` on a run query -> :class:`RunNotFoundError`;
* ``UNAVAILABLE`` -> :class:`UnavailableError` (a ``ConnectionError``): executor down or restarting;
* ``RESOURCE_EXHAUSTED`` -> :class:`LimitExceeded`;
* anything else -> :class:`ServiceError` carrying the status name and message (e.g. ``UNAUTHENTICATED``:
  no token, or a wrong one, for a daemon started by ``durably serve``).
"""

from __future__ import annotations

import json
import os
from typing import Any

import grpc

from durably._tls import TLSConfig
from durably.errors import (
    DurablyError,
    InvalidArgumentError,
    LimitExceeded,
    RunNotFoundError,
    ServiceError,
    UnavailableError,
)

DEFAULT_ADDRESS = "127.0.0.1:7070"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
CALL_TIMEOUT = 30.0
"""Deadline of one unary call, in seconds (WaitForRun adds its own wait to it)."""

RETRY_POLICY = {
    "maxAttempts": 5,
    "initialBackoff": "0.1s",
    "maxBackoff": "1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}
"""gRPC's own retry of the client calls (ApiService) that fail with UNAVAILABLE before an answer came:
an executor restarting, a connection lost, also after the executor received the call. Every call is
safe to repeat: reads and cancels are, and ``send`` gives each event an id before the first try, so
an event whose acknowledgement was lost is stored once (its id deduplicates). About 1.5 s in all."""

KEEPALIVE_TIME_MS = 10_000
KEEPALIVE_TIMEOUT_MS = 5_000
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # After the executor restarts, reconnect within ~2 s instead of gRPC's default backoff of up to 2 min.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
    # A connection that falls silent without closing (a route gone, a host vanished: no FIN, no RST) is
    # given up after 10 s without a word from the executor and 5 s more without an answer to a ping,
    # rather than when TCP gives up, a quarter of an hour later. The executor accepts pings 5 s apart.
    # gRPC waits for a ping's answer for ping_timeout (1 min unless set), whatever keepalive_timeout says.
    ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ("grpc.http2.ping_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.enable_retries", 1),
    (
        "grpc.service_config",
        json.dumps(
            {"methodConfig": [{"name": [{"service": "durably.protocol.v1.ApiService"}], "retryPolicy": RETRY_POLICY}]}
        ),
    ),
]


def resolve_address(address: str | None) -> str:
    """The explicit address, else ``$DURABLY_ADDRESS``, else ``127.0.0.1:7070``."""
    if address:
        return address
    return os.environ.get("DURABLY_ADDRESS") or DEFAULT_ADDRESS


def resolve_token(token: str | None) -> str | None:
    """The explicit token, else ``$DURABLY_TOKEN``, else None (a ``durably dev`` daemon needs none)."""
    if token:
        return token
    return os.environ.get("DURABLY_TOKEN") or None


def _options(tls: TLSConfig | None) -> list[tuple[str, Any]]:
    if tls is not None and tls.domain:
        return [*CHANNEL_OPTIONS, ("grpc.ssl_target_name_override", tls.domain)]
    return CHANNEL_OPTIONS


def aio_channel(address: str, tls: TLSConfig | None) -> grpc.aio.Channel:
    """A channel to the executor for asyncio callers: TLS when ``tls`` is given, else plain text."""
    if tls is None:
        return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
    return grpc.aio.secure_channel(address, tls.credentials(), options=_options(tls))


def sync_channel(address: str, tls: TLSConfig | None) -> grpc.Channel:
    """The blocking twin of :func:`aio_channel`."""
    if tls is None:
        return grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
    return grpc.secure_channel(address, tls.credentials(), options=_options(tls))


PLAIN_TEXT_HINT = (
    " (a daemon serving TLS closes plain-text connections: give this client its CA, with"
    " Client(..., tls=durably.TLSConfig(...)) or $DURABLY_TLS_CA)"
)


def map_rpc_error(
    exc: grpc.RpcError, *, address: str, run_id: str | None = None, plain_text: bool = False
) -> DurablyError:
    """The SDK exception for a failed call (see the module docstring); ``plain_text``: the call was
    made without TLS, so a connection closed at once may mean the daemon wants TLS (said in the message)."""
    code = exc.code() if callable(getattr(exc, "code", None)) else grpc.StatusCode.UNKNOWN
    details = (exc.details() if callable(getattr(exc, "details", None)) else None) or str(exc)
    status = code.name if isinstance(code, grpc.StatusCode) else str(code)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgumentError(details, status=status)
    if code == grpc.StatusCode.NOT_FOUND and run_id is not None:
        return RunNotFoundError(f"run {run_id!r} not found: {details}")
    if code == grpc.StatusCode.UNAVAILABLE:
        hint = PLAIN_TEXT_HINT if plain_text and details.endswith("Socket closed") else ""
        return UnavailableError(f"cannot reach the durably executor at {address}: {details}{hint}", status=status)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return LimitExceeded(details)
    return ServiceError(f"{status}: {details}", status=status)
