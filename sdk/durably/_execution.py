"""The execution engine: run a handler once from the top against the run's saved step outcomes.

This is the re-execution model of the seed article. One *execution* calls the handler with a fresh
:class:`Context`; every ``step.run`` it reaches is looked up by hashed step id in ``memos``:

* **memo hit** - the saved result is decoded (lazily, only now) and returned, or the saved failure is
  raised as :class:`StepError`; the step's code does not run. A hit costs a SHA-1, a dict lookup and a
  ``json.loads``.
* **new step** - it registers itself as *pending* and awaits a future. A settle check, scheduled with
  ``loop.call_soon`` and re-scheduled until two consecutive loop iterations add no pending step, then
  looks at everything that became pending together (one ``await`` or an ``asyncio.gather``) and
  decides. Today's decision: if no step has run in this execution yet, the first pending step's body
  runs; otherwise nothing runs. If that step was the only new step, its result is handed back and the
  handler continues (so a function of N sequential steps takes exactly N executions); in every other
  case the remaining pending steps are completed with :class:`_Interrupt` and the handler unwinds.
  Parallel planning will hook into the same decision point.

The outcome (:class:`ExecutionOutcome`) lists the ops that happened, in order, and exactly one of: the
handler's output, its error, or "yielded" (it was interrupted at a new step; execute again).

Nothing here touches protobuf: ``_convert`` builds :class:`ExecutionRequest` from the wire and the
wire result from :class:`ExecutionOutcome`.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import inspect
import logging
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from durably._context import Context
from durably._function import Function
from durably._ids import StepIdCounter
from durably._json import JsonValueError, check_output_type, decode, encode, rehydrate, to_plain
from durably._step import Step
from durably._types import ErrorInfo, Event
from durably.errors import (
    ErrorCode,
    NonRetriableError,
    OutputUnserializableError,
    StepError,
    StepNestedError,
    error_code,
)

_SETTLE_TICKS = 2
"""Loop iterations without a new pending step before the engine decides what to run."""

_function_logger = logging.getLogger("durably.function")

_current_step: contextvars.ContextVar[str | None] = contextvars.ContextVar("durably_current_step", default=None)
"""Name of the step whose body is running in this context; set only while a body runs."""

_MISSING: Any = object()


class _Interrupt(BaseException):
    """Unwinds a handler that reached a step this execution will not run.

    It derives from ``BaseException`` so that ``except Exception`` in user code lets it through: the
    handler must stop at that step and report back, and the step runs in a later execution. Catching
    it (``except BaseException``, ``gather(return_exceptions=True)``) does not change the outcome: the
    execution still reports "yielded", but code after the catch runs for nothing.
    """


class OpKind(enum.Enum):
    """What a recorded op says happened."""

    STEP_RUN = "step_run"
    """A step body ran and returned ``data_json``."""
    STEP_ERROR = "step_error"
    """A step body ran and failed with ``error``; the executor retries it or saves the failure."""


@dataclass(frozen=True, slots=True)
class StepOp:
    """One thing the handler did that the executor must record."""

    op: OpKind
    id: str
    name: str
    index: int
    started_at_ms: int
    ended_at_ms: int
    data_json: bytes = b""
    error: ErrorInfo | None = None


@dataclass(frozen=True, slots=True)
class ExecutionRequest:
    """What one execution needs: the run, its event, and every saved step outcome by hashed id
    (``bytes`` = saved JSON result, decoded only when replayed; :class:`ErrorInfo` = failed for good)."""

    execution_id: str
    run_id: str
    function_id: str
    event: Event
    memos: Mapping[str, bytes | ErrorInfo]
    attempt: int = 0
    max_attempts: int = 0


@dataclass(slots=True)
class ExecutionOutcome:
    """Ops in the order they happened plus exactly one of ``output_json``, ``error``, ``yielded``."""

    ops: list[StepOp] = field(default_factory=list)
    output_json: bytes | None = None
    error: ErrorInfo | None = None
    yielded: bool = False


async def execute(function: Function, request: ExecutionRequest) -> ExecutionOutcome:
    """Run ``function``'s handler once from the top and report what happened.

    Everything the handler raises becomes the outcome's ``error``; only the cancellation of the
    calling task itself propagates.
    """
    execution = _Execution(request, asyncio.get_running_loop())
    ctx = Context(
        event=request.event,
        events=[request.event],
        step=Step(execution),
        run_id=request.run_id,
        attempt=request.attempt,
        function_id=request.function_id,
        logger=logging.LoggerAdapter(_function_logger, {"run_id": request.run_id, "function_id": request.function_id}),
    )
    outcome = ExecutionOutcome(ops=execution.ops)
    try:
        value = await function.handler(ctx)
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if task is not None and task.cancelling():  # we are being cancelled, not a user-made cancel
            execution.close()
            raise
        outcome.error = failure_from_exception(exc, non_retriable=False)
    except BaseException as exc:  # the handler's error is the outcome; nothing escapes an execution
        if not execution.interrupted:
            outcome.error = failure_from_exception(exc, non_retriable=isinstance(exc, NonRetriableError | StepError))
    else:
        try:
            outcome.output_json = encode(value)
        except JsonValueError as exc:
            outcome.error = ErrorInfo(
                name=OutputUnserializableError.__name__,
                message=f"the handler returned a value JSON cannot represent: {exc}",
                code=ErrorCode.OUTPUT_UNSERIALIZABLE,
                non_retriable=True,
            )
    await execution.finish()
    if execution.interrupted:
        outcome.output_json = None
        outcome.error = None
        outcome.yielded = True
    return outcome


def failure_from_exception(exc: BaseException, *, non_retriable: bool) -> ErrorInfo:
    """An exception as the executor stores it: class name, message, traceback text and code."""
    return ErrorInfo(
        name=type(exc).__name__,
        message=str(exc),
        stack="".join(traceback.format_exception(exc)),
        code=error_code(exc),
        non_retriable=non_retriable,
    )


class _PendingStep:
    """A new step waiting for the engine's decision: its future gets None ("run your body") or an
    :class:`_Interrupt`."""

    __slots__ = ("future", "hashed_id", "index", "name")

    def __init__(self, name: str, hashed_id: str, index: int, future: asyncio.Future[None]) -> None:
        self.name = name
        self.hashed_id = hashed_id
        self.index = index
        self.future = future


class _Execution:
    """State of one execution; implements :class:`durably._step.StepRunner` for ``ctx.step``."""

    def __init__(self, request: ExecutionRequest, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._memos = request.memos
        self._counter = StepIdCounter()
        self.ops: list[StepOp] = []
        self.interrupted = False
        """Set once the handler was told to unwind: the outcome is "yielded" whatever it does next."""
        self._closed = False
        self._pending: list[_PendingStep] = []
        self._new_steps = 0
        self._step_started = False
        self._running: _PendingStep | None = None
        self._body_done: asyncio.Future[None] | None = None
        self._settle_scheduled = False
        self._settle_seen = 0
        self._settle_quiet = 0

    # --- the step API ---------------------------------------------------------------------------

    async def run_step(
        self,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        output_type: type[Any] | None,
    ) -> Any:
        if not isinstance(name, str) or not name:
            raise TypeError(f"step.run() needs a non-empty str id as its first argument, got {name!r}")
        if not callable(fn):
            raise TypeError(f'step.run("{name}", fn): fn must be callable, got {fn!r}')
        if output_type is not None:
            check_output_type(output_type)
        if self._closed:
            raise RuntimeError(f'step.run("{name}") was called after its execution ended')
        outer = _current_step.get()
        if outer is not None:  # before counting: replays never run the outer body, so never count this
            raise StepNestedError(
                f'step.run("{name}") was called inside the body of step "{outer}"; steps cannot be '
                "nested: call it from the handler instead"
            )
        hashed_id, index = self._counter.next(name)
        saved = self._memos.get(hashed_id, _MISSING)
        if saved is not _MISSING:
            if isinstance(saved, ErrorInfo):
                raise StepError(name, saved.name, saved.message, saved.stack)
            return rehydrate(decode(saved), output_type)
        return await self._new_step(
            _PendingStep(name, hashed_id, index, self._loop.create_future()), fn, args, kwargs, output_type
        )

    async def _new_step(
        self,
        step: _PendingStep,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        output_type: type[Any] | None,
    ) -> Any:
        self._new_steps += 1
        if self.interrupted:
            raise _Interrupt
        self._pending.append(step)
        self._schedule_settle()
        try:
            await step.future  # None: run the body; _Interrupt: unwind
        except asyncio.CancelledError:
            if self._running is step:  # chosen, then cancelled before the body started
                self._body_finished()
            raise
        try:
            data = await self._run_body(step, fn, args, kwargs, output_type)
        finally:
            self._body_finished()
        if data is None or self._new_steps > 1:
            raise self._interrupt()
        return rehydrate(decode(data), output_type)

    async def _run_body(
        self,
        step: _PendingStep,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        output_type: type[Any] | None,
    ) -> bytes | None:
        """Run the step's code and record its op. The saved JSON on success, None on failure."""
        started = _now_ms()
        token = _current_step.set(step.name)
        try:
            result = await _call(fn, args, kwargs)
        except Exception as exc:
            self._record(
                OpKind.STEP_ERROR,
                step,
                started,
                error=failure_from_exception(exc, non_retriable=isinstance(exc, NonRetriableError)),
            )
            return None
        finally:
            _current_step.reset(token)
        ended = _now_ms()
        try:
            data = encode(to_plain(result, output_type))
        except JsonValueError as exc:
            failure = ErrorInfo(
                name=OutputUnserializableError.__name__,
                message=f'step "{step.name}" returned a value JSON cannot represent: {exc}',
                code=ErrorCode.OUTPUT_UNSERIALIZABLE,
                non_retriable=True,
            )
            self._record(OpKind.STEP_ERROR, step, started, ended, error=failure)
            return None
        self._record(OpKind.STEP_RUN, step, started, ended, data_json=data)
        return data

    def _record(
        self,
        op: OpKind,
        step: _PendingStep,
        started: int,
        ended: int | None = None,
        *,
        data_json: bytes = b"",
        error: ErrorInfo | None = None,
    ) -> None:
        self.ops.append(
            StepOp(
                op=op,
                id=step.hashed_id,
                name=step.name,
                index=step.index,
                started_at_ms=started,
                ended_at_ms=_now_ms() if ended is None else ended,
                data_json=data_json,
                error=error,
            )
        )

    # --- deciding what runs ---------------------------------------------------------------------

    def _schedule_settle(self) -> None:
        if self._settle_scheduled:
            return
        self._settle_scheduled = True
        self._settle_seen = len(self._pending)
        self._settle_quiet = 0
        self._loop.call_soon(self._settle_tick)

    def _settle_tick(self) -> None:
        """Wait until the handler stops adding pending steps (everything a gather starts), then decide."""
        seen = len(self._pending)
        if seen != self._settle_seen:
            self._settle_seen = seen
            self._settle_quiet = 0
        else:
            self._settle_quiet += 1
        if self._settle_quiet < _SETTLE_TICKS:
            self._loop.call_soon(self._settle_tick)
            return
        self._settle_scheduled = False
        self._decide()

    def _decide(self) -> None:
        """Run the first pending step if nothing has run yet in this execution; otherwise unwind."""
        if self._running is not None:  # a body is running; it settles the others when it ends
            return
        waiting = [step for step in self._pending if not step.future.done()]
        if not waiting:
            return
        if self._step_started or self.interrupted:
            self._interrupt()
            return
        chosen = waiting[0]
        self._step_started = True
        self._running = chosen
        self._body_done = self._loop.create_future()
        chosen.future.set_result(None)

    def _body_finished(self) -> None:
        self._running = None
        if self._body_done is not None and not self._body_done.done():
            self._body_done.set_result(None)
        if any(not step.future.done() for step in self._pending):
            self._schedule_settle()

    def _interrupt(self) -> _Interrupt:
        """Tell every waiting step to unwind; the outcome of this execution is now "yielded"."""
        self.interrupted = True
        self._cancel_waiting()
        return _Interrupt()

    def _cancel_waiting(self) -> None:
        for step in self._pending:
            if not step.future.done():
                step.future.set_exception(_Interrupt())

    # --- end of the execution -------------------------------------------------------------------

    async def finish(self) -> None:
        """After the handler ended: release steps nobody will decide on, wait for a body still running
        (its op must be in the outcome), and refuse further ``step.run`` calls."""
        self._closed = True
        if self._body_done is not None and not self._body_done.done():
            await self._body_done
        self._cancel_waiting()

    def close(self) -> None:
        """Like :meth:`finish` without waiting: the execution is being cancelled."""
        self._closed = True
        self._cancel_waiting()


async def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Call a step body: coroutine functions on the loop, anything else in a thread."""
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__):
        return await fn(*args, **kwargs)
    result = await asyncio.to_thread(fn, *args, **kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
