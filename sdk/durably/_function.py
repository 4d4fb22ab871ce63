"""Declaring functions: triggers, options, and the checks that catch mistakes at decoration time.

A mistake found when the module is imported (a sync handler, a bad id, ``retries=100``) costs a
traceback pointing at the decorator; found by the executor later it would cost a failed run.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from durably._durations import MAX_DURATION, Duration, parse_duration
from durably._types import check_event_name

if TYPE_CHECKING:
    from durably._context import Context

Handler = Callable[["Context"], Awaitable[Any]]
"""An ``async def handler(ctx: durably.Context)``."""

MAX_RETRIES = 20
MAX_CONCURRENCY_LIMITS = 2
MAX_CONCURRENCY = 10_000
"""The largest concurrency limit the executor accepts."""
FAILURE_SUFFIX = "-failure"
"""The id of a function's ``on_failure`` handler is the function's id plus this."""
_FUNCTION_ID = re.compile(r"[A-Za-z0-9_.:/-]{1,128}")
_MAX_FUNCTION_ID = 128
_FIELD_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_KEY_PATH = re.compile(r"event(\.[A-Za-z0-9_\-]+)+")


# --- triggers -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventTrigger:
    """An event rule, built with :func:`on_event`: as a trigger, the function runs once for every event
    named ``event`` (for which ``if_`` holds); in ``cancel_on``, such an event cancels a run."""

    event: str
    if_: str | None = None
    """An expression over ``event`` (as a trigger) or ``event`` and ``async`` (in ``cancel_on``)."""
    match: str | None = None
    """``cancel_on`` only: a field path that must be equal on the run's trigger and the incoming event."""


@dataclass(frozen=True, slots=True)
class CronTrigger:
    """A schedule, built with :func:`on_cron`: the function runs at every time ``schedule`` matches in
    ``timezone``."""

    schedule: str
    timezone: str = "UTC"


Trigger = EventTrigger | CronTrigger
"""What ``client.function(trigger=...)`` takes (alone or in a list)."""


def on_event(name: str, if_: str | None = None, *, match: str | None = None) -> EventTrigger:
    """An event rule: as a trigger, the function runs once for every event with this name, e.g.
    ``"order/placed"``; in ``cancel_on=[...]``, such an event cancels the function's runs.

    ``if_`` narrows it with an expression (the CEL-like subset: ``==``, ``!=``, ``<``, ``<=``, ``>``,
    ``>=``, ``&&``, ``||``, ``!``, parentheses, field paths, string/number/bool/null literals). In a
    trigger it reads the incoming event as ``event`` (``if_="event.data.amount > 100"``); in
    ``cancel_on``, ``event`` is the run's trigger and ``async`` the incoming event. The executor
    parses it and refuses the registration with a clear message if it is invalid.

    ``match`` (``cancel_on`` only) is Inngest's shorthand for the common case: ``match="data.orderId"``
    means ``event.data.orderId == async.data.orderId``. A trigger has no earlier event to compare
    with, so ``match`` there is refused at decoration time.
    """
    check_event_name(name, "on_event()")
    return EventTrigger(
        event=name, if_=check_expression(if_, "on_event()") or None, match=check_match(match, "on_event()") or None
    )


_CRON_FIELDS = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")),
    ("day of week", 0, 7, ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")),
)
_CRON_ITEM = re.compile(r"(\*|\?|(?P<low>[A-Za-z0-9#]+)(?:-(?P<high>[A-Za-z0-9#]+))?)(?:/(?P<step>\d+))?")
_CRON_SPECIAL = re.compile(r"L|LW|\d+W|\d*L|\d+#[1-5]")
"""Quartz-style extras the executor's cron reader accepts in the day fields (last day, weekday, n-th)."""


def on_cron(schedule: str, timezone: str = "UTC") -> CronTrigger:
    """A schedule trigger: the function runs at every minute the five-field cron ``schedule`` matches
    (``"*/5 * * * *"``, ``"0 9 * * MON-FRI"``), read in the IANA time zone ``timezone``.

    Such a run's ``ctx.event`` is named ``durably/cron``, with data ``{"schedule", "timezone",
    "scheduled_at"}`` (the time it was due). A mistake in the schedule or an unknown time zone raises
    ``ValueError`` here.
    """
    if not isinstance(schedule, str):
        raise TypeError(f"on_cron() takes the schedule as a str, got {schedule!r}")
    fields = schedule.split()
    if len(fields) != len(_CRON_FIELDS):
        raise ValueError(
            f"on_cron({schedule!r}): a schedule has 5 fields (minute hour day-of-month month day-of-week), "
            f"got {len(fields)}"
        )
    for text, field in zip(fields, _CRON_FIELDS, strict=True):
        _check_cron_field(schedule, text, *field)
    if not isinstance(timezone, str):
        raise TypeError(f"on_cron(timezone=...) takes an IANA time zone name, got {timezone!r}")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f'on_cron({schedule!r}): unknown time zone {timezone!r}; use an IANA name like "UTC" or "Europe/Paris"'
        ) from None
    return CronTrigger(schedule=" ".join(fields), timezone=timezone)


def _check_cron_field(schedule: str, text: str, name: str, low: int, high: int, names: tuple[str, ...]) -> None:
    for item in text.split(","):
        found = _CRON_ITEM.fullmatch(item)
        problem = None if found else "is not a value, a range a-b, * or a step /n"
        if found is not None:
            if found["step"] is not None and int(found["step"]) == 0:
                problem = "has a step of 0"
            for value in (found["low"], found["high"]):
                if value is None or value.upper() in names:
                    continue
                if value.isdigit():
                    if not low <= int(value) <= high:
                        problem = f"has {value}, outside {low}-{high}"
                elif not (name.startswith("day") and _CRON_SPECIAL.fullmatch(value.upper())):
                    problem = f"has {value!r}, which is not a valid {name}"
        if problem is not None:
            raise ValueError(f"on_cron({schedule!r}): the {name} field {item!r} {problem}")


def check_match(match: str | None, what: str) -> str:
    """A ``match`` field path (``"data.userId"``), or "" for None; ``ValueError`` naming ``what`` if it
    is not one. Shared by ``on_event(match=...)`` and ``step.wait_for_event(match=...)``."""
    if match is None:
        return ""
    if not isinstance(match, str) or not _FIELD_PATH.fullmatch(match):
        raise ValueError(f'{what}: match must be a dotted field path like "data.userId", got {match!r}')
    if match.partition(".")[0] in ("event", "async"):
        raise ValueError(
            f"{what}: match is the same path inside both events, without an event./async. root "
            f'(like "data.userId"), got {match!r}'
        )
    return match


def check_expression(expression: str | None, what: str) -> str:
    """An ``if_`` expression, or "" for None. Only its type is checked: the executor parses it."""
    if expression is None:
        return ""
    if not isinstance(expression, str) or not expression.strip():
        raise ValueError(f"{what}: if_ must be a non-empty expression str, got {expression!r}")
    return expression


# --- options --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Concurrency:
    """At most ``limit`` executions of the function run at once, across all workers.

    With ``key``, a field path over the triggering event such as ``"event.data.userId"``, the limit
    applies per value of that field (one user's runs queue behind each other, other users' do not).
    Runs over the limit wait their turn; they are not failed. A function takes at most two limits,
    e.g. one overall and one per key.
    """

    limit: int
    key: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.limit, bool) or not isinstance(self.limit, int):
            raise TypeError(f"Concurrency(limit=...) must be an int, got {self.limit!r}")
        if not 1 <= self.limit <= MAX_CONCURRENCY:
            raise ValueError(f"Concurrency(limit=...) must be between 1 and {MAX_CONCURRENCY}, got {self.limit}")
        if self.key is not None and (not isinstance(self.key, str) or not _KEY_PATH.fullmatch(self.key)):
            raise ValueError(
                f'Concurrency(key=...) must be a field path over the event like "event.data.userId", got {self.key!r}'
            )


@dataclass(frozen=True, slots=True, init=False)
class Timeouts:
    """Give up on runs that wait or last too long: the executor cancels them.

    ``start``: a run not started this long after its event arrived (queued behind concurrency limits
    or busy workers) is cancelled. ``finish``: a run still going this long after it started (sleeps
    and waits included) is cancelled. Each is a :data:`durably.Duration` (``"10m"``, a ``timedelta``,
    seconds) of at most one year, or None for no limit. A cancelled run is not a failed one: the
    ``on_failure`` handler does not run.
    """

    start: timedelta | None
    finish: timedelta | None

    def __init__(self, start: Duration | None = None, finish: Duration | None = None) -> None:
        object.__setattr__(self, "start", _timeout("start", start))
        object.__setattr__(self, "finish", _timeout("finish", finish))


def _timeout(name: str, value: Duration | None) -> timedelta | None:
    if value is None:
        return None
    duration = parse_duration(value, what=f"Timeouts({name}=...)", at_most=MAX_DURATION)
    if not duration:
        raise ValueError(f"Timeouts({name}=...) must be longer than 0 (leave it None for no limit)")
    return duration


# --- functions ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class Function:
    """A durable function: what ``@client.function(...)`` returns and ``Worker(functions=[...])`` takes.

    The handler runs many times per run (once per step, replaying finished steps from their saved
    results), so code outside ``step.run`` must be deterministic and free of side effects.
    ``on_failure`` is the function that handles this one's failed runs (id ``<id>-failure``); the
    worker serves it along with this one.
    """

    id: str
    app_id: str
    handler: Handler
    triggers: tuple[Trigger, ...]
    retries: int
    optimize_parallelism: bool
    concurrency: tuple[Concurrency, ...] = ()
    checkpointing: bool = False
    timeouts: Timeouts | None = None
    on_failure: Function | None = None
    cancel_on: tuple[EventTrigger, ...] = ()

    def __repr__(self) -> str:
        return f"<durably.Function {self.app_id}/{self.id}>"


def make_function(
    *,
    app_id: str,
    id: str,
    handler: object,
    trigger: Trigger | Sequence[Trigger] | None,
    retries: int,
    optimize_parallelism: bool,
    concurrency: int | Concurrency | Sequence[Concurrency] | None = None,
    timeouts: Timeouts | None = None,
    on_failure: object = None,
    cancel_on: EventTrigger | Sequence[EventTrigger] | None = None,
    checkpointing: bool = False,
) -> Function:
    """Validate the declaration and build the :class:`Function` (ValueError / TypeError on mistakes)."""
    if not isinstance(id, str) or not _FUNCTION_ID.fullmatch(id):
        raise ValueError(f"function id {id!r} is invalid: use 1 to 128 characters among letters, digits and _ . : / -")
    if isinstance(retries, bool) or not isinstance(retries, int):
        raise TypeError(f"function {id!r}: retries must be an int, not {type(retries).__name__}")
    if not 0 <= retries <= MAX_RETRIES:
        raise ValueError(f"function {id!r}: retries must be between 0 and {MAX_RETRIES}, got {retries}")
    if not isinstance(optimize_parallelism, bool):
        raise TypeError(f"function {id!r}: optimize_parallelism must be a bool")
    if not isinstance(checkpointing, bool):
        raise TypeError(f"function {id!r}: checkpointing must be a bool")
    if timeouts is not None and not isinstance(timeouts, Timeouts):
        raise TypeError(f"function {id!r}: timeouts must be durably.Timeouts(start=..., finish=...), not {timeouts!r}")
    triggers = _triggers(id, trigger)
    rules = _cancel_on(id, cancel_on)
    limits = _concurrency(id, concurrency)
    _check_handler(id, handler)
    return Function(
        id=id,
        app_id=app_id,
        handler=handler,  # type: ignore[arg-type]  # checked by _check_handler
        triggers=triggers,
        retries=retries,
        optimize_parallelism=optimize_parallelism,
        concurrency=limits,
        timeouts=timeouts,
        on_failure=_failure_handler(app_id, id, on_failure, retries, checkpointing),
        cancel_on=rules,
        checkpointing=checkpointing,
    )


def _items(value: object) -> list[object]:
    """A single option value or a list/tuple of them, as a list."""
    return list(value) if isinstance(value, list | tuple) else [value]


def _triggers(function_id: str, trigger: object) -> tuple[Trigger, ...]:
    if trigger is None:
        return ()
    triggers: list[Trigger] = []
    for item in _items(trigger):
        if not isinstance(item, EventTrigger | CronTrigger):
            raise TypeError(
                f"function {function_id!r}: trigger must be durably.on_event(...), durably.on_cron(...) or a list of "
                f"them, not {item!r}"
            )
        if isinstance(item, EventTrigger) and item.match is not None:
            raise ValueError(
                f"function {function_id!r}: the trigger on {item.event!r} has match={item.match!r}, which compares "
                "with the run's trigger event and is only for cancel_on; use if_ to filter a trigger"
            )
        triggers.append(item)
    return tuple(triggers)


def _cancel_on(function_id: str, cancel_on: object) -> tuple[EventTrigger, ...]:
    if cancel_on is None:
        return ()
    rules: list[EventTrigger] = []
    for item in _items(cancel_on):
        if not isinstance(item, EventTrigger):
            raise TypeError(
                f"function {function_id!r}: cancel_on takes durably.on_event(name, match=..., if_=...) rules, "
                f"not {item!r}"
            )
        rules.append(item)
    return tuple(rules)


def _concurrency(function_id: str, concurrency: object) -> tuple[Concurrency, ...]:
    if concurrency is None:
        return ()
    limits: list[Concurrency] = []
    for item in _items(concurrency):
        if isinstance(item, int) and not isinstance(item, bool):
            item = Concurrency(item)
        if not isinstance(item, Concurrency):
            raise TypeError(
                f"function {function_id!r}: concurrency must be an int, durably.Concurrency(limit, key=...) or a "
                f"list of them, not {item!r}"
            )
        limits.append(item)
    if len(limits) > MAX_CONCURRENCY_LIMITS:
        raise ValueError(
            f"function {function_id!r}: at most {MAX_CONCURRENCY_LIMITS} concurrency limits, got {len(limits)}"
        )
    return tuple(limits)


def _failure_handler(
    app_id: str, function_id: str, handler: object, retries: int, checkpointing: bool
) -> Function | None:
    """The ``on_failure`` handler as a function of its own: ``<id>-failure``, no triggers, same retries
    and checkpointing."""
    if handler is None:
        return None
    if len(function_id) + len(FAILURE_SUFFIX) > _MAX_FUNCTION_ID:
        raise ValueError(
            f"function {function_id!r}: with on_failure the id may have at most "
            f"{_MAX_FUNCTION_ID - len(FAILURE_SUFFIX)} characters (the handler's id is the id plus {FAILURE_SUFFIX!r})"
        )
    return make_function(
        app_id=app_id,
        id=function_id + FAILURE_SUFFIX,
        handler=handler,
        trigger=None,
        retries=retries,
        optimize_parallelism=False,
        checkpointing=checkpointing,
    )


def _check_handler(function_id: str, handler: object) -> None:
    if not callable(handler):
        raise TypeError(f"function {function_id!r}: the decorated object is not callable: {handler!r}")
    if not inspect.iscoroutinefunction(handler):
        raise TypeError(
            f"function {function_id!r}: the handler must be an `async def` function taking one "
            f"argument (ctx: durably.Context); {getattr(handler, '__qualname__', handler)!r} is not async"
        )
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):  # some builtins have none; nothing more to check
        return
    try:
        signature.bind(object())
    except TypeError:
        raise TypeError(
            f"function {function_id!r}: the handler must take exactly one argument (ctx: durably.Context), "
            f"its signature is {signature}"
        ) from None
