"""``durably.protocol.batching.batches``: what is queued goes out in order, several at once only when ready."""

from __future__ import annotations

import asyncio

from durably.protocol.batching import MAX_BATCH_BYTES, batches
from durably.protocol.v1 import worker_pb2


def _message(n: int, pad: int = 0) -> worker_pb2.WorkerMessage:
    return worker_pb2.WorkerMessage(heartbeat=worker_pb2.Heartbeat(in_flight=[f"e{n}", "x" * pad]))


def _wrap(messages: list[worker_pb2.WorkerMessage]) -> worker_pb2.WorkerMessage:
    return worker_pb2.WorkerMessage(batch=worker_pb2.WorkerBatch(messages=messages))


def _ids(message: worker_pb2.WorkerMessage) -> list[str]:
    inner = message.batch.messages if message.WhichOneof("message") == "batch" else [message]
    return [m.heartbeat.in_flight[0] for m in inner]


async def _drain(queue: asyncio.Queue[worker_pb2.WorkerMessage | None], **kwargs: int) -> list[list[str]]:
    return [_ids(m) async for m in batches(queue, lambda m: m, _wrap, **kwargs)]


async def test_messages_queued_together_travel_together_in_order() -> None:
    queue: asyncio.Queue[worker_pb2.WorkerMessage | None] = asyncio.Queue()
    for n in range(5):
        queue.put_nowait(_message(n))
    queue.put_nowait(None)
    assert await _drain(queue) == [["e0", "e1", "e2", "e3", "e4"]]


async def test_a_lone_message_is_not_wrapped_and_the_stream_waits_for_more() -> None:
    queue: asyncio.Queue[worker_pb2.WorkerMessage | None] = asyncio.Queue()
    stream = batches(queue, lambda m: m, _wrap)
    queue.put_nowait(_message(0))
    first = await anext(stream)
    assert first.WhichOneof("message") == "heartbeat"
    later = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.01)
    assert not later.done()
    queue.put_nowait(_message(1))
    assert _ids(await later) == ["e1"]
    queue.put_nowait(None)
    assert [m async for m in stream] == []


async def test_count_and_size_bound_a_batch() -> None:
    queue: asyncio.Queue[worker_pb2.WorkerMessage | None] = asyncio.Queue()
    for n in range(5):
        queue.put_nowait(_message(n))
    queue.put_nowait(None)
    assert await _drain(queue, max_messages=2) == [["e0", "e1"], ["e2", "e3"], ["e4"]]

    big = MAX_BATCH_BYTES // 2
    for n in range(3):
        queue.put_nowait(_message(n, pad=big))
    queue.put_nowait(_message(3))
    queue.put_nowait(None)
    assert await _drain(queue) == [["e0"], ["e1"], ["e2", "e3"]]
