"""Declaring functions: triggers, options, and the checks that catch mistakes at decoration time.

A mistake found when the module is imported (a sync handler, a bad id, ``retries=100``) costs a
traceback pointing at the decorator; found by the executor later it would cost a failed run.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from durably._context import Context

Handler = Callable[["Context"], Awaitable[Any]]
"""An ``async def handler(ctx: durably.Context)``."""

MAX_RETRIES = 20
_FUNCTION_ID = re.compile(r"[A-Za-z0-9_.:/-]{1,128}")
_MAX_EVENT_NAME = 255


@dataclass(frozen=True, slots=True)
class EventTrigger:
    """Run the function once for every event named ``event``. Build it with :func:`on_event`."""

    event: str


def on_event(name: str) -> EventTrigger:
    """A trigger: the function runs once for every event with this name, e.g. ``"order/placed"``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"on_event() needs a non-empty event name, got {name!r}")
    if len(name) > _MAX_EVENT_NAME:
        raise ValueError(f"event names are at most {_MAX_EVENT_NAME} characters, got {len(name)}")
    return EventTrigger(event=name)


@dataclass(frozen=True, slots=True, eq=False)
class Function:
    """A durable function: what ``@client.function(...)`` returns and ``Worker(functions=[...])`` takes.

    The handler runs many times per run (once per step, replaying finished steps from their saved
    results), so code outside ``step.run`` must be deterministic and free of side effects.
    """

    id: str
    app_id: str
    handler: Handler
    triggers: tuple[EventTrigger, ...]
    retries: int
    optimize_parallelism: bool

    def __repr__(self) -> str:
        return f"<durably.Function {self.app_id}/{self.id}>"


def make_function(
    *,
    app_id: str,
    id: str,
    handler: object,
    trigger: EventTrigger | list[EventTrigger] | None,
    retries: int,
    optimize_parallelism: bool,
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
    triggers = _triggers(id, trigger)
    _check_handler(id, handler)
    return Function(
        id=id,
        app_id=app_id,
        handler=handler,  # type: ignore[arg-type]  # checked by _check_handler
        triggers=triggers,
        retries=retries,
        optimize_parallelism=optimize_parallelism,
    )


def _triggers(function_id: str, trigger: object) -> tuple[EventTrigger, ...]:
    if trigger is None:
        return ()
    items = trigger if isinstance(trigger, list | tuple) else [trigger]
    for item in items:
        if not isinstance(item, EventTrigger):
            raise TypeError(
                f"function {function_id!r}: trigger must be durably.on_event(...) or a list of them, not {item!r}"
            )
    return tuple(items)


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
