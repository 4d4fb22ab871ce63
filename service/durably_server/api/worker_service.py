"""WorkerService: one bidirectional stream per worker.

The stream's first message registers the worker; from then on one task reads results
and heartbeats while this handler writes executions from the worker's outbox (several
in one batch when several are ready and the worker accepts batches). When
the stream ends for any reason (worker exit, kill -9, network), the worker's
unanswered executions go back on the queue for another worker.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator

import grpc
from durably.protocol.batching import MAX_BATCH_MESSAGES, Source, batches
from durably.protocol.v1 import worker_pb2, worker_pb2_grpc

from durably_server import convert
from durably_server.api.store_errors import refuse_unavailable
from durably_server.convert import RequestError
from durably_server.engine.executor import Executor
from durably_server.engine.scheduler import Lease, WorkerConn
from durably_server.model import Checkpointed

log = logging.getLogger("durably.workers")


class WorkerService(worker_pb2_grpc.WorkerServiceServicer):
    def __init__(self, executor: Executor) -> None:
        self._executor = executor
        # Reports are merged concurrently so that their commits group; each run merges in order.
        self._merging: set[asyncio.Task[None]] = set()

    async def Connect(
        self, request_iterator: AsyncIterator[worker_pb2.WorkerMessage], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[worker_pb2.ExecutorMessage]:
        first = await anext(aiter(request_iterator), None)
        if first is None or not first.HasField("register"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message on the stream must be Register")
        assert first is not None
        try:
            specs, capacity = convert.register_in(first.register)
        except RequestError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        register = first.register
        try:
            worker = await self._executor.connect_worker(
                register.app_id, register.worker_name, specs, capacity, register.keeps_reported
            )
        except sqlite3.OperationalError as exc:  # functions not stored: the worker registers again later
            await refuse_unavailable(context, "/durably.protocol.v1.WorkerService/Connect", exc)
            raise  # abort has raised already; this tells the type checker so
        yield worker_pb2.ExecutorMessage(
            registered=worker_pb2.Registered(worker_id=worker.id, heartbeat_interval_ms=self._executor.heartbeat_ms)
        )
        reader = asyncio.create_task(self._read(worker, request_iterator), name=f"worker-{worker.id}-reader")
        reader.add_done_callback(lambda _: worker.outbox.put_nowait(None))
        try:
            outbox: Source[Lease | Checkpointed] = worker.outbox
            batch = MAX_BATCH_MESSAGES if register.accepts_batches else 1
            async for message in batches(outbox, self._out, _batch_of, max_messages=batch):
                yield message
        finally:
            reader.cancel()
            self._executor.disconnect_worker(worker)

    def _out(self, message: Lease | Checkpointed) -> worker_pb2.ExecutorMessage:
        if isinstance(message, Checkpointed):
            return convert.checkpointed_out(message)
        spec = self._executor.registry.get(message.items[0].function_key)
        return convert.execute_out(message, spec.max_attempts if spec else 1)

    async def _read(self, worker: WorkerConn, messages: AsyncIterator[worker_pb2.WorkerMessage]) -> None:
        try:
            async for message in messages:
                if message.WhichOneof("message") == "batch":
                    for inner in message.batch.messages:
                        self._take(worker, inner, batched=True)
                else:
                    self._take(worker, message, batched=False)
        except (grpc.aio.AioRpcError, asyncio.CancelledError):
            return
        except Exception:
            log.exception("worker %s: stream reader failed", worker.id)

    def _take(self, worker: WorkerConn, message: worker_pb2.WorkerMessage, *, batched: bool) -> None:
        kind = message.WhichOneof("message")
        if kind == "result":
            task = asyncio.create_task(self._executor.report(worker, convert.report_in(message.result)))
            self._merging.add(task)
            task.add_done_callback(self._merged)
        elif kind == "heartbeat":
            self._executor.heartbeat(worker)
        else:
            where = " in a batch" if batched else ""
            log.warning("worker %s sent an unexpected %s message%s; ignored", worker.id, kind, where)

    def _merged(self, task: asyncio.Task[None]) -> None:
        self._merging.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("merging a report failed", exc_info=task.exception())


def _batch_of(messages: list[worker_pb2.ExecutorMessage]) -> worker_pb2.ExecutorMessage:
    batch = worker_pb2.ExecutorMessage()
    batch.batch.messages.extend(messages)  # one copy; nesting constructors would copy twice
    return batch
