"""``durably.Worker``: keeps one stream open to the executor and runs the executions it is sent.

One *session* is one ``WorkerService.Connect`` stream: send ``Register``, get ``Registered``, then run
every ``Execute`` in its own task (at most ``capacity`` at once), answer each with exactly one
``ExecutionResult``, and send a ``Heartbeat`` listing the executions still running every
``heartbeat_interval_ms``. When the stream breaks or cannot be opened (executor down, killed,
restarted), the worker opens a new session after a backoff (0.1 s doubling to 2 s) and registers
again, forever. Executions that finish after their session ended keep running to completion, but their
results are dropped: the executor has already given that work to a live worker.

A session also holds the run memos the executor sent on it (``_memos.MemoCache``): each ``Execute``
carries only the outcomes recorded since the worker's copy (``memo_base``); one the worker cannot
build on is answered at once with ``need_full_state``.

One execution can never take the worker down: whatever it raises is reported as a failure.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

import grpc

from durably import _convert
from durably._client import Client
from durably._encryption import Encryption
from durably._execution import execute, failure_from_exception
from durably._function import Function
from durably._grpc import MAX_MESSAGE_BYTES, aio_channel
from durably._memos import MemoCache, Memos
from durably._ops import StepOp
from durably._types import ErrorInfo
from durably._version import __version__
from durably.errors import DecryptionError, ErrorCode, StateTooLarge
from durably.protocol.batching import batches
from durably.protocol.v1 import worker_pb2, worker_pb2_grpc

_log = logging.getLogger("durably")

_BACKOFF_START = 0.1
_BACKOFF_MAX = 2.0
_REGISTER_TIMEOUT = 10.0
"""How long to wait for ``Registered`` before giving up on a stream and reconnecting."""
_DEFAULT_HEARTBEAT = 5.0
_STOP_GRACE = 5.0
"""On ``stop()``, how long running executions get to finish and report before they are cancelled."""
_CLOSE_GRACE = 1.0
"""After half-closing the stream on stop, how long to wait for the executor to end it."""
_ENTER_TIMEOUT = 10.0
"""``async with Worker(...)`` waits this long for the first registration before going on anyway."""
_MAX_CAPACITY = 100_000
_ENVELOPE_BYTES = 16
"""Room for the ``WorkerMessage`` around an ``ExecutionResult`` (a field tag and a length)."""
_MAX_STATE_BYTES = 32 * 1024 * 1024
"""The executor's limit on a run's state, named when a result is too large to send."""


async def handle_execute(
    functions: Mapping[str, Function],
    execute_msg: worker_pb2.Execute,
    memos: Memos,
    send_partial: Callable[[worker_pb2.ExecutionResult], None],
    checkpoint: Callable[[worker_pb2.WorkerMessage], Awaitable[bool]],
    keep: Callable[[Iterable[StepOp]], None] = lambda results: None,
    *,
    encryption: Encryption | None = None,
) -> worker_pb2.ExecutionResult:
    """Run one ``Execute`` against ``memos`` (the run's outcomes it replays) and build its final
    ``ExecutionResult``; targets that finish before the others go to ``send_partial`` as they finish;
    a checkpointing discovery's steps go to ``checkpoint``, which answers whether they were committed.
    Every step op about to be reported goes to ``keep`` first. ``encryption`` opens what the
    handler gets and seals what it makes. Never raises (except on cancellation)."""
    execution_id = execute_msg.execution_id
    function = functions.get(execute_msg.function_id)
    if function is None:
        return _convert.failure_result(
            execution_id,
            ErrorInfo(
                name="FunctionNotFound",
                message=f'function "{execute_msg.function_id}" is not registered by this worker',
                code=ErrorCode.FUNCTION_NOT_FOUND,
                non_retriable=True,
            ),
        )
    try:
        request = _convert.execution_request_from_pb(execute_msg, memos, encryption)
    except Exception as exc:  # e.g. event data that is not JSON: report it, retrying will not fix it...
        final = not isinstance(exc, DecryptionError)  # ...unless a worker given the missing key can
        error = failure_from_exception(exc, non_retriable=final)
        message = f"the worker could not read the Execute message: {error.message}"
        return _convert.failure_result(
            execution_id, ErrorInfo(error.name, message, error.stack, error.code, non_retriable=final)
        )

    def report_early(ops: Sequence[StepOp]) -> None:
        keep(ops)
        for chunk in _convert.partial_results(execution_id, ops, MAX_MESSAGE_BYTES // 4):
            send_partial(chunk)

    async def checkpoint_ops(ops: Sequence[StepOp]) -> bool:
        keep(ops)
        return await checkpoint(_convert.checkpoint_message(execution_id, ops))

    outcome = await execute(function, request, report_early, checkpoint_ops)
    result = _convert.execution_result_to_pb(execution_id, outcome)
    if execute_msg.targets and result.ops and result.ByteSize() > MAX_MESSAGE_BYTES // 4:
        # Targets that finished together: send them ahead in messages of a safe size.
        report_early(outcome.ops)
        del result.ops[:]
    size = result.ByteSize()
    if size + _ENVELOPE_BYTES > MAX_MESSAGE_BYTES:
        return _convert.failure_result(execution_id, _result_too_large(result, size))
    keep(outcome.ops)
    return result


def _result_too_large(result: worker_pb2.ExecutionResult, size: int) -> ErrorInfo:
    """Why a result cannot be sent. Sending it would break the stream, and with it every execution on
    it, again on every retry; what it carries cannot fit in a run's state anyway."""
    steps = [op.name for op in result.ops if op.data_json or op.events or op.invoke.data_json]
    shown = ", ".join(steps[:10]) + (f" and {len(steps) - 10} more" if len(steps) > 10 else "")
    return ErrorInfo(
        name=StateTooLarge.__name__,
        message=(
            f"the result of this execution is {size:,} bytes (steps with data: {shown or 'none'}; the "
            f"handler's output: {len(result.output_json):,} bytes), more than one message to the executor "
            f"can carry ({MAX_MESSAGE_BYTES:,} bytes) and more than a run's state may hold (32 MiB, "
            f"{_MAX_STATE_BYTES:,} bytes)"
        ),
        code=ErrorCode.LIMIT_EXCEEDED,
        non_retriable=True,
    )


class _Session:
    """One Connect stream: its outgoing queue, the executions it received, whether it registered, the
    memos the executor sent on it (which it counts per stream, so a new stream starts empty), and the
    checkpoints waiting for the executor's answer."""

    def __init__(self, memo_cache_runs: int) -> None:
        self.memos = MemoCache(memo_cache_runs)
        self.outbox: asyncio.Queue[worker_pb2.WorkerMessage | None] = asyncio.Queue()
        self.checkpoints: dict[str, asyncio.Future[bool]] = {}
        """Execution id -> the answer to its checkpoint in flight (one at a time per execution)."""
        self.in_flight: set[str] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.registered = False
        self.closed = False
        self.draining = False
        """The worker is stopping: checkpoints are refused, so each execution ends at its next step."""

    def send(self, message: worker_pb2.WorkerMessage) -> None:
        """Queue a message; dropped once the session has ended (the executor re-queues that work)."""
        if not self.closed:
            self.outbox.put_nowait(message)

    async def checkpoint(self, message: worker_pb2.WorkerMessage) -> bool:
        """Send a checkpoint and wait for the executor's answer: whether it committed the steps. False
        once the stream has ended (the executor has given that run to another worker), and without
        asking while the worker stops: the steps then go in the execution's final result."""
        if self.closed or self.draining:
            return False
        execution_id = message.result.execution_id
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.checkpoints[execution_id] = answer
        self.send(message)
        try:
            return await answer
        finally:
            self.checkpoints.pop(execution_id, None)

    def answered(self, execution_id: str, committed: bool) -> None:
        answer = self.checkpoints.get(execution_id)
        if answer is not None and not answer.done():
            answer.set_result(committed)

    def close(self) -> None:
        """Stop accepting messages and end the request stream after what is queued; checkpoints still
        waiting are answered "not committed", so their executions stop."""
        if not self.closed:
            self.closed = True
            self.outbox.put_nowait(None)
            for execution_id in list(self.checkpoints):
                self.answered(execution_id, False)

    def requests(self) -> AsyncIterator[worker_pb2.WorkerMessage]:
        """The request stream: what is queued, several messages in one when several are ready."""
        return batches(self.outbox, _same, _convert.batch_message)


class Worker:
    """Runs the handlers of ``functions`` for the executor at ``client.address``.

    ``await worker.run()`` serves until :meth:`stop` is called or the task is cancelled;
    ``async with Worker(...)`` runs it in the background (and waits briefly for it to register).
    ``capacity`` caps how many executions run at once; ``worker_name`` (default ``host:pid``)
    identifies the worker in the executor's logs. The worker keeps the saved step outcomes of the
    ``memo_cache_runs`` runs it executed most recently (256 MiB of them at most), so the executor
    sends each outcome once rather than with every execution, and never sends back a result this
    worker reported; a run it has dropped costs one round trip for its full state.

    A function declared with ``on_failure`` brings its failure handler along: the worker registers
    and serves both.

    Handlers are replayed once per new step, so everything outside ``ctx.step.run`` must be
    deterministic; see :meth:`durably.Client.function`.
    """

    def __init__(
        self,
        client: Client,
        functions: Sequence[Function],
        *,
        capacity: int = 64,
        worker_name: str | None = None,
        memo_cache_runs: int = 2_000,
    ) -> None:
        if not isinstance(client, Client):
            raise TypeError(f"Worker needs a durably.Client, got {type(client).__name__}")
        functions = list(functions)
        if not functions:
            raise ValueError("Worker needs at least one function")
        by_id: dict[str, Function] = {}
        for function in functions:
            if not isinstance(function, Function):
                raise TypeError(f"Worker(functions=...) takes what @client.function(...) returns, got {function!r}")
            if function.app_id != client.app_id:
                raise ValueError(
                    f"function {function.id!r} belongs to app {function.app_id!r}, "
                    f"but this worker's client is for app {client.app_id!r}"
                )
            for served in (function, function.on_failure):  # a failure handler comes with its function
                if served is not None and by_id.setdefault(served.id, served) is not served:
                    raise ValueError(f"two functions have the id {served.id!r}")
        if isinstance(capacity, bool) or not isinstance(capacity, int) or not 1 <= capacity <= _MAX_CAPACITY:
            raise ValueError(f"capacity must be between 1 and {_MAX_CAPACITY}, got {capacity!r}")
        if isinstance(memo_cache_runs, bool) or not isinstance(memo_cache_runs, int) or memo_cache_runs < 1:
            raise ValueError(f"memo_cache_runs must be a positive int, got {memo_cache_runs!r}")
        self._client = client
        self._functions = by_id
        self._capacity = capacity
        self._memo_cache_runs = memo_cache_runs
        self.worker_name = worker_name or f"{socket.gethostname()}:{os.getpid()}"
        self._worker_id: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._registered: asyncio.Event | None = None
        self._slots: asyncio.Semaphore | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._background: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<durably.Worker {self.worker_name} app={self._client.app_id!r} functions={list(self._functions)}>"

    @property
    def worker_id(self) -> str | None:
        """The id the executor gave this worker at its latest registration (None before)."""
        return self._worker_id

    # --- lifecycle ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve executions until :meth:`stop` (graceful) or cancellation (immediate)."""
        self._prepare()
        await self._run()

    def stop(self) -> None:
        """Ask a running worker to stop: no new executions are accepted, running ones get a few
        seconds to finish and report, then :meth:`run` returns. Safe to call from any thread."""
        loop, event = self._loop, self._stop_event
        if loop is None or event is None or loop.is_closed():
            return
        try:
            same_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            same_loop = False
        if same_loop:
            event.set()
        else:
            loop.call_soon_threadsafe(event.set)

    async def __aenter__(self) -> Worker:
        self._prepare()
        self._background = asyncio.create_task(self._run(), name=f"durably-worker-{self.worker_name}")
        assert self._registered is not None
        registered = asyncio.create_task(self._registered.wait())
        try:
            await asyncio.wait(
                {registered, self._background}, timeout=_ENTER_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            registered.cancel()
        if self._background.done():
            self._background.result()  # re-raise why it could not run
        elif not self._registered.is_set():
            _log.warning(
                "durably worker %s: not registered with the executor at %s after %.0f s; still trying",
                self.worker_name,
                self._client.address,
                _ENTER_TIMEOUT,
            )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        background, self._background = self._background, None
        if background is not None:
            self.stop()
            await background

    def _prepare(self) -> None:
        if self._loop is not None:
            raise RuntimeError("this Worker is already running")
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        self._registered = asyncio.Event()
        self._slots = asyncio.Semaphore(self._capacity)

    async def _run(self) -> None:
        assert self._stop_event is not None
        backoff = _BACKOFF_START
        logged = ""  # the kind of failure last logged as a warning in this outage ("" when connected)
        try:
            while not self._stop_event.is_set():
                try:
                    registered, error = await self._session()
                except Exception as exc:  # an SDK bug must not end the worker: log it and reconnect
                    _log.exception("durably worker %s: session failed", self.worker_name)
                    registered, error = False, f"{type(exc).__name__}: {exc}"
                if self._stop_event.is_set():
                    break
                if registered:
                    backoff = _BACKOFF_START
                    logged = ""
                # One warning per kind of failure in an outage (its status, e.g. UNAVAILABLE while the
                # executor restarts, then UNAUTHENTICATED): the rest go to debug, not every backoff.
                kind = error.split(":", 1)[0]
                level = logging.DEBUG if kind == logged else logging.WARNING
                logged = kind
                _log.log(
                    level,
                    "durably worker %s: stream to the executor at %s ended (%s); reconnecting",
                    self.worker_name,
                    self._client.address,
                    error,
                )
                try:
                    await asyncio.wait_for(self._stop_event.wait(), timeout=backoff)
                except TimeoutError:
                    pass
                backoff = min(backoff * 2, _BACKOFF_MAX)
        finally:
            await self._cancel_all()
            self._loop = None
            self._stop_event = None
            _log.info("durably worker %s: stopped", self.worker_name)

    async def _cancel_all(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # --- one stream -----------------------------------------------------------------------------

    async def _session(self) -> tuple[bool, str]:
        """Run one Connect stream until it ends or the worker stops. Returns (registered, why it ended)."""
        assert self._stop_event is not None and self._registered is not None
        session = _Session(self._memo_cache_runs)
        session.send(
            _convert.register_message(
                self._client.app_id, self._functions.values(), self._capacity, self.worker_name, __version__
            )
        )
        channel = aio_channel(self._client.address, self._client._tls)
        call: Any = worker_pb2_grpc.WorkerServiceStub(channel).Connect(
            session.requests(), metadata=self._client._metadata
        )
        serve = asyncio.create_task(self._serve(session, call))
        stopping = asyncio.create_task(self._stop_event.wait())
        why = "stopped"
        try:
            await asyncio.wait({serve, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if serve.done():
                why = _describe_end(serve)
            else:
                await self._drain(session, serve)
        finally:
            stopping.cancel()
            session.close()
            self._registered.clear()
            serve.cancel()
            await asyncio.gather(serve, stopping, return_exceptions=True)
            call.cancel()
            await channel.close()
        return session.registered, why

    async def _serve(self, session: _Session, call: Any) -> None:
        assert self._registered is not None
        first = await asyncio.wait_for(call.read(), timeout=_REGISTER_TIMEOUT)
        if first is grpc.aio.EOF:
            raise ConnectionError("the executor ended the stream before answering Register")
        if first.WhichOneof("message") != "registered":
            raise ConnectionError(f"the executor answered Register with {first.WhichOneof('message')!r}")
        session.registered = True
        self._worker_id = first.registered.worker_id
        interval = first.registered.heartbeat_interval_ms
        _log.info(
            "durably worker %s: registered with the executor at %s as %s (%d functions)",
            self.worker_name,
            self._client.address,
            self._worker_id,
            len(self._functions),
        )
        self._registered.set()
        heartbeat = asyncio.create_task(self._heartbeat(session, interval))
        try:
            while True:
                message = await call.read()
                if message is grpc.aio.EOF:
                    return
                for one in message.batch.messages if message.WhichOneof("message") == "batch" else (message,):
                    kind = one.WhichOneof("message")
                    if kind == "execute":
                        self._start(session, one.execute)
                    elif kind == "checkpointed":
                        session.answered(one.checkpointed.execution_id, one.checkpointed.committed)
                    elif kind == "registered":
                        self._worker_id = one.registered.worker_id
                        heartbeat.cancel()
                        heartbeat = asyncio.create_task(self._heartbeat(session, one.registered.heartbeat_interval_ms))
        finally:
            heartbeat.cancel()

    async def _heartbeat(self, session: _Session, interval_ms: int) -> None:
        interval = interval_ms / 1000 if interval_ms > 0 else _DEFAULT_HEARTBEAT
        while True:
            await asyncio.sleep(interval)
            session.send(_convert.heartbeat_message(session.in_flight))

    async def _drain(self, session: _Session, serve: asyncio.Task[None]) -> None:
        """Graceful stop: let this session's executions finish and report, then half-close the stream
        and give the executor a moment to end it, so no finished result is lost."""
        session.draining = True
        if session.tasks:
            await asyncio.wait(set(session.tasks), timeout=_STOP_GRACE)
        session.close()
        if session.registered:
            await asyncio.wait({serve}, timeout=_CLOSE_GRACE)

    # --- executions -----------------------------------------------------------------------------

    def _start(self, session: _Session, execute_msg: worker_pb2.Execute) -> None:
        """Take in an ``Execute`` as it arrives: its memos join the cache now, in stream order, since
        the next ``Execute`` of the run may build on them before this execution ends."""
        assert self._stop_event is not None
        execution_id = execute_msg.execution_id
        if self._stop_event.is_set() or execution_id in session.in_flight:
            return  # stopping (the executor re-queues it) or a repeat of one already running
        memos = session.memos.receive(
            execute_msg.run_id, execute_msg.memo_base, _convert.memos_from_pb(execute_msg.memos)
        )
        if memos is None:
            session.send(_convert.result_message(_convert.need_full_state_result(execution_id)))
            return
        session.in_flight.add(execution_id)
        task = asyncio.create_task(self._execute(session, execute_msg, memos), name=f"durably-execution-{execution_id}")
        for tasks in (self._tasks, session.tasks):
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    async def _execute(self, session: _Session, execute_msg: worker_pb2.Execute, memos: Memos) -> None:
        assert self._slots is not None
        try:
            async with self._slots:
                result = await handle_execute(
                    self._functions,
                    execute_msg,
                    memos,
                    lambda partial: session.send(_convert.result_message(partial)),
                    session.checkpoint,
                    lambda results: session.memos.keep(execute_msg.run_id, execute_msg.execution_id, results),
                    encryption=self._client.encryption,
                )
        except Exception as exc:  # a bug in the SDK itself: report it, keep serving
            _log.exception("durably worker %s: execution %s crashed", self.worker_name, execute_msg.execution_id)
            result = _convert.failure_result(execute_msg.execution_id, failure_from_exception(exc, non_retriable=False))
        finally:
            session.in_flight.discard(execute_msg.execution_id)
        if _convert.ends_run(result):
            session.memos.drop(execute_msg.run_id)
        if session.closed:
            _log.debug(
                "durably worker %s: dropping the result of %s: its stream has ended",
                self.worker_name,
                execute_msg.execution_id,
            )
        session.send(_convert.result_message(result))


def _describe_end(serve: asyncio.Task[None]) -> str:
    if serve.cancelled():
        return "cancelled"
    exc = serve.exception()
    if exc is None:
        return "the executor closed it"
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    if isinstance(exc, TimeoutError):
        return "no answer to Register"
    return f"{type(exc).__name__}: {exc}"


def _same(message: worker_pb2.WorkerMessage) -> worker_pb2.WorkerMessage:
    return message
