"""Sending what a queue holds down a gRPC stream, several messages in one when several are ready.

Each message on a stream costs both ends a fixed price (a write, a read, callbacks, wake-ups) that
dwarfs a small message's bytes. A busy sender finds many messages queued while its previous write
was in flight; sending them as one ``WorkerBatch``/``ExecutorBatch`` pays that price once. An idle
sender finds one and sends it alone, so batching never delays anything. The worker and the
executor share this, each with its own wrapper message: it is how both ends of the protocol use a
stream, hence here beside the generated stubs (``v1``), not in either end's private modules.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Protocol, TypeVar

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class _Sized(Protocol):
    def ByteSize(self) -> int: ...


class Source(Protocol[T_co]):
    """What is used of an ``asyncio.Queue`` whose None ends the stream."""

    async def get(self) -> T_co | None: ...

    def get_nowait(self) -> T_co | None: ...

    def empty(self) -> bool: ...


M = TypeVar("M", bound=_Sized)

MAX_BATCH_MESSAGES = 256
MAX_BATCH_BYTES = 1 << 20
"""A batch stops growing at this size (a message bigger than that alone travels alone)."""


async def batches(
    queue: Source[T],
    convert: Callable[[T], M],
    wrap: Callable[[list[M]], M],
    *,
    max_messages: int = MAX_BATCH_MESSAGES,
) -> AsyncIterator[M]:
    """Yield ``convert(item)`` for each item of ``queue`` until a None, in order; items already
    queued behind the first go in the same ``wrap([...])``, within ``max_messages`` and
    :data:`MAX_BATCH_BYTES`."""
    held: M | None = None
    while True:
        if held is None:
            item = await queue.get()
            if item is None:
                return
            held = convert(item)
        out, size, held = [held], -1, None
        ended = False
        while len(out) < max_messages and not queue.empty():
            item = queue.get_nowait()
            if item is None:
                ended = True
                break
            message = convert(item)
            if size < 0:  # measured only when there is a batch to make: sizing a big message costs
                size = out[0].ByteSize()
            grown = size + message.ByteSize()
            if grown > MAX_BATCH_BYTES:
                held = message  # first of the next batch
                break
            out.append(message)
            size = grown
        yield out[0] if len(out) == 1 else wrap(out)
        if ended:
            return
