"""The public value types: what users send, what handlers receive, what run queries return.

Plain frozen dataclasses with JSON-decoded payloads and timezone-aware UTC datetimes, so nothing
protobuf-shaped leaks into user code (``_convert`` builds them from the wire).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from durably._encryption import Encryption, sealed_event_json
from durably._json import JsonValueError, encode

MAX_EVENT_NAME = 255
"""Longest event name (and event id) the executor accepts."""


@dataclass(frozen=True, slots=True)
class Event:
    """An event: what you send, what triggers runs, what handlers receive as ``ctx.event``.

    ``data`` must be a JSON object (see the JSON rules in the README). ``id`` deduplicates: an event
    whose id was already accepted creates no runs; leave it None and ``send`` makes one (a ULID) before
    its first try, so a send retried after its answer was lost stores the event once.
    ``ts`` is milliseconds since the Unix epoch, set by the executor when None.
    """

    name: str
    data: dict[str, Any] = field(default_factory=dict)
    id: str | None = None
    ts: int | None = None


def check_event_name(name: object, what: str) -> str:
    """``name`` if it can name an event (a non-empty str of at most 255 characters), else ``ValueError``
    starting with ``what``."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{what} needs a non-empty event name, got {name!r}")
    if len(name) > MAX_EVENT_NAME:
        raise ValueError(f"{what}: event names are at most {MAX_EVENT_NAME} characters, got {len(name)}")
    return name


def check_event(event: Event, what: str, encryption: Encryption | None = None) -> bytes:
    """Refuse (``ValueError`` starting with ``what``) an event the executor would refuse; return its data
    as JSON (its ``encryption.event_field`` sealed). Shared by ``client.send``, ``step.send_event`` and
    ``step.invoke``, so all accept the same events."""
    if not isinstance(event.name, str) or not event.name:
        raise ValueError(f"{what} has no name")
    where = f'{what} ("{event.name}")'
    check_event_name(event.name, where)
    if event.id is not None and (not isinstance(event.id, str) or len(event.id) > MAX_EVENT_NAME):
        raise ValueError(f"{where}: id must be a str of at most {MAX_EVENT_NAME} characters, got {event.id!r}")
    if event.ts is not None and (isinstance(event.ts, bool) or not isinstance(event.ts, int) or event.ts < 0):
        raise ValueError(f"{where}: ts must be milliseconds since the Unix epoch (an int >= 0), got {event.ts!r}")
    if not isinstance(event.data, dict):
        raise ValueError(f"{where}: data must be a dict (a JSON object), got {type(event.data).__name__}")
    try:
        return sealed_event_json(encryption, event.data, encode(event.data))
    except JsonValueError as exc:
        raise ValueError(f"{where}: data {exc}") from None


def event_from_json(value: Any) -> Event:
    """An event saved as the JSON object ``{"id", "name", "data", "ts"}`` (a matched wait's result)."""
    data = value.get("data")
    return Event(
        name=value["name"],
        data=data if isinstance(data, dict) else {},
        id=value.get("id") or None,
        ts=value.get("ts") or None,
    )


class RunStatus(StrEnum):
    """Where a run is. ``completed``, ``failed`` and ``cancelled`` are final."""

    QUEUED = "queued"
    RUNNING = "running"
    SLEEPING = "sleeping"
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def ended(self) -> bool:
        """True for the final statuses."""
        return self in _ENDED


_ENDED = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """A failure as it was recorded: the exception's class name, message and traceback text.

    ``code`` is the stable machine-readable kind (see ``durably.errors.ErrorCode``);
    ``non_retriable`` says whether retrying was ruled out.
    """

    name: str
    message: str
    stack: str = ""
    code: str = ""
    non_retriable: bool = False
    retry_after_ms: int = 0
    """For a :class:`durably.RetryAfterError`: how long after the failure the next attempt was asked for."""


@dataclass(frozen=True, slots=True)
class RunStep:
    """One finished step of a run. ``id`` is the hashed step id, ``name`` the id you wrote, ``index``
    the occurrence of that name (0 for the first)."""

    id: str
    name: str
    index: int
    status: Literal["completed", "failed"]
    output: Any
    error: ErrorInfo | None
    attempts: int
    started_at: datetime | None
    ended_at: datetime | None


@dataclass(frozen=True, slots=True)
class Run:
    """One run of a function. ``output`` is the handler's decoded return value once ``completed``;
    ``error`` is set once ``failed``. ``steps`` is filled by ``get_run`` (empty in lists)."""

    id: str
    app_id: str
    function_id: str
    event_id: str
    status: RunStatus
    output: Any
    error: ErrorInfo | None
    created_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    steps: list[RunStep] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class FunctionInfo:
    """A function as the executor knows it, with the number of workers serving it right now."""

    app_id: str
    id: str
    event_triggers: list[str]
    retries: int
    optimize_parallelism: bool
    connected_workers: int
