"""The JSON rules (durably._json): what is accepted, how refusals name the bad part, rehydration."""

from __future__ import annotations

import collections
import dataclasses
import datetime
import decimal
import enum
import json
from typing import Any

import pytest
from durably._json import JsonValueError, check, decode, encode, rehydrate, to_plain


class Color(enum.Enum):
    RED = 1


class Level(enum.IntEnum):
    HIGH = 3


class Mode(enum.StrEnum):
    FAST = "fast"


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (None, b"null"),
        (True, b"true"),
        (0, b"0"),
        (-12345678901234567890, b"-12345678901234567890"),
        (1.5, b"1.5"),
        ("héllo ☃", '"héllo ☃"'.encode()),
        ([1, [2, [3]]], b"[1,[2,[3]]]"),
        ((1, (2,)), b"[1,[2]]"),
        ({"a": {"b": None}, "c": [True, 1.0]}, b'{"a":{"b":null},"c":[true,1.0]}'),
        ({}, b"{}"),
        (collections.OrderedDict(z=1), b'{"z":1}'),
        (Level.HIGH, b"3"),
        (Mode.FAST, b'"fast"'),
    ],
)
def test_accepted_values_encode_compactly(value: Any, encoded: bytes) -> None:
    assert encode(value) == encoded


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({1, 2}, "$ is a set"),
        ({"items": [1, 2, {3}]}, "$.items[2] is a set"),
        (frozenset(), "$ is a set"),
        (b"x", "$ is bytes"),
        ({"b": bytearray(b"x")}, "$.b is bytes"),
        (float("nan"), "$ is NaN"),
        ({"x": [float("-inf")]}, "$.x[0] is -Infinity"),
        ({"f": print}, "$.f is a function"),
        ({"f": lambda: 1}, "$.f is a function"),
        ({"k": object()}, "$.k is a object object"),
        ({"a key": {2: "v"}}, '$["a key"] has a key 2 of type int'),
        ({("t",): 1}, "$ has a key ('t',) of type tuple"),
        ({"d": datetime.datetime(2024, 1, 1)}, "$.d is a datetime"),
        ({"d": decimal.Decimal("1.1")}, "$.d is a Decimal"),
        ({"c": Color.RED}, "$.c is the enum member"),
        ({"t": int}, "$.t is a class (int)"),
        ({"0": iter([1])}, '$["0"] is an iterator'),
    ],
)
def test_refusals_name_the_path(value: Any, message: str) -> None:
    with pytest.raises(JsonValueError) as caught:
        encode(value)
    assert str(caught.value).startswith(message), str(caught.value)


def test_coroutine_refusal_hints_at_a_missing_await() -> None:
    async def later() -> int:
        return 1

    coroutine = later()
    try:
        with pytest.raises(JsonValueError, match="forget an await"):
            check({"x": coroutine})
    finally:
        coroutine.close()


def test_circular_references_are_refused_but_shared_ones_are_fine() -> None:
    shared = [1, 2]
    assert encode({"a": shared, "b": shared, "c": [shared, shared]}) == b'{"a":[1,2],"b":[1,2],"c":[[1,2],[1,2]]}'
    cyclic: dict[str, Any] = {"x": {}}
    cyclic["x"]["y"] = cyclic
    with pytest.raises(JsonValueError, match=r"^\$\.x\.y contains itself"):
        encode(cyclic)


def test_deep_values_are_refused_without_blowing_the_stack() -> None:
    deep: list[Any] = []
    node = deep
    for _ in range(100_000):
        child: list[Any] = []
        node.append(child)
        node = child
    with pytest.raises(JsonValueError, match="nested more than 500 levels"):
        encode(deep)
    shallow: list[Any] = []
    node = shallow
    for _ in range(400):
        child = []
        node.append(child)
        node = child
    assert decode(encode(shallow)) == shallow


def test_unpaired_surrogates_are_refused_with_their_path() -> None:
    with pytest.raises(JsonValueError, match=r"^\$\.a\[1\] is a string with an unpaired surrogate"):
        encode({"a": ["ok", "bad \ud800"]})


def test_big_values_check_fast_enough() -> None:
    value = {"rows": [{"id": i, "name": f"n{i}", "tags": ["a", "b"], "score": i / 3} for i in range(50_000)]}
    assert json.loads(encode(value)) == value


def test_decode_treats_empty_bytes_as_null() -> None:
    assert decode(b"") is None
    assert decode(b'{"a":1}') == {"a": 1}


@dataclasses.dataclass
class Inner:
    x: int


@dataclasses.dataclass
class Outer:
    inner: Inner
    many: list[Inner]
    by_key: dict[str, Inner]
    pair: tuple[int, str]
    maybe: Inner | None = None


def test_dataclass_round_trip_rebuilds_nested_types() -> None:
    value = Outer(Inner(1), [Inner(2)], {"k": Inner(3)}, (4, "five"), None)
    plain = to_plain(value, Outer)
    assert plain == {
        "inner": {"x": 1},
        "many": [{"x": 2}],
        "by_key": {"k": {"x": 3}},
        "pair": (4, "five"),
        "maybe": None,
    }
    assert rehydrate(decode(encode(plain)), Outer) == value


def test_rehydrate_ignores_unknown_keys_and_reports_missing_ones() -> None:
    assert rehydrate({"x": 1, "gone": 2}, Inner) == Inner(1)
    with pytest.raises(TypeError, match="does not fit output_type=Inner"):
        rehydrate({}, Inner)
    assert rehydrate(None, Inner) is None


class Ratio(float):
    pass


@pytest.mark.parametrize(
    "value",
    [
        [1e-07, 1e16, 0.1, -0.0, 5e-324, 1.7976931348623157e308, 123456789.123456789],
        [2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1],
        'tab\tnewline\nquote"backslash\\ nul\x00 del\x7f é ☃ 😀 \u2028',
        {"ünï": ["\x1f", "/"], "": {"nested": [True, False, None]}},
        Ratio(0.25),
        {"ratio": Ratio(2.5), "level": Level.HIGH, "mode": Mode.FAST},
    ],
)
def test_encode_writes_what_the_stdlib_encoder_reads_back_the_same(value: Any) -> None:
    """orjson writes most values and the stdlib encoder the rest (big ints, float subclasses): either
    way the bytes decode to the value the stdlib's own encoding decodes to, floats bit for bit."""
    ours = json.loads(encode(value))
    stdlib = json.loads(json.dumps(value, ensure_ascii=False, separators=(",", ":")))
    assert ours == stdlib
    assert repr(ours) == repr(stdlib)  # -0.0 and float digits included
