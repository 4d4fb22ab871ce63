"""What each client method sends and how it reads the answer, shared by ``Client`` and ``SyncClient``.

A :class:`Call` names the ``ApiService`` method, carries the request and the converter of the response;
the two clients differ only in how they invoke it (awaiting a ``grpc.aio`` stub or calling a blocking
one), so the conversions and the checks cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import grpc

from durably import _convert
from durably._encryption import Encryption
from durably._grpc import CALL_TIMEOUT, map_rpc_error
from durably._types import Event, FunctionInfo, Run, RunStatus, RunStep
from durably.errors import DurablyError, ServiceError, UnavailableError
from durably.protocol.v1 import api_pb2

R = TypeVar("R")

WAIT_CHUNK = 30.0
"""Longest single WaitForRun call in seconds; longer waits loop, so a restarted executor is noticed."""
RETRY_DELAY = 0.2
"""Pause before calling WaitForRun again after the executor was unreachable."""


@dataclass(frozen=True, slots=True)
class Call(Generic[R]):
    """One unary call: stub method name, request, response converter, deadline in seconds."""

    method: str
    request: Any
    convert: Callable[[Any], R]
    timeout: float = CALL_TIMEOUT
    run_id: str | None = None
    """Set for calls about one run, so NOT_FOUND becomes RunNotFoundError."""


def send(events: Event | Sequence[Event], encryption: Encryption | None) -> Call[list[str]]:
    return Call("SendEvents", _convert.send_events_request(events, encryption), _convert.send_events_ids)


def get_run(run_id: str, encryption: Encryption | None) -> Call[Run]:
    convert = functools.partial(_convert.run_from_response, encryption=encryption)
    return Call("GetRun", _convert.get_run_request(run_id), convert, run_id=run_id)


def list_runs(
    function_id: str | None,
    event_id: str | None,
    status: RunStatus | str | None,
    limit: int,
    encryption: Encryption | None,
) -> Call[list[Run]]:
    request = _convert.list_runs_request(function_id, event_id, status, limit)
    return Call("ListRuns", request, functools.partial(_convert.runs_from_response, encryption=encryption))


def wait_for_run(run_id: str, remaining: float, encryption: Encryption | None) -> Call[Run]:
    """One WaitForRun call of at most :data:`WAIT_CHUNK` seconds within ``remaining``."""
    chunk = min(remaining, WAIT_CHUNK)
    request = _convert.wait_for_run_request(run_id, int(chunk * 1000))
    convert = functools.partial(_convert.run_from_response, encryption=encryption)
    return Call("WaitForRun", request, convert, timeout=chunk + 10.0, run_id=run_id)


def cancel_run(run_id: str, encryption: Encryption | None) -> Call[Run]:
    convert = functools.partial(_convert.run_from_response, encryption=encryption)
    return Call("CancelRun", _convert.cancel_run_request(run_id), convert, run_id=run_id)


def list_functions(app_id: str) -> Call[list[FunctionInfo]]:
    return Call("ListFunctions", _convert.list_functions_request(app_id), _convert.functions_from_response)


def watch_run_request(run_id: str) -> api_pb2.GetRunRequest:
    return _convert.get_run_request(run_id)


@dataclass(slots=True)
class WatchedRun:
    """Whole runs rebuilt from WatchRun's messages, each of which after the first carries only the
    steps recorded since the one before (so a step crosses the wire once however long the run)."""

    run_id: str
    timeout: float | None
    encryption: Encryption | None = None
    deadline: float | None = field(init=False, default=None)
    steps: list[RunStep] = field(init=False, default_factory=list)
    """Every step the stream has shown, in order."""
    last: Run | None = field(init=False, default=None)
    """The run last yielded."""
    unreachable: UnavailableError | None = field(init=False, default=None)
    """Why the latest stream broke, when it broke as an executor restarting does (said on a time-out)."""

    def __post_init__(self) -> None:
        if self.timeout is not None:
            self.deadline = time.monotonic() + check_timeout(self.timeout)

    def remaining(self) -> float | None:
        """Seconds left for the next stream (None: no limit); raises TimeoutError once none are left."""
        if self.deadline is None:
            return None
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise wait_timeout_error(self.run_id, self.timeout or 0.0, self.last, self.unreachable)
        return remaining

    def failed(self, exc: grpc.RpcError, address: str, plain_text: bool) -> None:
        """Raise the SDK's error for a stream that broke, unless watching again may work (an executor
        restarting; a stream cut by the deadline, which ``remaining()`` then turns into TimeoutError)."""
        error = map_rpc_error(exc, address=address, run_id=self.run_id, plain_text=plain_text)
        if not is_transient(error):
            raise error from exc
        self.unreachable = latest_unreachable(error, self.unreachable)

    def update(self, response: api_pb2.WatchRunResponse) -> Run | None:
        """The run as of this message, or None if it shows nothing new (a stream opened again after
        the executor was unreachable starts over with the whole run)."""
        run = _convert.run_from_pb(response.run, self.encryption)
        del self.steps[response.first_step :]
        self.steps.extend(run.steps)
        if self.last is not None and (self.last.status, len(self.last.steps)) == (run.status, len(self.steps)):
            return None
        self.last = dataclasses.replace(run, steps=list(self.steps))
        return self.last


def check_timeout(timeout: float) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    return float(timeout)


def is_transient(exc: DurablyError) -> bool:
    """True when retrying a read soon may succeed (executor restarting, a call that ran out of time)."""
    return isinstance(exc, ServiceError) and exc.status in ("UNAVAILABLE", "DEADLINE_EXCEEDED")


def latest_unreachable(error: DurablyError, before: UnavailableError | None) -> UnavailableError | None:
    """The failure to reach the executor to report if a wait times out: the latest (not a try cut short
    by the wait's own deadline)."""
    return error if isinstance(error, UnavailableError) else before


def wait_timeout_error(
    run_id: str, timeout: float, last: Run | None, unreachable: UnavailableError | None = None
) -> TimeoutError:
    """Why a wait for a run ended without it: the run as last seen, else the last failure to reach the
    executor (which says, say, that it serves TLS and this client spoke plain text)."""
    if last is not None:
        state = f"its status is {last.status.value}"
    elif unreachable is not None:
        state = f"the executor could not be reached: {unreachable}"
    else:
        state = "the executor could not be reached"
    return TimeoutError(f"run {run_id!r} has not ended after {timeout:g} s ({state})")
