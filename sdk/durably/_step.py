"""``ctx.step``: the step API handlers call. A thin, typed front; the engine in ``_execution`` decides."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar, overload

T = TypeVar("T")


class StepRunner(Protocol):
    """What :class:`Step` needs from the execution engine."""

    async def run_step(
        self,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        output_type: type[Any] | None,
    ) -> Any: ...


class Step:
    """The step API of one execution of a handler (``ctx.step``).

    Each call is identified by its id and how many times that id was used before in this execution
    (a loop calling ``step.run("send", ...)`` three times makes ``send``, ``send:1``, ``send:2``). The
    handler is replayed from the top for every new step, so it must reach its steps in the same order
    every time: keep anything non-deterministic (time, randomness, I/O) inside step bodies.
    """

    __slots__ = ("_runner",)

    def __init__(self, runner: StepRunner) -> None:
        self._runner = runner

    @overload
    async def run(
        self,
        id: str,
        fn: Callable[..., Awaitable[T]],
        /,
        *args: Any,
        output_type: None = None,
        **kwargs: Any,
    ) -> T: ...

    @overload
    async def run(
        self,
        id: str,
        fn: Callable[..., T],
        /,
        *args: Any,
        output_type: None = None,
        **kwargs: Any,
    ) -> T: ...

    @overload
    async def run(
        self,
        id: str,
        fn: Callable[..., Any],
        /,
        *args: Any,
        output_type: type[T],
        **kwargs: Any,
    ) -> T: ...

    async def run(
        self,
        id: str,
        fn: Callable[..., Any],
        /,
        *args: Any,
        output_type: type[Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Run ``fn(*args, **kwargs)`` as a durable step named ``id`` and return its result.

        The first time the run reaches this step, ``fn`` runs and its result is saved; every later
        execution of the handler gets the saved result back without running ``fn`` again. ``fn`` may
        be a coroutine function (awaited on the event loop) or a plain function (run in a thread via
        ``asyncio.to_thread``, so it may block).

        The result must be JSON-representable: None, bool, int, finite float, str, list, tuple (it
        comes back as a list) or dict with str keys. Anything else fails the step at once with a
        non-retriable ``OutputUnserializableError`` naming where the bad value is. Both the first run
        and replays return the value as decoded from the saved JSON, so they return the same thing.
        With ``output_type=`` (a dataclass or a pydantic model class), an instance of that type may be
        returned and the saved JSON is rebuilt into it.

        If ``fn`` raises, the executor retries the step (``retries`` of the function); when the step
        has failed for good, this call raises :class:`durably.StepError`, which the handler may catch.
        Raise :class:`durably.NonRetriableError` in ``fn`` to skip the retries. A result over 4 MiB of
        JSON fails the step for good at once; the ``StepError`` raised for it is also a
        :class:`durably.StepOutputTooLarge`. Steps cannot be nested: calling ``step.run`` inside ``fn``
        raises a non-retriable error.

        **Parallel steps.** Steps started together (``asyncio.gather``, a task group, tasks) run in
        parallel: the handler stops there, the executor runs each step in its own execution, and the
        handler is replayed once their results are saved. Code after the ``gather`` runs only then.

        **Races.** Saved results are replayed in the order the steps really finished, so
        ``asyncio.wait(..., return_when=FIRST_COMPLETED)``, ``asyncio.as_completed`` and the like see
        the same winner on every replay, whatever order the code starts the racers in. The losers are
        not cancelled: they keep running as planned steps and their results are saved when they
        finish, while the handler continues after the first result (Inngest's race mode); a replay
        that reaches a loser still in flight plans it again, which the executor ignores.
        """
        return await self._runner.run_step(id, fn, args, kwargs, output_type)
