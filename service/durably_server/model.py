"""The daemon's own types: what the store keeps and the engine passes around.

Protobuf stays at the edge (`convert.py`); everything inside the daemon speaks these.
Payloads (`*_json`) are the UTF-8 JSON bytes exactly as a client or worker sent them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SLEEPING = "sleeping"
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def ended(self) -> bool:
        return self in _ENDED


_ENDED = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})


class StepStatus(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Failure:
    """An error as raised in user code or decided by the executor."""

    name: str
    message: str
    stack: str = ""
    code: str = ""
    non_retriable: bool = False
    # Set by RetryAfterError: wait this long before the next attempt (not stored).
    retry_after_ms: int = 0

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "name": self.name,
                "message": self.message,
                "stack": self.stack,
                "code": self.code,
                "non_retriable": self.non_retriable,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Failure:
        d = json.loads(raw)
        return cls(d["name"], d["message"], d.get("stack", ""), d.get("code", ""), d.get("non_retriable", False))


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    name: str
    data_json: bytes
    ts_ms: int


@dataclass(frozen=True, slots=True)
class ConcurrencyLimit:
    limit: int
    # A field path over the triggering event ("event.data.userId"); "" for the whole function.
    key: str = ""


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    """A function as a worker registered it; (app_id, id) is its key."""

    app_id: str
    id: str
    event_triggers: tuple[str, ...]
    retries: int = 3
    optimize_parallelism: bool = False
    start_timeout_ms: int = 0
    finish_timeout_ms: int = 0
    concurrency: tuple[ConcurrencyLimit, ...] = ()
    on_failure: str = ""
    # (event name, expression over `event`) for triggers with an if_.
    trigger_filters: tuple[tuple[str, str], ...] = ()
    # (five-field schedule, IANA time zone).
    crons: tuple[tuple[str, str], ...] = ()
    # (event name, match path, expression) rules that cancel a running run.
    cancel_on: tuple[tuple[str, str, str], ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        return (self.app_id, self.id)

    @property
    def max_attempts(self) -> int:
        return self.retries + 1

    def to_json(self) -> str:
        return json.dumps(
            {
                "event_triggers": list(self.event_triggers),
                "retries": self.retries,
                "optimize_parallelism": self.optimize_parallelism,
                "start_timeout_ms": self.start_timeout_ms,
                "finish_timeout_ms": self.finish_timeout_ms,
                "concurrency": [[c.limit, c.key] for c in self.concurrency],
                "on_failure": self.on_failure,
                "trigger_filters": [list(f) for f in self.trigger_filters],
                "crons": [list(c) for c in self.crons],
                "cancel_on": [list(c) for c in self.cancel_on],
            }
        )

    @classmethod
    def from_row(cls, app_id: str, function_id: str, config: str) -> FunctionSpec:
        d = json.loads(config)
        return cls(
            app_id,
            function_id,
            tuple(d["event_triggers"]),
            d["retries"],
            d["optimize_parallelism"],
            d.get("start_timeout_ms", 0),
            d.get("finish_timeout_ms", 0),
            tuple(ConcurrencyLimit(limit, key) for limit, key in d.get("concurrency", [])),
            d.get("on_failure", ""),
            tuple((name, expression) for name, expression in d.get("trigger_filters", [])),
            tuple((schedule, zone) for schedule, zone in d.get("crons", [])),
            tuple((name, match, expression) for name, match, expression in d.get("cancel_on", [])),
        )


@dataclass(slots=True, eq=False)
class QueueItem:
    """One execution the run needs: the durable unit the scheduler dispatches.

    `target` is the hashed id of a planned step this execution must run; empty for a
    discovery (replay the handler and see what comes next). `wake`: the sleep this discovery
    completes, stored with its report (engine/wakes.py); such an item has no row of its own.
    """

    id: int
    run_id: str
    app_id: str
    function_id: str
    attempt: int = 0
    available_ms: int = 0
    target: str = ""
    wake: StepRecord | None = None

    @property
    def function_key(self) -> tuple[str, str]:
        return (self.app_id, self.function_id)


@dataclass(frozen=True, slots=True)
class StepRecord:
    run_id: str
    id: str
    name: str
    index: int
    status: StepStatus
    output_json: bytes | None
    error: Failure | None
    attempts: int
    started_ms: int
    ended_ms: int

    def memo(self) -> tuple[str, str, int, bytes, bool]:
        """The step as the run's state holds it: (id, name, index, payload, is_error)."""
        if self.status is StepStatus.COMPLETED:
            return (self.id, self.name, self.index, self.output_json or b"null", False)
        assert self.error is not None
        return (self.id, self.name, self.index, self.error.to_json(), True)


@dataclass(slots=True)
class RunRecord:
    id: str
    app_id: str
    function_id: str
    event_id: str
    status: RunStatus
    created_ms: int
    started_ms: int = 0
    ended_ms: int = 0
    output_json: bytes | None = None
    error: Failure | None = None
    steps: list[StepRecord] = field(default_factory=list)


class OpKind(StrEnum):
    STEP_RUN = "step_run"
    STEP_ERROR = "step_error"
    STEP_PLANNED = "step_planned"
    SLEEP = "sleep"
    WAIT_FOR_EVENT = "wait_for_event"
    SEND_EVENT = "send_event"
    INVOKE = "invoke"


@dataclass(frozen=True, slots=True)
class WaitSpec:
    event: str
    expires_at_ms: int
    match: str = ""
    if_expression: str = ""


@dataclass(frozen=True, slots=True)
class InvokeSpec:
    function_id: str
    data_json: bytes
    expires_at_ms: int = 0


@dataclass(frozen=True, slots=True)
class StepOp:
    """One step outcome a worker reported."""

    kind: OpKind
    id: str
    name: str
    index: int
    data_json: bytes = b""
    error: Failure | None = None
    started_ms: int = 0
    ended_ms: int = 0
    wake_at_ms: int = 0
    wait: WaitSpec | None = None
    events: tuple[Event, ...] = ()
    invoke: InvokeSpec | None = None


@dataclass(frozen=True, slots=True)
class ExecutionReport:
    """A worker's answer to one execution: what happened, then how the handler ended."""

    execution_id: str
    ops: tuple[StepOp, ...]
    output_json: bytes | None = None
    error: Failure | None = None
    need_full_state: bool = False
    # An early report of finished targets, or a discovery's checkpoint; the execution goes on
    # (see worker.proto).
    partial: bool = False

    @property
    def payload_bytes(self) -> int:
        """Bytes of the step results and the output it carries."""
        return sum(len(op.data_json) for op in self.ops) + len(self.output_json or b"")


@dataclass(frozen=True, slots=True)
class Checkpointed:
    """The executor's answer to a checkpoint: were its steps committed (see worker.proto)?"""

    execution_id: str
    committed: bool
