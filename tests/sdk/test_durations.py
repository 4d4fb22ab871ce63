"""durably._durations: the one reader of durations and points in time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from durably._durations import MAX_DURATION, instant_ms, parse_duration, parse_instant, to_ms


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("10m", timedelta(minutes=10)),
        ("2h", timedelta(hours=2)),
        ("7d", timedelta(days=7)),
        ("1w", timedelta(weeks=1)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        (" 1h 30m ", timedelta(hours=1, minutes=30)),
        ("2H", timedelta(hours=2)),
        ("500ms", timedelta(milliseconds=500)),
        ("1.5s", timedelta(seconds=1.5)),
        ("0s", timedelta(0)),
        (timedelta(minutes=3), timedelta(minutes=3)),
        (90, timedelta(seconds=90)),
        (0.25, timedelta(milliseconds=250)),
        (0, timedelta(0)),
    ],
)
def test_parse_duration(value: Any, expected: timedelta) -> None:
    assert parse_duration(value) == expected


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        ("-5s", ValueError, "'-5s' is negative"),
        (-0.5, ValueError, "negative"),
        (timedelta(seconds=-1), ValueError, "negative"),
        ("", ValueError, "not a duration"),
        ("5 minutes", ValueError, "not a duration"),
        ("1y", ValueError, "not a duration"),
        ("30", ValueError, "add a unit"),
        ("s", ValueError, "not a duration"),
        (float("inf"), ValueError, "not a number of seconds"),
        (10**30, ValueError, "too long"),
        (None, TypeError, "expected a duration"),
        (True, TypeError, "expected a duration"),
        ([1], TypeError, "expected a duration"),
    ],
)
def test_parse_duration_errors(value: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        parse_duration(value, what="sleep")


def test_the_bound_is_asked_for_by_the_caller() -> None:
    assert parse_duration("400d") == timedelta(days=400)
    assert parse_duration("366d", at_most=MAX_DURATION) == MAX_DURATION
    with pytest.raises(ValueError, match=r"^x: '366d1ms' is longer than one year \(366 days\)$"):
        parse_duration("366d1ms", what="x", at_most=MAX_DURATION)
    with pytest.raises(ValueError, match="longer than 0:01:00"):
        parse_duration("2m", at_most=timedelta(minutes=1))


def test_milliseconds_round_up() -> None:
    assert to_ms(timedelta(microseconds=1)) == 1
    assert to_ms(timedelta(milliseconds=1500)) == 1500
    assert to_ms(timedelta(0)) == 0
    assert instant_ms(datetime(1970, 1, 1, 0, 0, 1, 1, tzinfo=UTC)) == 1001


@pytest.mark.parametrize(
    "value",
    [
        datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),
        datetime(2030, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2))),
        "2030-01-02T03:04:05Z",
        "2030-01-02T03:04:05+00:00",
        "2030-01-01T22:04:05-05:00",
    ],
)
def test_parse_instant(value: Any) -> None:
    assert parse_instant(value) == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (datetime(2030, 1, 2), ValueError, "no time zone"),
        ("2030-01-02T03:04:05", ValueError, "no time zone"),
        ("2030-01-02", ValueError, "no time zone"),
        ("tomorrow", ValueError, "not an ISO 8601"),
        (1_900_000_000, TypeError, "aware datetime"),
    ],
)
def test_parse_instant_errors(value: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        parse_instant(value, what="when")
