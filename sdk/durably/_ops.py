"""What an execution reports to the executor, and the requests of the steps the executor carries out.

``step.run`` steps run in the worker; ``step.sleep``, ``sleep_until``, ``wait_for_event``,
``send_event`` and ``invoke`` do not: the worker only says what it wants (an :class:`OpRequest`) and
the executor does it durably (a timer, a pending wait, events stored with the step's result in one
transaction, a child run) and saves the step's result like any other. The functions below check a
call's arguments and build its request, so the mistakes are raised in the handler at the call, with
the step's id in the message. They run only when the step is new: a replay returns the saved result
without looking at the arguments again.

Nothing here touches protobuf (``_convert`` does).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from durably._durations import MAX_DURATION, Duration, instant_ms, now_ms, parse_duration, parse_instant, to_ms
from durably._encryption import Encryption, sealed_event_json
from durably._function import Function, check_expression, check_match
from durably._json import JsonValueError, encode
from durably._types import ErrorInfo, Event, check_event, check_event_name


class OpKind(enum.Enum):
    """What a recorded op says happened (or is asked for)."""

    STEP_RUN = "step_run"
    """A step body ran and returned ``data_json``."""
    STEP_ERROR = "step_error"
    """A step body ran and failed with ``error``; the executor retries it or saves the failure."""
    STEP_PLANNED = "step_planned"
    """A new step met together with others (or while ``plan_only``): it did not run; the executor
    runs it in an execution that targets it."""
    SLEEP = "sleep"
    """``step.sleep`` / ``step.sleep_until``: wake the run at ``wake_at_ms``; the result is null."""
    WAIT_FOR_EVENT = "wait_for_event"
    """``step.wait_for_event``: the result is the matching event, or null once ``expires_at_ms`` passed."""
    SEND_EVENT = "send_event"
    """``step.send_event``: the executor stores the events and the step's result (their ids) together."""
    INVOKE = "invoke"
    """``step.invoke``: the result is the child run's output; its failure (or timeout) the step's error."""


@dataclass(frozen=True, slots=True)
class WaitRequest:
    """``step.wait_for_event``: which event, until when, and how it must relate to the run's trigger."""

    event: str
    expires_at_ms: int
    match: str = ""
    if_expression: str = ""


@dataclass(frozen=True, slots=True)
class InvokeRequest:
    """``step.invoke``: the child function (``"fn"`` in this app, ``"app/fn"`` in another), its event
    data, and when to give up (0: the executor's default of one year)."""

    function_id: str
    data_json: bytes
    expires_at_ms: int = 0


@dataclass(frozen=True, slots=True)
class OpRequest:
    """What a step the executor carries out asks for; only the fields of its ``kind`` are set."""

    kind: OpKind
    wake_at_ms: int = 0
    wait: WaitRequest | None = None
    events: tuple[tuple[Event, bytes], ...] = ()
    """``send_event``: each event with its data as checked JSON."""
    invoke: InvokeRequest | None = None


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
    request: OpRequest | None = None
    """Set for the ops the executor carries out (sleep, wait, send, invoke)."""
    scalar: tuple[object] | None = None
    """A step result that is immutable, itself, in a 1-tuple (None is a result too): what decoding
    ``data_json`` gives, so the worker that keeps this result need not decode it again."""


# --- building requests ----------------------------------------------------------------------------

_MAX_AHEAD_MS = to_ms(MAX_DURATION)
_INVOKE_TARGET = re.compile(r"[A-Za-z0-9_.:/-]{1,257}")


def sleep_request(name: str, duration: Duration) -> OpRequest:
    """``step.sleep(name, duration)``: wake ``duration`` from now."""
    delay = parse_duration(duration, what=f'step.sleep("{name}")', at_most=MAX_DURATION)
    return OpRequest(OpKind.SLEEP, wake_at_ms=now_ms() + to_ms(delay))


def sleep_until_request(name: str, when: datetime | str) -> OpRequest:
    """``step.sleep_until(name, when)``: wake at ``when`` (at once if it has passed)."""
    what = f'step.sleep_until("{name}")'
    wake_at_ms = instant_ms(parse_instant(when, what=what))
    if wake_at_ms - now_ms() > _MAX_AHEAD_MS:
        raise ValueError(f"{what}: {when!r} is more than one year (366 days) ahead")
    return OpRequest(OpKind.SLEEP, wake_at_ms=max(1, wake_at_ms))  # 0 would read as "unset"


def wait_request(name: str, event: str, timeout: Duration, match: str | None, if_: str | None) -> OpRequest:
    """``step.wait_for_event(name, event=..., timeout=..., match=..., if_=...)``."""
    what = f'step.wait_for_event("{name}")'
    check_event_name(event, what)
    delay = parse_duration(timeout, what=f"{what}: timeout", at_most=MAX_DURATION)
    wait = WaitRequest(
        event=event,
        expires_at_ms=now_ms() + to_ms(delay),
        match=check_match(match, what),
        if_expression=check_expression(if_, what),
    )
    return OpRequest(OpKind.WAIT_FOR_EVENT, wait=wait)


def send_request(name: str, events: Event | Sequence[Event], encryption: Encryption | None = None) -> OpRequest:
    """``step.send_event(name, events)``: the events checked (and sealed) as ``client.send`` does."""
    what = f'step.send_event("{name}")'
    if isinstance(events, Event):
        items: list[object] = [events]
    elif isinstance(events, Sequence) and not isinstance(events, str):
        items = list(events)
    else:
        raise TypeError(f"{what} takes a durably.Event or a list of them, got {type(events).__name__}")
    if not items:
        raise ValueError(f"{what} needs at least one event")
    checked = []
    for position, event in enumerate(items):
        if not isinstance(event, Event):
            raise TypeError(f"{what} takes durably.Event objects, got {type(event).__name__} at position {position}")
        checked.append((event, check_event(event, f"{what}: event {position}", encryption)))
    return OpRequest(OpKind.SEND_EVENT, events=tuple(checked))


def invoke_request(
    name: str,
    app_id: str,
    function: Function | str,
    data: dict[str, Any] | None,
    timeout: Duration | None,
    encryption: Encryption | None = None,
) -> OpRequest:
    """``step.invoke(name, function=..., data=..., timeout=...)`` from a function of app ``app_id``;
    ``data`` is the child's event data, so its ``encryption.event_field`` is sealed."""
    what = f'step.invoke("{name}")'
    if isinstance(function, Function):
        function_id = function.id if function.app_id == app_id else f"{function.app_id}/{function.id}"
    elif isinstance(function, str) and _INVOKE_TARGET.fullmatch(function):
        function_id = function
    elif isinstance(function, str):
        raise ValueError(f'{what}: function {function!r} is not a function id ("fn", or "app/fn" in another app)')
    else:
        raise TypeError(
            f"{what}: function must be what @client.function(...) returned or a function id, got {function!r}"
        )
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"{what}: data must be a dict (a JSON object), got {type(data).__name__}")
    try:
        data_json = sealed_event_json(encryption, data, encode(data))
    except JsonValueError as exc:
        raise ValueError(f"{what}: data {exc}") from None
    expires_at_ms = 0
    if timeout is not None:
        expires_at_ms = now_ms() + to_ms(parse_duration(timeout, what=f"{what}: timeout", at_most=MAX_DURATION))
    return OpRequest(OpKind.INVOKE, invoke=InvokeRequest(function_id, data_json, expires_at_ms))
