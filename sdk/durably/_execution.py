"""The execution engine: run a handler once from the top against the run's saved step outcomes.

This is the re-execution model of the seed article. One *execution* calls the handler with a fresh
:class:`Context`; every step it reaches is looked up by hashed step id in the run's memos. Steps are
of two sorts sharing ids, counters and memos: ``step.run`` steps have a body the worker runs; *op
steps* (``sleep``, ``sleep_until``, ``wait_for_event``, ``send_event``, ``invoke``) are carried out
by the executor, which saves their result like a body's.

**Memo hits, in record order.** A saved outcome is decoded (lazily, only now) and returned, or the
saved failure is raised as :class:`StepError`; the step's code does not run. The memos come in
record order, which is the order the steps really finished, and concurrent steps are replayed in
that order so that a race (``asyncio.wait(..., return_when=FIRST_COMPLETED)``, ``as_completed``)
sees the same winner on every replay, whatever order the code starts the racers in:

* a hit on the next outcome in record order returns at once, without suspending, when it comes
  from the task that got the previous replayed result (straight-line code) or when the handler has
  been quiet since that result: a sequential replay costs a dict lookup and a ``json.loads`` per
  step and no event-loop round trip;
* any other hit waits for its *turn*: when the handler is quiet (``_QUIET_TICKS`` loop iterations
  without step activity, i.e. it is blocked on its steps), the waiting hit recorded earliest is
  released, one per quiet period, so whatever observes the first result has reacted to it before
  the next one completes.

**New steps.** A step with no saved outcome registers itself as *pending* and awaits a future. When
the handler is quiet and no memo hit waits for its turn, the engine decides, depending on the kind of
execution (``ExecutionRequest``):

* *discovery* (no targets): one pending ``step.run`` alone, with nothing run yet, runs inline and its
  result goes back to the handler, which continues (so N sequential steps take N executions); several
  pending together (``asyncio.gather``, a task group) are reported in the order they were met and
  none runs: ``step.run`` steps as ``STEP_PLANNED``, op steps as their op (``SLEEP``, ...). An op
  step is never run inline, so one pending alone is reported too; with ``plan_only`` every pending
  step is reported. Anything after a step ran inline, or after reporting, stops the handler;
* *targeted*: a new step whose id is a target starts its body at once, concurrently with the other
  targets; other new steps (op steps included) are neither run nor reported. A target that finishes
  while the execution goes on (other targets still running or not met yet) is reported at once, in a
  partial result, so the executor records it without waiting for the slowest (a race's winner is
  seen as soon as it wins). When every target has been met and has finished, the handler is stopped
  (results go to the executor, not back to the handler, so no code after them runs before they are
  recorded). Targets still unmet once the handler is blocked are reported as a ``StepNotFound``
  failure.

**Checkpointing** (``checkpointing=True``; discoveries only). A step run inline is not the end of
the execution: its op goes to the executor at once (a partial result) and the engine waits for the
executor's answer. Committed, the result goes back to the handler, which goes on as if this were a
new execution replaying everything so far (the next new step met alone runs inline and is
checkpointed in turn), so a run of N sequential steps takes one execution and no replay. Not
committed (the run ended, the lease is gone, a limit), the handler is stopped and the op goes in the
final outcome, whose merge decides.

The handler is stopped by completing every pending future with :class:`_Interrupt`. An interrupt
that has unwound loses its traceback, and a step's record forgets its task: the traceback holds the
frames that waited, which hold the step, which holds the future (or the task) that holds the
interrupt. Left so, every interrupted execution was a reference cycle of ~40-90 objects that only
the cycle collector frees, and with many runs in flight its full collections paused the worker
10-30 ms at a time.

The outcome (:class:`ExecutionOutcome`) lists the ops that happened, in order (those not reported
early), and exactly one of: the handler's output, its error, or "yielded" (execute again).

Nothing here touches protobuf: ``_convert`` builds :class:`ExecutionRequest` from the wire and the
wire result from :class:`ExecutionOutcome`.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import inspect
import logging
import traceback
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from durably._context import Context
from durably._durations import now_ms
from durably._encryption import Encryption, open_error, open_json, seal, seal_error
from durably._function import Function
from durably._ids import StepIdCounter
from durably._json import JsonValueError, check_output_type, decode, encode, is_scalar, rehydrate, to_plain
from durably._memos import Memos, Outcome
from durably._ops import OpKind, OpRequest, StepOp
from durably._step import Step
from durably._types import ErrorInfo, Event
from durably.errors import (
    ErrorCode,
    NonRetriableError,
    OutputUnserializableError,
    RetryAfterError,
    StepError,
    StepNestedError,
    StepOutputTooLarge,
    error_code,
    step_error,
)

_QUIET_TICKS = 4
"""Loop iterations without step activity after which the handler counts as blocked on its steps.

A result handed to one task is seen by code waiting on that task two or three iterations later
(task done -> done callback -> waiter woken), so four leave a margin for one more layer of wrapping.
"""

MAX_STEP_OUTPUT_BYTES = 4 * 1024 * 1024
"""The largest step result accepted, as encoded JSON (the article's 4 MB per step)."""

_function_logger = logging.getLogger("durably.function")

_current_step: contextvars.ContextVar[str | None] = contextvars.ContextVar("durably_current_step", default=None)
"""Name of the step whose body is running in this context; set only while a body runs."""


class _Interrupt(BaseException):
    """Unwinds a handler that reached a step this execution will not hand a result to.

    It derives from ``BaseException`` so that ``except Exception`` in user code lets it through: the
    handler must stop at that step and report back, and the step runs in a later execution. Catching
    it (``except BaseException``, ``gather(return_exceptions=True)``) does not change the outcome: the
    execution still reports "yielded", but code after the catch runs for nothing.
    """


@dataclass(frozen=True, slots=True)
class ExecutionRequest:
    """What one execution needs: the run, its event, its saved step outcomes, and what to run.

    ``targets`` (hashed step ids) makes it a targeted execution: run exactly those steps. Otherwise it
    is a discovery; ``plan_only`` then says to plan every new step instead of running one inline
    (the run has planned steps in flight, which must not also run here).
    """

    execution_id: str
    run_id: str
    function_id: str
    event: Event
    memos: Memos
    attempt: int = 0
    max_attempts: int = 0
    targets: tuple[str, ...] = ()
    plan_only: bool = False
    encryption: Encryption | None = None
    """Seals what the handler makes (step results, its output, its errors) and opens saved results."""


@dataclass(slots=True)
class ExecutionOutcome:
    """Ops in the order they happened plus exactly one of ``output_json``, ``error``, ``yielded``."""

    ops: list[StepOp] = field(default_factory=list)
    output_json: bytes | None = None
    error: ErrorInfo | None = None
    yielded: bool = False


ReportEarly = Callable[[Sequence[StepOp]], None]
"""Sends ops of a targeted execution that is still going on (a partial result)."""

Checkpoint = Callable[[Sequence[StepOp]], Awaitable[bool]]
"""Sends the op of a step a checkpointing discovery ran inline and waits for the executor's answer:
True once it is committed, False if it was not recorded (the handler must stop)."""

EARLY_REPORT_WINDOW_S = 0.002
"""How long a finished target waits for others to finish, so that they are reported together."""


async def execute(
    function: Function, request: ExecutionRequest, report_early: ReportEarly, checkpoint: Checkpoint
) -> ExecutionOutcome:
    """Run ``function``'s handler once from the top and report what happened.

    Ops of targets that finish while the execution goes on are handed to ``report_early`` as they
    finish, and are not repeated in the outcome; so are the ops of a checkpointing function's
    discovery that ``checkpoint`` got committed. Everything the handler raises becomes the outcome's
    ``error``; only the cancellation of the calling task itself propagates.
    """
    checkpointing = function.checkpointing and not request.targets and not request.plan_only
    execution = _Execution(
        request, function.app_id, asyncio.get_running_loop(), report_early, checkpoint if checkpointing else None
    )
    ctx = Context(
        event=request.event,
        events=[request.event],
        step=Step(execution),
        run_id=request.run_id,
        attempt=request.attempt,
        function_id=request.function_id,
        logger=logging.LoggerAdapter(_function_logger, {"run_id": request.run_id, "function_id": request.function_id}),
    )
    outcome = ExecutionOutcome()
    try:
        value = await function.handler(ctx)
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if task is not None and task.cancelling():  # we are being cancelled, not a user-made cancel
            execution.close()
            raise
        outcome.error = failure_from_exception(exc, non_retriable=False)
    except BaseException as exc:  # the handler's error is the outcome; nothing escapes an execution
        if execution.interrupted:
            exc.__traceback__ = None  # a cycle otherwise (the module docstring)
        else:
            error = failure_from_exception(exc, non_retriable=isinstance(exc, NonRetriableError | StepError))
            outcome.error = seal_error(request.encryption, error)
    else:
        try:
            outcome.output_json = seal(request.encryption, encode(value))
        except JsonValueError as exc:
            outcome.error = ErrorInfo(
                name=OutputUnserializableError.__name__,
                message=f"the handler returned a value JSON cannot represent: {exc}",
                code=ErrorCode.OUTPUT_UNSERIALIZABLE,
                non_retriable=True,
            )
    await execution.finish()
    outcome.ops = execution.unreported_ops()
    if request.targets:
        # The executor wants the targets' ops; what the handler did with them is a discovery's business.
        missing = execution.missing_targets()
        handler_error = outcome.error
        outcome.output_json = outcome.error = None
        if missing:
            outcome.error = _step_not_found(missing, handler_error)
        else:
            outcome.yielded = True
    elif execution.interrupted:
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
        retry_after_ms=exc.retry_after_ms() if isinstance(exc, RetryAfterError) else 0,
    )


def _step_not_found(missing: list[str], handler_error: ErrorInfo | None) -> ErrorInfo:
    """The failure of a targeted execution that did not reach all its targets. Retriable: the
    executor decides whether another attempt can help."""
    message = (
        f"the handler did not reach the planned step(s) {', '.join(missing)}; "
        "it must reach the same steps in the same order on every execution"
    )
    if handler_error is not None:
        message += f" (it raised {handler_error.name}: {handler_error.message})"
    return ErrorInfo(
        name="StepNotFound",
        message=message,
        stack=handler_error.stack if handler_error is not None else "",
        code=ErrorCode.STEP_NOT_FOUND,
        non_retriable=False,
    )


@dataclass(frozen=True, slots=True)
class _Ran:
    """A step body's successful result: its saved JSON and the plain value it was encoded from."""

    data: bytes
    plain: Any

    def value(self) -> Any:
        """What the handler gets: what a replay would give, i.e. the saved JSON decoded (a fresh copy,
        so user code cannot change what was saved), or the value itself when it is immutable."""
        return self.plain if is_scalar(self.plain) else decode(self.data)


class _PendingStep:
    """A new step waiting for the engine: its future gets None ("run your body here", discovery only)
    or an :class:`_Interrupt`. ``task`` is the task awaiting it. ``request`` is set for a step the
    executor carries out, in a discovery: it is reported as that op and never gets None (in a targeted
    execution such a step is held with no request, since it is not reported)."""

    __slots__ = ("future", "hashed_id", "index", "name", "request", "task")

    def __init__(
        self,
        name: str,
        hashed_id: str,
        index: int,
        future: asyncio.Future[None],
        task: asyncio.Task[Any] | None,
        request: OpRequest | None = None,
    ) -> None:
        self.name = name
        self.hashed_id = hashed_id
        self.index = index
        self.future = future
        self.task = task
        self.request = request

    def op(self) -> StepOp:
        """What a discovery reports for this step when it does not run it here."""
        if self.request is None:
            return StepOp(OpKind.STEP_PLANNED, self.hashed_id, self.name, self.index, 0, 0)
        return StepOp(self.request.kind, self.hashed_id, self.name, self.index, 0, 0, request=self.request)


class _Execution:
    """State of one execution; implements :class:`durably._step.StepRunner` for ``ctx.step``."""

    def __init__(
        self,
        request: ExecutionRequest,
        app_id: str,
        loop: asyncio.AbstractEventLoop,
        report_early: ReportEarly,
        checkpoint: Checkpoint | None,
    ) -> None:
        self._app_id = app_id
        self._encryption = request.encryption
        self._loop = loop
        self._report_early = report_early
        self._checkpoint = checkpoint
        """Set in a checkpointing discovery: each step run inline is committed, then the handler goes on."""
        self._outcomes = request.memos.outcomes
        self._positions = request.memos.positions
        self._length = request.memos.length
        self._scalars = request.memos.scalars
        self._counter = StepIdCounter()
        self.ops: list[StepOp] = []
        self._reported = 0
        self._early_report: asyncio.TimerHandle | None = None
        """How many of ``ops`` went out early."""
        self.interrupted = False
        """Set once the handler was told to unwind: the outcome is "yielded" whatever it does next."""
        self._closed = False
        self._handler_task = asyncio.current_task()
        self._bodies: set[asyncio.Task[_Ran | None]] = set()

        # Replay order (see the module docstring).
        self._head = 0
        """Record position of the next outcome to replay; every position below it was replayed or skipped."""
        self._turn_task: asyncio.Task[Any] | None = None
        """Task that got the latest replayed result, until the handler has been quiet since."""
        self._turns: list[int] = []
        """Heap of the record positions of memo hits waiting for their turn."""
        self._waiting_turns: dict[int, tuple[asyncio.Future[None], asyncio.Task[Any] | None]] = {}

        # New steps.
        self._plan_only = request.plan_only
        self._targets = request.targets
        self._targets_unmet = set(request.targets)
        self._targets_running = 0
        self._pending: list[_PendingStep] = []
        """New steps awaiting a decision (targeted: held until the interrupt)."""
        self._new_steps = 0
        self._ran_inline = False
        self._inline: _PendingStep | None = None

        # Quiet detection.
        self._activity = 0
        self._ticking = False
        self._seen_activity = 0
        self._quiet = 0

    # --- the step API ---------------------------------------------------------------------------

    @property
    def app_id(self) -> str:
        return self._app_id

    @property
    def encryption(self) -> Encryption | None:
        return self._encryption

    async def run_step(
        self,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        output_type: type[Any] | None,
    ) -> Any:
        _check_id("step.run", name)
        if not callable(fn):
            raise TypeError(f'step.run("{name}", fn): fn must be callable, got {fn!r}')
        if output_type is not None:
            check_output_type(output_type)
        hashed_id, index, position = self._reach("step.run", name)
        if position is None:
            step = _PendingStep(name, hashed_id, index, self._loop.create_future(), asyncio.current_task())
            return await self._new_step(step, fn, args, kwargs, output_type)
        if (turn := self._take_turn(position)) is not None:
            await turn
        saved = self._saved(name, position)
        return saved if output_type is None else rehydrate(saved, output_type)

    async def op_step(self, api: str, name: str, build: Callable[[], OpRequest]) -> Any:
        """A step the executor carries out (sleep, wait, send, invoke): replayed like ``step.run``; when
        new, a discovery reports ``build()`` (built here, so its argument errors are raised at the call)
        and a targeted execution neither reports nor runs it. Either way the handler stops there."""
        _check_id(api, name)
        hashed_id, index, position = self._reach(api, name)
        if position is not None:
            if (turn := self._take_turn(position)) is not None:
                await turn
            return self._saved(name, position)
        request = None if self._targets else build()
        step = _PendingStep(name, hashed_id, index, self._loop.create_future(), asyncio.current_task(), request)
        self._new_steps += 1
        self._pending.append(step)
        self._poke()
        await step.future  # only ever completed with _Interrupt
        raise self._interrupt()

    def _reach(self, api: str, name: str) -> tuple[str, int, int | None]:
        """Count a step the handler reached: its hashed id, index, and the record position of its saved
        outcome (None when it is new to this execution)."""
        if self._closed:
            raise RuntimeError(f'{api}("{name}") was called after its execution ended')
        outer = _current_step.get()
        if outer is not None:  # before counting: replays never run the outer body, so never count this
            raise StepNestedError(
                f'{api}("{name}") was called inside the body of step "{outer}"; steps cannot be '
                "nested: call it from the handler instead"
            )
        if self.interrupted:
            raise _Interrupt
        hashed_id, index = self._counter.next(name)
        self._activity += 1
        position = self._positions.get(hashed_id)
        if position is not None and position >= self._length:
            position = None
        return hashed_id, index, position

    def _take_turn(self, position: int) -> Coroutine[Any, Any, None] | None:
        """Replay the outcome at ``position`` now if it is its turn (see the module docstring): None; else
        what to await until it is. Not a coroutine itself, so that a straight-line replay, nearly every
        one, costs no coroutine of its own."""
        task = asyncio.current_task(self._loop)  # naming the loop saves ~0.1 us a replay on Python 3.11
        if position > self._head or (self._turn_task is not None and self._turn_task is not task):
            return self._wait_turn(position, task)
        if position == self._head:  # _replayed(position, task), inline: this runs once per replayed step
            self._head = position + 1
        self._turn_task = task
        return None

    def _saved(self, name: str, position: int) -> Any:
        """The saved result at ``position``, decoded, or the saved failure raised as :class:`StepError`."""
        if position in self._scalars:
            return self._scalars[position]
        saved: Outcome = self._outcomes[position]
        if isinstance(saved, ErrorInfo):
            saved = open_error(self._encryption, saved)
            raise step_error(name, saved.name, saved.message, saved.stack, saved.code)
        value = decode(open_json(self._encryption, saved))
        if is_scalar(value):
            self._scalars[position] = value
        return value

    async def _new_step(
        self,
        step: _PendingStep,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        output_type: type[Any] | None,
    ) -> Any:
        self._new_steps += 1
        self._pending.append(step)
        if step.hashed_id in self._targets_unmet:
            self._targets_unmet.discard(step.hashed_id)
            self._targets_running += 1
            self._start_body(self._run_target(step, fn, args, kwargs, output_type))
        self._poke()
        try:
            await step.future  # None: run the body here; _Interrupt: unwind
            ran = await self._start_body(self._run_body(step, fn, args, kwargs, output_type))
            if ran is not None and self._checkpoint is not None:
                if not await self._checkpointed():
                    raise self._interrupt()
                return rehydrate(ran.value(), output_type)
        finally:
            if self._inline is step:
                self._inline = None
                if self._pending:
                    self._poke()
        if ran is None or self._new_steps > 1:
            raise self._interrupt()
        return rehydrate(ran.value(), output_type)

    async def _checkpointed(self) -> bool:
        """Checkpoint the step that just ran inline. Once it is committed the handler goes on with its
        result as if this were a fresh execution replaying everything so far: the next new step met
        alone runs inline too, several met together are planned."""
        assert self._checkpoint is not None
        sent = len(self.ops)
        if not await self._checkpoint(self.ops[self._reported : sent]):
            return False
        self._reported = sent
        self._ran_inline = False
        return True

    def _start_body(self, body: Coroutine[Any, Any, _Ran | None]) -> asyncio.Task[_Ran | None]:
        """Run a body in its own task, so targets run concurrently and a body's op is recorded even if
        the handler stops waiting for it."""
        task = self._loop.create_task(body)
        self._bodies.add(task)
        task.add_done_callback(self._bodies.discard)
        return task

    async def _run_target(
        self,
        step: _PendingStep,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        output_type: type[Any] | None,
    ) -> _Ran | None:
        try:
            return await self._run_body(step, fn, args, kwargs, output_type)
        finally:  # at once, not in a done callback: each op goes out on its own as it is recorded
            self._target_finished()

    async def _run_body(
        self,
        step: _PendingStep,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        output_type: type[Any] | None,
    ) -> _Ran | None:
        """Run the step's code and record its op. What it returned on success, None on failure."""
        started = now_ms()
        token = _current_step.set(step.name)
        try:
            result = await _call(fn, args, kwargs)
        except Exception as exc:
            error = failure_from_exception(exc, non_retriable=isinstance(exc, NonRetriableError))
            self._record(OpKind.STEP_ERROR, step, started, error=seal_error(self._encryption, error))
            return None
        finally:
            _current_step.reset(token)
        ended = now_ms()
        try:
            plain = to_plain(result, output_type)
            data = encode(plain)
        except JsonValueError as exc:
            failure = ErrorInfo(
                name=OutputUnserializableError.__name__,
                message=f'step "{step.name}" returned a value JSON cannot represent: {exc}',
                code=ErrorCode.OUTPUT_UNSERIALIZABLE,
                non_retriable=True,
            )
        else:
            saved = seal(self._encryption, data)
            if len(saved) <= MAX_STEP_OUTPUT_BYTES:
                scalar = (plain,) if is_scalar(plain) else None
                self._record(OpKind.STEP_RUN, step, started, ended, data_json=saved, scalar=scalar)
                return _Ran(data, plain)
            sealed = f" ({len(saved):,} once encrypted)" if saved is not data else ""
            failure = ErrorInfo(
                name=StepOutputTooLarge.__name__,
                message=(
                    f'step "{step.name}" returned {len(data):,} bytes of JSON{sealed}, over the limit of 4 MiB '
                    f"({MAX_STEP_OUTPUT_BYTES:,} bytes) per step output; return less, or store the data "
                    "elsewhere and return a reference to it"
                ),
                code=ErrorCode.LIMIT_EXCEEDED,
                non_retriable=True,
            )
        self._record(OpKind.STEP_ERROR, step, started, ended, error=failure)
        return None

    def _record(
        self,
        op: OpKind,
        step: _PendingStep,
        started: int,
        ended: int | None = None,
        *,
        data_json: bytes = b"",
        error: ErrorInfo | None = None,
        scalar: tuple[object] | None = None,
    ) -> None:
        self.ops.append(
            StepOp(
                op=op,
                id=step.hashed_id,
                name=step.name,
                index=step.index,
                started_at_ms=started,
                ended_at_ms=now_ms() if ended is None else ended,
                data_json=data_json,
                error=error,
                scalar=scalar,
            )
        )

    # --- replay order ---------------------------------------------------------------------------

    async def _wait_turn(self, position: int, task: asyncio.Task[Any] | None) -> None:
        turn: asyncio.Future[None] = self._loop.create_future()
        heapq.heappush(self._turns, position)
        self._waiting_turns[position] = (turn, task)
        self._poke()
        await turn

    def _replayed(self, position: int, task: asyncio.Task[Any] | None) -> None:
        """Note that ``task`` got the outcome at ``position``; outcomes before it that nobody reached
        are skipped (a hit on them later returns at once: it is late already)."""
        if position >= self._head:
            self._head = position + 1
        self._turn_task = task

    def _release_turn(self) -> bool:
        """Let the waiting memo hit recorded earliest return. False if none waits."""
        while self._turns:
            position = heapq.heappop(self._turns)
            turn, task = self._waiting_turns.pop(position)
            if not turn.done():  # done: its task was cancelled while it waited
                self._replayed(position, task)
                turn.set_result(None)
                return True
        return False

    # --- deciding what runs ---------------------------------------------------------------------

    def _poke(self) -> None:
        """Note step activity and make sure the engine looks again once the handler is quiet."""
        self._activity += 1
        if not self._ticking:
            self._ticking = True
            self._seen_activity = self._activity
            self._quiet = 0
            self._loop.call_soon(self._tick)

    def _tick(self) -> None:
        if self._activity != self._seen_activity:
            self._seen_activity = self._activity
            self._quiet = 0
        else:
            self._quiet += 1
        if self._quiet < _QUIET_TICKS:
            self._loop.call_soon(self._tick)
            return
        self._ticking = False
        self._turn_task = None  # the handler has reacted to the latest replayed result
        if self._release_turn():
            self._poke()
        else:
            self._decide()

    def _decide(self) -> None:
        """The handler is blocked on new steps (or on nothing of ours): act on the pending ones."""
        if self._targets:
            if self._targets_unmet and self._pending:  # blocked on steps that will never resolve here
                self._interrupt()
            return
        if self._inline is not None:  # a body is running; its end decides again
            return
        waiting = [step for step in self._pending if not step.future.done()]
        self._pending = waiting
        if not waiting:
            return
        if self._ran_inline:
            self._interrupt()
        elif self._plan_only or len(waiting) > 1 or waiting[0].request is not None:
            self.ops.extend(step.op() for step in waiting)
            self._interrupt()
        else:
            self._ran_inline = True
            self._inline = waiting[0]
            self._pending = []
            waiting[0].future.set_result(None)

    def _target_finished(self) -> None:
        self._targets_running -= 1
        if self._targets_unmet or self._targets_running:
            # Targets that finish within a moment of each other go out together: a gather of 1,000
            # quick steps then costs the executor a few merges and commits, not 1,000.
            if self._early_report is None:
                self._early_report = self._loop.call_later(EARLY_REPORT_WINDOW_S, self._report_finished)
        else:
            if self._early_report is not None:  # the final result carries what is left
                self._early_report.cancel()
                self._early_report = None
            self._interrupt()

    def _report_finished(self) -> None:
        """Send the ops of finished targets not sent yet (none once the execution has ended)."""
        self._early_report = None
        if not self.interrupted and len(self.ops) > self._reported:  # not if a body was cancelled early
            self._report_early(self.ops[self._reported :])
            self._reported = len(self.ops)

    def _interrupt(self) -> _Interrupt:
        """Tell every waiting step to unwind; the outcome of this execution is now "yielded"."""
        self.interrupted = True
        self._cancel_waiting()
        return _Interrupt()

    def _cancel_waiting(self) -> None:
        for step in self._pending:
            self._send_interrupt(step.future, step.task)
            step.task = None  # its frames, held by the task's traceback, hold the step (module docstring)
        self._pending = []
        for turn, task in self._waiting_turns.values():
            self._send_interrupt(turn, task)
        self._waiting_turns.clear()
        self._turns.clear()

    def _send_interrupt(self, future: asyncio.Future[None], task: asyncio.Task[Any] | None) -> None:
        if future.done():  # its task was cancelled while it waited
            return
        future.set_exception(_Interrupt())
        if task is not None and task is not self._handler_task:
            task.add_done_callback(_retrieve_interrupt)

    # --- end of the execution -------------------------------------------------------------------

    def unreported_ops(self) -> list[StepOp]:
        return self.ops[self._reported :]

    def missing_targets(self) -> list[str]:
        """Targets the handler never reached as new steps, in the order they were asked for."""
        return [target for target in self._targets if target in self._targets_unmet]

    async def finish(self) -> None:
        """After the handler ended: wait for bodies still running (their ops must be in the outcome),
        release steps nobody will decide on, and refuse further ``step.run`` calls."""
        self._closed = True
        if self._bodies:
            await asyncio.wait(set(self._bodies))
        self._cancel_waiting()

    def close(self) -> None:
        """Like :meth:`finish` without waiting: the execution is being cancelled."""
        self._closed = True
        for body in self._bodies:
            body.cancel()
        self._cancel_waiting()


def _retrieve_interrupt(task: asyncio.Task[Any]) -> None:
    """Mark what a handler's task ended with as seen, so asyncio does not log "Task exception was never
    retrieved" when it is collected: tasks a handler never awaits (a race's losers) end with the
    interrupt on purpose, and whatever a task does after the interrupt is moot, its traceback too (a
    cycle otherwise: the module docstring)."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        exc.__traceback__ = None


async def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Call a step body: coroutine functions on the loop, anything else in a thread."""
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__):
        return await fn(*args, **kwargs)
    result = await asyncio.to_thread(fn, *args, **kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result


def _check_id(api: str, name: object) -> None:
    if not isinstance(name, str) or not name:
        raise TypeError(f"{api}() needs a non-empty str id as its first argument, got {name!r}")
