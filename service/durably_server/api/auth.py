"""The shared-token check of ``durably serve``: every call must carry ``authorization: Bearer <token>``.

One interceptor in front of both services, so no method can be added without it. A call without the
token, or with another one, ends with ``UNAUTHENTICATED`` before the method runs (its request is never
read, a stream never registers). The comparison takes the same time whatever the token sent, so a
caller cannot find the token a byte at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from durably.protocol.auth import METADATA_KEY, SCHEME

REFUSAL = (
    "missing or wrong token: this daemon needs `authorization: Bearer <token>` on every call "
    "(the SDK and the CLI send $DURABLY_TOKEN, or Client(token=...))"
)
MIN_TOKEN_CHARS = 16
FIRST_MESSAGE_WAIT_S = 1.0


def check_token(token: str) -> str:
    """``token`` if it can travel as gRPC metadata and is not trivially guessed; else ValueError."""
    if len(token) < MIN_TOKEN_CHARS:
        raise ValueError(f"is shorter than {MIN_TOKEN_CHARS} characters")
    if not all("!" <= char <= "~" for char in token):
        raise ValueError("may hold only printable ASCII without spaces")
    return token


class TokenCheck(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc ships no type hints
    def __init__(self, token: str) -> None:
        self._expected = (SCHEME + token).encode()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or self._allowed(handler_call_details):
            return handler
        return _refusing(handler)

    def _allowed(self, details: grpc.HandlerCallDetails) -> bool:
        for key, value in details.invocation_metadata or ():
            if key == METADATA_KEY:
                sent = value if isinstance(value, bytes) else value.encode()
                return hmac.compare_digest(sent, self._expected)
        return False


async def _refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, REFUSAL)


async def _refuse_stream(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> None:
    """Refuse a call that streams requests once its first message is in (or after a second): aborted
    while that first write is still on its way, such a call sometimes ended for the caller with INTERNAL
    ("Internal error from Core", 2 in 300 tries) instead of UNAUTHENTICATED."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(anext(aiter(requests), None), FIRST_MESSAGE_WAIT_S)
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, REFUSAL)


def _refusing(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` (unary or streaming, each way) that only refuses."""
    codecs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(_refuse_stream, **codecs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(_refuse_stream, **codecs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(_refuse, **codecs)
    return grpc.unary_unary_rpc_method_handler(_refuse, **codecs)
