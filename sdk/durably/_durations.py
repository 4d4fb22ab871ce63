"""Durations and points in time as users write them, turned into what the executor schedules by.

Sleeps, waits, invoke timeouts, function timeouts and ``RetryAfterError`` all take the same kinds of
value, so they are read in one place and a mistake gets the same message wherever it is made:

* a :data:`Duration` is a string (``"500ms"``, ``"30s"``, ``"10m"``, ``"2h"``, ``"7d"``, ``"1w"``,
  or parts together such as ``"1h30m"``), a ``timedelta``, or a number of seconds;
* a point in time is a timezone-aware ``datetime`` or an ISO 8601 string with an offset
  (``"2030-01-02T03:04:05Z"``, ``"2030-01-02T04:04:05+01:00"``). A naive one is refused: the worker
  and the executor may not share a local time zone, so its meaning would be a guess.

Nothing waits longer than :data:`MAX_DURATION`, one year, as in Inngest (366 days, so that a year
that holds a 29 February fits); the executor refuses anything further ahead.
"""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime, timedelta

Duration = str | timedelta | int | float
"""How long: ``"30s"``/``"10m"``/``"2h"``/``"7d"``/``"1h30m"``/``"500ms"``, a ``timedelta``, or seconds."""

MAX_DURATION = timedelta(days=366)
"""The longest sleep, wait, invoke timeout or function timeout: one year (Inngest's 366 days)."""

_UNITS_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_PART = re.compile(r"\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h|d|w)", re.IGNORECASE)
_ONE_MS = timedelta(milliseconds=1)


def parse_duration(value: Duration, *, what: str = "duration", at_most: timedelta | None = None) -> timedelta:
    """``value`` as a ``timedelta``.

    ``what`` starts the error messages (say which argument of which call it is). ``ValueError`` for a
    malformed string, a negative, NaN or infinite value, or one longer than ``at_most`` when given;
    ``TypeError`` for anything that is not a :data:`Duration`.
    """
    if isinstance(value, timedelta):
        duration = value
    elif isinstance(value, str):
        duration = _timedelta_ms(_parse_text(value, what), what, value)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError(f"{what}: {value!r} is not a number of seconds")
        if value < 0:
            raise ValueError(f"{what}: {value!r} is negative")
        duration = _timedelta_ms(value * 1000, what, value)
    else:
        raise TypeError(
            f'{what}: expected a duration ("30s", "10m", "2h", "7d", "1h30m", "500ms"), a timedelta or a number of '
            f"seconds, got {type(value).__name__} {value!r}"
        )
    if duration < timedelta(0):
        raise ValueError(f"{what}: {value!r} is negative")
    if at_most is not None and duration > at_most:
        raise ValueError(f"{what}: {value!r} is longer than {_describe(at_most)}")
    return duration


def parse_instant(value: datetime | str, *, what: str = "time") -> datetime:
    """``value`` as an aware ``datetime``: a ``datetime`` with a time zone, or an ISO 8601 string with an
    offset. ``ValueError`` for a naive or malformed one, ``TypeError`` for anything else."""
    if isinstance(value, str):
        try:
            instant = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"{what}: {value!r} is not an ISO 8601 date and time, like 2030-01-02T03:04:05Z") from None
    elif isinstance(value, datetime):
        instant = value
    else:
        raise TypeError(
            f"{what}: expected a timezone-aware datetime or an ISO 8601 string, got {type(value).__name__} {value!r}"
        )
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(
            f"{what}: {value!r} has no time zone; give an aware datetime (e.g. datetime.now(UTC) + ...) or an "
            "ISO 8601 string with an offset (…Z or …+02:00)"
        )
    return instant


def to_ms(duration: timedelta) -> int:
    """Whole milliseconds, rounded up: a sleep may end a little late, never early."""
    return -(-duration // _ONE_MS)


def instant_ms(instant: datetime) -> int:
    """An aware ``datetime`` as milliseconds since the Unix epoch, rounded up."""
    return to_ms(instant - _EPOCH)


def now_ms() -> int:
    """Milliseconds since the Unix epoch, now."""
    return time.time_ns() // 1_000_000


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _parse_text(text: str, what: str) -> float:
    """Milliseconds in a duration string."""
    source = text.strip()
    if source.startswith("-"):
        raise ValueError(f"{what}: {text!r} is negative")
    total = 0.0
    position = 0
    while position < len(source):
        part = _PART.match(source, position)
        if part is None:
            break
        total += float(part.group(1)) * _UNITS_MS[part.group(2).lower()]
        position = part.end()
    if not source or position != len(source):
        hint = " (add a unit: 30 -> 30s)" if _is_number(source) else ""
        raise ValueError(f'{what}: {text!r} is not a duration like "500ms", "30s", "10m", "2h", "7d" or "1h30m"{hint}')
    return total


def _timedelta_ms(ms: float, what: str, value: object) -> timedelta:
    try:
        return timedelta(milliseconds=ms)
    except OverflowError:
        raise ValueError(f"{what}: {value!r} is too long") from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _describe(duration: timedelta) -> str:
    return "one year (366 days)" if duration == MAX_DURATION else str(duration)
