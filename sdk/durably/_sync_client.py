"""``durably.SyncClient``: the client API for code that is not async (scripts, web views, tests).

It shares every request and conversion with :class:`durably.Client` (``_api``); only the transport
differs: a blocking ``grpc`` channel, safe to use from several threads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Any, TypeVar

import grpc

from durably import _api
from durably._client import check_app_id, check_encryption
from durably._encryption import Encryption
from durably._grpc import map_rpc_error, resolve_address, resolve_token, sync_channel
from durably._tls import TLSConfig, resolve_tls
from durably._types import Event, FunctionInfo, Run, RunStatus
from durably.errors import DurablyError, UnavailableError
from durably.protocol.auth import auth_metadata
from durably.protocol.v1 import api_pb2_grpc

R = TypeVar("R")


class SyncClient:
    """The blocking twin of :class:`durably.Client`: same methods and errors, no ``await``.

    Functions are declared with (and workers run on) the async ``Client``; this one sends events and
    reads runs. ``token``, ``tls`` and ``encryption`` as for ``Client`` (the first two default from
    the environment).
    """

    def __init__(
        self,
        app_id: str,
        *,
        address: str | None = None,
        token: str | None = None,
        tls: bool | TLSConfig | None = None,
        encryption: Encryption | None = None,
    ) -> None:
        self.app_id = check_app_id(app_id)
        self.encryption = check_encryption(encryption)
        self.address = resolve_address(address)
        self._metadata = auth_metadata(resolve_token(token))
        self._tls = resolve_tls(tls)
        self._lock = threading.Lock()
        self._channel: Any = None
        self._stub: Any = None

    def __repr__(self) -> str:
        return f"durably.SyncClient(app_id={self.app_id!r}, address={self.address!r})"

    def send(self, events: Event | Sequence[Event]) -> list[str]:
        """Send one event or several; returns their ids, in order, once the executor has stored them."""
        return self._call(_api.send(events, self.encryption))

    def get_run(self, run_id: str) -> Run:
        """The run with its finished steps; raises ``RunNotFoundError`` for an unknown id."""
        return self._call(_api.get_run(run_id, self.encryption))

    def list_runs(
        self,
        function_id: str | None = None,
        event_id: str | None = None,
        status: RunStatus | str | None = None,
        limit: int = 100,
    ) -> list[Run]:
        """Runs, newest first, filtered by function, triggering event and/or status (1..1000 of them)."""
        return self._call(_api.list_runs(function_id, event_id, status, limit, self.encryption))

    def wait_for_run(self, run_id: str, timeout: float = 60.0) -> Run:
        """The run once it has ended; the built-in ``TimeoutError`` if not within ``timeout`` seconds."""
        deadline = time.monotonic() + _api.check_timeout(timeout)
        last: Run | None = None
        unreachable: UnavailableError | None = None
        while (remaining := deadline - time.monotonic()) > 0:
            started = time.monotonic()
            try:
                last = self._call(_api.wait_for_run(run_id, remaining, self.encryption))
            except DurablyError as exc:
                if not _api.is_transient(exc):
                    raise
                unreachable = _api.latest_unreachable(exc, unreachable)
                time.sleep(min(_api.RETRY_DELAY, max(0.0, deadline - time.monotonic())))
                continue
            if last.status.ended:
                return last
            if time.monotonic() - started < 0.05:  # the executor answered at once: don't spin
                time.sleep(0.05)
        raise _api.wait_timeout_error(run_id, timeout, last, unreachable)

    def watch_run(self, run_id: str, timeout: float | None = None) -> Iterator[Run]:
        """The run now, then again at each change; the last one yielded has ended (see
        :meth:`durably.Client.watch_run`)."""
        watched = _api.WatchedRun(run_id, timeout, self.encryption)
        while True:
            call = self._api_stub().WatchRun(
                _api.watch_run_request(run_id), timeout=watched.remaining(), metadata=self._metadata
            )
            try:
                for response in call:
                    if (run := watched.update(response)) is not None:
                        yield run
                return
            except grpc.RpcError as exc:
                watched.failed(exc, self.address, plain_text=self._tls is None)
            finally:
                call.cancel()
            time.sleep(_api.RETRY_DELAY)

    def cancel_run(self, run_id: str) -> Run:
        """Cancel a run that has not ended; returns the run as it is afterwards."""
        return self._call(_api.cancel_run(run_id, self.encryption))

    def list_functions(self) -> list[FunctionInfo]:
        """The functions of this app the executor knows, with how many workers serve each."""
        return self._call(_api.list_functions(self.app_id))

    def close(self) -> None:
        """Close the channel; the client opens a new one if it is used again."""
        with self._lock:
            channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            channel.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _call(self, call: _api.Call[R]) -> R:
        stub = self._api_stub()
        try:
            response = getattr(stub, call.method)(call.request, timeout=call.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise map_rpc_error(exc, address=self.address, run_id=call.run_id, plain_text=self._tls is None) from exc
        return call.convert(response)

    def _api_stub(self) -> Any:
        with self._lock:
            if self._stub is None:
                self._channel = sync_channel(self.address, self._tls)
                self._stub = api_pb2_grpc.ApiServiceStub(self._channel)
            return self._stub
