"""What a caller is told when the store cannot do its part of a call.

SQLite reports a database locked by another process past the busy timeout, a full disk or an I/O error
as ``sqlite3.OperationalError``; the writer has then rolled the transaction back, so nothing of the call
is stored and trying again is right. Left to gRPC such an error reached the caller as UNKNOWN
("Unexpected <class 'sqlite3.OperationalError'>"), which no client retries. It becomes UNAVAILABLE with the
store's own words, which gRPC clients treat as "try again" (the SDK does, with the same event ids). One
interceptor in front of the client methods, as the token check is, so that no method can be added without it.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

log = logging.getLogger("durably.api")

Behavior = Callable[[Any, grpc.aio.ServicerContext], Any]


class StoreErrors(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc ships no type hints
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        return None if handler is None else _guarded(handler, handler_call_details.method)


async def refuse_unavailable(context: grpc.aio.ServicerContext, method: str, exc: sqlite3.OperationalError) -> None:
    """End the call with UNAVAILABLE and the store's words (and log it)."""
    log.warning("%s: the store failed: %s", method, exc)
    await context.abort(grpc.StatusCode.UNAVAILABLE, f"the store could not complete the call ({exc}); try again")


def _guarded(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    """The same handler, its behaviour's store errors turned into UNAVAILABLE. A worker's stream (the
    only one with streamed requests) is left as it is: it carries every step, so it is not wrapped
    here; the one store write it waits for itself, at registration, is refused the same way in
    api/worker_service.py (the merges of its reports handle their own)."""
    if handler.request_streaming:
        return handler
    codecs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.response_streaming:
        stream: Behavior = handler.unary_stream

        async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            try:
                async for response in stream(request, context):
                    yield response
            except sqlite3.OperationalError as exc:
                await refuse_unavailable(context, method, exc)

        return grpc.unary_stream_rpc_method_handler(streaming, **codecs)
    unary: Behavior = handler.unary_unary

    async def answering(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await unary(request, context)
        except sqlite3.OperationalError as exc:
            await refuse_unavailable(context, method, exc)

    return grpc.unary_unary_rpc_method_handler(answering, **codecs)
