"""``durably.Client``: send events, query runs, and declare functions (asyncio)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from types import TracebackType
from typing import Any, TypeVar

import grpc

from durably import _api
from durably._encryption import Encryption
from durably._function import Concurrency, EventTrigger, Function, Handler, Timeouts, Trigger, make_function
from durably._grpc import aio_channel, map_rpc_error, resolve_address, resolve_token
from durably._tls import TLSConfig, resolve_tls
from durably._types import Event, FunctionInfo, Run, RunStatus
from durably.errors import DurablyError, UnavailableError
from durably.protocol.auth import auth_metadata
from durably.protocol.v1 import api_pb2_grpc

R = TypeVar("R")
_APP_ID = re.compile(r"[A-Za-z0-9_.:/-]{1,128}")


def check_app_id(app_id: str) -> str:
    if not isinstance(app_id, str) or not _APP_ID.fullmatch(app_id):
        raise ValueError(f"app_id {app_id!r} is invalid: use 1 to 128 characters among letters, digits and _ . : / -")
    return app_id


def check_encryption(encryption: Encryption | None) -> Encryption | None:
    if encryption is not None and not isinstance(encryption, Encryption):
        raise TypeError(f"encryption must be a durably.Encryption or None, got {type(encryption).__name__}")
    return encryption


class Client:
    """Talks to the durably executor for one application (``app_id``).

    ``address`` is ``host:port``; it defaults to ``$DURABLY_ADDRESS``, else ``127.0.0.1:7070``. The
    gRPC channel opens on first use (and again if used from another event loop, e.g. per-test loops),
    so creating a client at import time, to decorate functions with it, is fine.

    Failed calls raise :class:`durably.DurablyError` subclasses: ``InvalidArgumentError`` (also a
    ``ValueError``), ``RunNotFoundError``, ``UnavailableError`` (also a ``ConnectionError``),
    ``LimitExceeded`` or ``ServiceError``; see ``durably.errors``.

    ``token`` is what a daemon started by ``durably serve`` requires of every call; it defaults to
    ``$DURABLY_TOKEN`` (a ``durably dev`` daemon needs none). Workers of this client send it too.

    ``tls`` is for a daemon serving TLS (``durably serve --tls-cert``): a :class:`durably.TLSConfig`
    (its CA, and a client certificate if the daemon requires one), ``True`` to trust the system's
    roots, ``False`` for plain text; the default, None, reads ``$DURABLY_TLS_CA``,
    ``$DURABLY_TLS_CERT`` and ``$DURABLY_TLS_KEY`` (file paths) and uses plain text if none is set.
    Workers of this client connect the same way.

    ``checkpointing`` is the default of :meth:`function`'s option of that name for the functions
    declared with this client.

    ``encryption``: a :class:`durably.Encryption` sealing step results, handler outputs, errors raised
    by user code and a field of event data before they leave this process (``send``, and the workers
    of this client), and opening them in the runs this client reads; the executor then stores and
    logs only ciphertext of them.
    """

    def __init__(
        self,
        app_id: str,
        *,
        address: str | None = None,
        token: str | None = None,
        tls: bool | TLSConfig | None = None,
        checkpointing: bool = False,
        encryption: Encryption | None = None,
    ) -> None:
        if not isinstance(checkpointing, bool):
            raise TypeError(f"Client(checkpointing=...) must be a bool, got {checkpointing!r}")
        self.app_id = check_app_id(app_id)
        self.encryption = check_encryption(encryption)
        self.address = resolve_address(address)
        self._metadata = auth_metadata(resolve_token(token))
        self._tls = resolve_tls(tls)
        self.checkpointing = checkpointing
        self._channel: Any = None
        self._channel_loop: asyncio.AbstractEventLoop | None = None
        self._stub: Any = None

    def __repr__(self) -> str:
        return f"durably.Client(app_id={self.app_id!r}, address={self.address!r})"

    # --- declaring functions --------------------------------------------------------------------

    def function(
        self,
        id: str,
        trigger: Trigger | list[Trigger] | None = None,
        *,
        retries: int = 3,
        optimize_parallelism: bool = False,
        concurrency: int | Concurrency | list[Concurrency] | None = None,
        timeouts: Timeouts | None = None,
        on_failure: Handler | None = None,
        cancel_on: EventTrigger | list[EventTrigger] | None = None,
        checkpointing: bool | None = None,
    ) -> Callable[[Handler], Function]:
        """Declare a durable function: ``@client.function(id="x", trigger=durably.on_event("e"))``.

        The handler is an ``async def handler(ctx: durably.Context)``. It runs again from the top for
        every new step (finished steps return their saved results), so everything outside
        ``ctx.step.run`` must be deterministic and free of side effects.

        * ``trigger``: :func:`durably.on_event` and/or :func:`durably.on_cron` rules, one or a list;
          none means the function runs only when invoked (``step.invoke``).
        * ``retries`` (0..20): how many times a failing step or handler is retried after its first
          attempt.
        * ``concurrency``: at most that many executions at once (an int), or up to two
          :class:`durably.Concurrency` limits, e.g. per ``key="event.data.userId"``.
        * ``timeouts``: :class:`durably.Timeouts` cancelling runs that do not start, or do not finish,
          in time.
        * ``on_failure``: an ``async def handler(ctx)`` run once for every run of this function that
          fails (not for cancelled ones). It is a function of its own, with the id ``<id>-failure``,
          no trigger and the same ``retries``, served by any worker serving this function. Its
          ``ctx.event`` is the ``durably/function.failed`` event, with data ``{"app_id",
          "function_id", "run_id", "event": {"id", "name", "data", "ts"}, "error": {"name",
          "message", "stack"}}``.
        * ``cancel_on``: :func:`durably.on_event` rules (with ``match=`` and/or ``if_=``) whose events
          cancel a running run of this function, e.g. ``on_event("order/cancelled",
          match="data.orderId")``. Only events received after the run was created count.
        * ``checkpointing`` (default: the client's, ``False``): run sequential steps in one execution
          instead of one per step. After each new step the worker sends its result, waits until the
          executor has committed it, and resumes the handler where it stopped, so a run of N
          sequential steps costs N commits and round trips but no replay. The handler is replayed
          from saved state only after a crash, a retry, a sleep or wait, parallel steps, or when
          another worker takes the run, so the determinism rule above still holds. Off by default
          because the re-execution model it shortcuts is the one the docs teach.

        Returns a decorator that returns the :class:`durably.Function` to pass to ``Worker``.
        Mistakes raise ``ValueError``/``TypeError`` right here, at decoration time.
        """

        def build(handler: object) -> Function:
            return make_function(
                app_id=self.app_id,
                id=id,
                handler=handler,
                trigger=trigger,
                retries=retries,
                optimize_parallelism=optimize_parallelism,
                concurrency=concurrency,
                timeouts=timeouts,
                on_failure=on_failure,
                cancel_on=cancel_on,
                checkpointing=self.checkpointing if checkpointing is None else checkpointing,
            )

        build(_placeholder)  # check the options now, so a bad one fails at the decorator line
        return build

    # --- the API --------------------------------------------------------------------------------

    async def send(self, events: Event | Sequence[Event]) -> list[str]:
        """Send one event or several; returns their ids, in order, once the executor has stored them."""
        return await self._call(_api.send(events, self.encryption))

    async def get_run(self, run_id: str) -> Run:
        """The run with its finished steps; raises ``RunNotFoundError`` for an unknown id."""
        return await self._call(_api.get_run(run_id, self.encryption))

    async def list_runs(
        self,
        function_id: str | None = None,
        event_id: str | None = None,
        status: RunStatus | str | None = None,
        limit: int = 100,
    ) -> list[Run]:
        """Runs, newest first, filtered by function, triggering event and/or status (1..1000 of them)."""
        return await self._call(_api.list_runs(function_id, event_id, status, limit, self.encryption))

    async def wait_for_run(self, run_id: str, timeout: float = 60.0) -> Run:
        """The run once it has ended (completed, failed or cancelled).

        Raises the built-in ``TimeoutError`` if it has not ended within ``timeout`` seconds. An
        executor that is briefly unreachable (restarting) is waited for within the same timeout.
        """
        deadline = time.monotonic() + _api.check_timeout(timeout)
        last: Run | None = None
        unreachable: UnavailableError | None = None
        while (remaining := deadline - time.monotonic()) > 0:
            started = time.monotonic()
            try:
                last = await self._call(_api.wait_for_run(run_id, remaining, self.encryption))
            except DurablyError as exc:
                if not _api.is_transient(exc):
                    raise
                unreachable = _api.latest_unreachable(exc, unreachable)
                await asyncio.sleep(min(_api.RETRY_DELAY, max(0.0, deadline - time.monotonic())))
                continue
            if last.status.ended:
                return last
            if time.monotonic() - started < 0.05:  # the executor answered at once: don't spin
                await asyncio.sleep(0.05)
        raise _api.wait_timeout_error(run_id, timeout, last, unreachable)

    async def watch_run(self, run_id: str, timeout: float | None = None) -> AsyncIterator[Run]:
        """The run now, then again at each change (a new status, steps recorded); the last one yielded
        has ended. Each step crosses the wire once, however long the run.

        Raises ``RunNotFoundError`` for an unknown id, the built-in ``TimeoutError`` if the run has not
        ended within ``timeout`` seconds (``None``: no limit). An executor that is briefly unreachable
        (restarting) is watched again once it answers.
        """
        watched = _api.WatchedRun(run_id, timeout, self.encryption)
        while True:
            call = self._api_stub().WatchRun(
                _api.watch_run_request(run_id), timeout=watched.remaining(), metadata=self._metadata
            )
            try:
                async for response in call:
                    if (run := watched.update(response)) is not None:
                        yield run
                return
            except grpc.RpcError as exc:
                watched.failed(exc, self.address, plain_text=self._tls is None)
            finally:
                call.cancel()
            await asyncio.sleep(_api.RETRY_DELAY)

    async def cancel_run(self, run_id: str) -> Run:
        """Cancel a run that has not ended; returns the run as it is afterwards."""
        return await self._call(_api.cancel_run(run_id, self.encryption))

    async def list_functions(self) -> list[FunctionInfo]:
        """The functions of this app the executor knows, with how many workers serve each."""
        return await self._call(_api.list_functions(self.app_id))

    async def close(self) -> None:
        """Close the channel; the client opens a new one if it is used again."""
        channel, loop = self._channel, self._channel_loop
        self._channel = self._stub = self._channel_loop = None
        if channel is not None and loop is asyncio.get_running_loop():
            await channel.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # --- plumbing -------------------------------------------------------------------------------

    async def _call(self, call: _api.Call[R]) -> R:
        stub = self._api_stub()
        try:
            response = await getattr(stub, call.method)(call.request, timeout=call.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise map_rpc_error(exc, address=self.address, run_id=call.run_id, plain_text=self._tls is None) from exc
        return call.convert(response)

    def _api_stub(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._stub is None or self._channel_loop is not loop:
            # A grpc.aio channel belongs to the loop it was made on; a client used from a new loop
            # (one loop per test, a second asyncio.run) gets a new channel.
            self._channel = aio_channel(self.address, self._tls)
            self._channel_loop = loop
            self._stub = api_pb2_grpc.ApiServiceStub(self._channel)
        return self._stub


async def _placeholder(ctx: Any) -> None:
    """Stands in for the handler while ``Client.function`` checks its options."""
