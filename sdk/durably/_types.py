"""The public value types: what users send, what handlers receive, what run queries return.

Plain frozen dataclasses with JSON-decoded payloads and timezone-aware UTC datetimes, so nothing
protobuf-shaped leaks into user code (``_convert`` builds them from the wire).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class Event:
    """An event: what you send, what triggers runs, what handlers receive as ``ctx.event``.

    ``data`` must be a JSON object (see the JSON rules in the README). ``id`` deduplicates: an event
    whose id was already accepted creates no runs; leave it None and the executor assigns one.
    ``ts`` is milliseconds since the Unix epoch, set by the executor when None.
    """

    name: str
    data: dict[str, Any] = field(default_factory=dict)
    id: str | None = None
    ts: int | None = None


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
