"""``ctx.step``: the step API handlers call. A thin, typed front; the engine in ``_execution`` decides,
and ``_ops`` checks the arguments of the steps the executor carries out."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar, overload

from durably._durations import Duration
from durably._encryption import Encryption, open_event
from durably._function import Function
from durably._ops import (
    OpRequest,
    invoke_request,
    send_request,
    sleep_request,
    sleep_until_request,
    wait_request,
)
from durably._types import Event, event_from_json

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

    async def op_step(self, api: str, name: str, build: Callable[[], OpRequest]) -> Any:
        """A step the executor carries out: its saved result (decoded JSON), or, when it is new, ``build()``
        is reported and the handler stops there."""
        ...

    @property
    def app_id(self) -> str:
        """The app of the function being executed."""
        ...

    @property
    def encryption(self) -> Encryption | None:
        """What seals the events and invoke data this execution sends, and opens the events it gets."""
        ...


class Step:
    """The step API of one execution of a handler (``ctx.step``).

    Each call is identified by its id and how many times that id was used before in this execution
    (a loop calling ``step.run("send", ...)`` three times makes ``send``, ``send:1``, ``send:2``); all
    step kinds share these ids and counters. The handler is replayed from the top for every new step,
    so it must reach its steps in the same order every time: keep anything non-deterministic (time,
    randomness, I/O) inside step bodies.

    ``run`` executes its body in the worker. ``sleep``, ``sleep_until``, ``wait_for_event``,
    ``send_event`` and ``invoke`` are carried out by the executor: when the handler reaches one that
    has no saved result, the worker reports it and the handler stops there (nothing runs in the
    worker while a run sleeps or waits); the executor saves the step's result once it is done and
    replays the handler, which then gets that result. Met together with other new steps
    (``asyncio.gather``), they are all reported at once, so a sleep and a ``step.run`` proceed in
    parallel.

    **Durations** (sleeps and timeouts) are strings such as ``"500ms"``, ``"30s"``, ``"10m"``,
    ``"2h"``, ``"7d"`` or ``"1h30m"``, ``timedelta`` objects, or numbers of seconds; nothing may last
    more than one year (366 days, as in Inngest). Mistakes raise ``ValueError``/``TypeError`` at the
    call, naming the step.
    """

    __slots__ = ("_runner",)

    def __init__(self, runner: StepRunner) -> None:
        self._runner = runner

    @overload
    def run(
        self,
        id: str,
        fn: Callable[..., Awaitable[T]],
        /,
        *args: Any,
        output_type: None = None,
        **kwargs: Any,
    ) -> Coroutine[Any, Any, T]: ...

    @overload
    def run(
        self,
        id: str,
        fn: Callable[..., T],
        /,
        *args: Any,
        output_type: None = None,
        **kwargs: Any,
    ) -> Coroutine[Any, Any, T]: ...

    @overload
    def run(
        self,
        id: str,
        fn: Callable[..., Any],
        /,
        *args: Any,
        output_type: type[T],
        **kwargs: Any,
    ) -> Coroutine[Any, Any, T]: ...

    def run(
        self,
        id: str,
        fn: Callable[..., Any],
        /,
        *args: Any,
        output_type: type[Any] | None = None,
        **kwargs: Any,
    ) -> Coroutine[Any, Any, Any]:
        """Run ``fn(*args, **kwargs)`` as a durable step named ``id`` and return its result (await it).

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

        A plain method returning the engine's coroutine rather than a coroutine function of its own:
        every replay of every step passes here, and one coroutine per step instead of two is ~10 % of
        a replayed step's cost (bench/README.md, "What limits").
        """
        return self._runner.run_step(id, fn, args, kwargs, output_type)

    async def sleep(self, id: str, duration: Duration) -> None:
        """Pause the run for ``duration`` (``"30s"``, ``"24h"``, a ``timedelta``, seconds; at most one year).

        The executor wakes the run when the time has come (never earlier) and the handler continues
        after this call; no worker is busy in between. A negative, malformed or longer-than-a-year
        duration raises ``ValueError``.
        """
        await self._runner.op_step("step.sleep", id, lambda: sleep_request(id, duration))

    async def sleep_until(self, id: str, when: datetime | str) -> None:
        """Pause the run until ``when``: an aware ``datetime`` or an ISO 8601 string with an offset
        (``"2030-01-02T09:00:00+01:00"``, ``"…Z"``).

        A time already past wakes the run at once. A naive datetime (no time zone: its meaning would
        depend on the machine) or a time more than one year ahead raises ``ValueError``.
        """
        await self._runner.op_step("step.sleep_until", id, lambda: sleep_until_request(id, when))

    async def wait_for_event(
        self,
        id: str,
        *,
        event: str,
        timeout: Duration,
        match: str | None = None,
        if_: str | None = None,
    ) -> Event | None:
        """Pause the run until an event named ``event`` arrives, and return it; None after ``timeout``.

        ``match="data.userId"`` accepts only an event whose ``data.userId`` equals the one of the
        run's triggering event (it pairs ``event.<path>`` of the trigger with ``async.<path>`` of the
        incoming event). ``if_`` is an expression over ``event`` (the run's trigger) and ``async``
        (the incoming event) in a CEL-like subset: ``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=``,
        ``&&``, ``||``, ``!``, parentheses, field paths and string/number/bool/null literals, e.g.
        ``if_="async.data.total > 100 && async.data.userId == event.data.userId"``. With both, both
        must hold. The executor parses the expression and fails the run with a clear error if it is
        invalid.

        **No lookback**, as in Inngest: only events received after the wait was recorded can match.
        An event sent just before the handler reached this step (or while the worker was reporting
        it) is missed, and the wait times out. ``timeout`` is a duration of at most one year.
        """
        value = await self._runner.op_step(
            "step.wait_for_event", id, lambda: wait_request(id, event, timeout, match, if_)
        )
        return None if value is None else open_event(self._runner.encryption, event_from_json(value))

    async def send_event(self, id: str, events: Event | Sequence[Event]) -> list[str]:
        """Send one event or several from the run, exactly once, and return their ids.

        The executor stores the events together with this step's result, so a retry or a replay never
        sends them twice; an event without an ``id`` gets a stable one. Events are checked as
        ``client.send`` checks them (a name, data that is a JSON object).
        """
        ids: list[str] = await self._runner.op_step(
            "step.send_event", id, lambda: send_request(id, events, self._runner.encryption)
        )
        return ids

    async def invoke(
        self,
        id: str,
        *,
        function: Function | str,
        data: dict[str, Any] | None = None,
        timeout: Duration | None = None,
    ) -> Any:
        """Run another function as a child run with ``data`` as its event data, wait for it to end,
        and return its output.

        ``function`` is what ``@client.function(...)`` returned (of this app or another) or a
        function id: ``"fn"`` in this app, ``"app/fn"`` in another. The child runs whatever its
        triggers; its ``ctx.event`` carries ``data``. If the child fails, or has not finished after
        ``timeout`` (default and maximum: one year), this raises :class:`durably.StepError` (its
        ``error_name`` is ``"InvokeError"`` or ``"InvokeTimeout"``), which the handler may catch.
        """
        return await self._runner.op_step(
            "step.invoke",
            id,
            lambda: invoke_request(id, self._runner.app_id, function, data, timeout, self._runner.encryption),
        )
