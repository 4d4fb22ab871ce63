"""The JSON rules for every user value durably stores: step results, handler outputs, event data.

A value is accepted if it is None, bool, int, a finite float, str, list, tuple (it comes back as a
list, as in JavaScript), or a dict with str keys, recursively. Subclasses of those types are accepted
and come back as the base type. Anything else is refused *before* it is saved, with a message naming
where inside the value the problem is (``$.items[2] is a set; ...``): an error at save time is easy to
fix, a silently changed value on replay is not.

The check walks the value with an explicit stack (no recursion, so deep values cannot overflow the
interpreter stack), visits each node once and only builds a path string when it refuses something.
Encoding then uses orjson, which writes a 4 MB result in a fraction of a millisecond where the
C encoder of :mod:`json` takes several; what orjson declines (an int over 64 bits, a float
subclass, a lone surrogate, nesting past its 254 levels) goes to :mod:`json`'s encoder with
compact separators, which decides as before. Both write compact UTF-8 JSON of the same value.

``output_type=`` support lives here too: instances of a dataclass or of a pydantic model are turned
into plain JSON values on the way in, and saved JSON is rebuilt into that type on the way out.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import datetime as _dt
import decimal
import enum
import functools
import inspect
import json
import math
import types
import typing
from typing import Any

import orjson

MAX_DEPTH = 500
"""Deepest nesting accepted. Deeper values would make :mod:`json` (which recurses) fail on load."""

_ENCODER = json.JSONEncoder(
    ensure_ascii=False,
    allow_nan=False,
    check_circular=False,  # check() has refused cycles already
    separators=(",", ":"),
)

_Path = tuple["_Path", str | int] | None
"""A path inside a value as a linked list (parent, key), turned into text only on error."""

_EXIT = object()


class JsonValueError(ValueError):
    """A value JSON cannot represent. ``path`` is ``$``-rooted (``$.a[2]``), ``reason`` says why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path} {reason}")
        self.path = path
        self.reason = reason


def check(value: object) -> None:
    """Raise :class:`JsonValueError` if ``value`` breaks the JSON rules; return None otherwise."""
    tv = type(value)
    if tv is str or tv is int or tv is bool or value is None:
        return
    if tv is float:
        if not math.isfinite(value):  # type: ignore[arg-type]
            raise JsonValueError("$", _describe(value))
        return
    active: set[int] = set()  # ids of the containers on the path to the current node
    stack: list[tuple[object, Any, int]] = [(value, None, 0)]
    pop = stack.pop
    push = stack.append
    while stack:
        obj, path, depth = pop()
        if obj is _EXIT:
            active.discard(path)
            continue
        if isinstance(obj, dict):
            items: collections.abc.Iterable[tuple[Any, object]] = obj.items()
        elif isinstance(obj, list | tuple):
            items = enumerate(obj)
        elif isinstance(obj, str | int) or obj is None:  # subclasses: str enums, IntEnum, bool
            continue
        elif isinstance(obj, float) and math.isfinite(obj):
            continue
        else:
            raise JsonValueError(format_path(path), _describe(obj))
        oid = id(obj)
        if oid in active:
            raise JsonValueError(format_path(path), "contains itself (a circular reference)")
        if depth >= MAX_DEPTH:
            raise JsonValueError(format_path(path), f"is nested more than {MAX_DEPTH} levels deep")
        active.add(oid)
        push((_EXIT, oid, 0))
        is_dict = isinstance(obj, dict)
        for key, item in items:
            if is_dict and type(key) is not str and not isinstance(key, str):
                raise JsonValueError(
                    format_path(path),
                    f"has a key {key!r} of type {type(key).__name__}; JSON object keys must be strings",
                )
            ti = type(item)
            if ti is str or ti is int or ti is bool or item is None:
                continue
            if ti is float and math.isfinite(item):  # type: ignore[arg-type]
                continue
            push((item, (path, key), depth + 1))


def encode(value: object) -> bytes:
    """``value`` as compact UTF-8 JSON, after :func:`check`; raises :class:`JsonValueError`."""
    check(value)
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        pass
    try:
        text = _ENCODER.encode(value)
    except (ValueError, TypeError, RecursionError) as exc:  # e.g. an int over the 4300-digit limit
        raise JsonValueError("$", f"cannot be encoded as JSON: {exc}") from exc
    try:
        return text.encode()
    except UnicodeEncodeError as exc:
        raise JsonValueError(_find_unencodable_string(value), _SURROGATE_REASON) from exc


def decode(data: bytes) -> Any:
    """The value saved as ``data``; empty bytes (an unset protobuf field) mean None."""
    return json.loads(data) if data else None


def is_scalar(value: object) -> bool:
    """Whether a JSON value is immutable, so one decoded copy may be handed out many times (and it is
    equal to what its encoding decodes to: strings, ints, floats and booleans round-trip exactly)."""
    return value is None or type(value) in _SCALARS


_SCALARS = frozenset({str, int, float, bool})


def format_path(path: _Path) -> str:
    """``$``-rooted text of a linked path: ``$.items[2]``, ``$["a key"]``."""
    keys: list[str | int] = []
    while path is not None:
        path, key = path
        keys.append(key)
    out = ["$"]
    for key in reversed(keys):
        if isinstance(key, int):
            out.append(f"[{key}]")
        elif key.isidentifier():
            out.append(f".{key}")
        else:
            out.append(f"[{json.dumps(key, ensure_ascii=False)}]")
    return "".join(out)


_SURROGATE_REASON = "is a string with an unpaired surrogate code point, which UTF-8 cannot encode"


def _find_unencodable_string(value: object) -> str:
    """Path of the first string (value or dict key) that UTF-8 cannot encode. Slow, used only on error."""
    stack: list[tuple[object, Any]] = [(value, None)]
    while stack:
        obj, path = stack.pop()
        if isinstance(obj, str):
            if not _utf8_ok(obj):
                return format_path(path)
        elif isinstance(obj, dict):
            for key, item in obj.items():
                if not _utf8_ok(key):
                    return format_path(path) + f" (key {key!r})"
                stack.append((item, (path, key)))
        elif isinstance(obj, list | tuple):
            stack.extend((item, (path, i)) for i, item in enumerate(obj))
    return "$"


def _utf8_ok(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _describe(obj: object) -> str:
    """Why ``obj`` is refused, with a hint at what to return instead."""
    name = type(obj).__qualname__
    if isinstance(obj, float):
        kind = "NaN" if math.isnan(obj) else ("Infinity" if obj > 0 else "-Infinity")
        return f"is {kind}, which JSON cannot represent"
    if isinstance(obj, set | frozenset):
        return "is a set; JSON has no sets (return a list)"
    if isinstance(obj, bytes | bytearray | memoryview):
        return "is bytes; JSON has no binary type (decode or base64-encode it)"
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return f"is a {name} dataclass instance; return a dict, or pass output_type={name} to step.run"
    if is_model_type(type(obj)):
        return f"is a {name} model instance; return a dict, or pass output_type={name} to step.run"
    if isinstance(obj, _dt.date | _dt.time | _dt.timedelta):
        hint = "its total_seconds()" if isinstance(obj, _dt.timedelta) else "its isoformat() string"
        return f"is a {name}; JSON has no such type (return {hint})"
    if isinstance(obj, decimal.Decimal):
        return "is a Decimal; return it as a str or a float"
    if isinstance(obj, enum.Enum):
        return f"is the enum member {obj!r}; return its .value"
    if inspect.iscoroutine(obj) or inspect.isawaitable(obj):
        return f"is an awaitable ({name}); did you forget an await?"
    if isinstance(obj, type):
        return f"is a class ({obj.__qualname__})"
    if callable(obj):
        return f"is a function ({getattr(obj, '__qualname__', name)})"
    if isinstance(obj, collections.abc.Iterator):
        return f"is an iterator ({name}); return a list"
    return f"is a {name} object; JSON represents only None, bool, int, float, str, list, tuple and dict with str keys"


# --- output_type: dataclasses and pydantic models -------------------------------------------------


def is_model_type(tp: object) -> bool:
    """True for pydantic-style model classes (duck-typed, so pydantic stays an optional dependency)."""
    return isinstance(tp, type) and hasattr(tp, "model_validate") and hasattr(tp, "model_dump")


def check_output_type(output_type: object) -> None:
    """Refuse an ``output_type`` that is neither a dataclass nor a pydantic model class."""
    if isinstance(output_type, type) and (dataclasses.is_dataclass(output_type) or is_model_type(output_type)):
        return
    raise TypeError(f"output_type must be a dataclass or a pydantic model class, not {output_type!r}")


def to_plain(value: object, output_type: type[Any] | None) -> object:
    """An ``output_type`` instance as plain JSON values; any other value unchanged."""
    if output_type is not None and isinstance(value, output_type):
        if is_model_type(output_type):
            return value.model_dump(mode="json")
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return dataclasses.asdict(value)
    return value


def rehydrate(value: Any, output_type: type[Any] | None) -> Any:
    """Build ``output_type`` from saved JSON (nested dataclass fields included); None stays None."""
    if output_type is None or value is None:
        return value
    try:
        return _build(value, output_type)
    except Exception as exc:
        raise TypeError(
            f"the saved JSON does not fit output_type={output_type.__qualname__}: {type(exc).__name__}: {exc}"
        ) from exc


def _build(value: Any, tp: Any) -> Any:
    if value is None:
        return None
    if isinstance(tp, type):
        if is_model_type(tp):
            return tp.model_validate(value)  # type: ignore[attr-defined]
        if dataclasses.is_dataclass(tp) and isinstance(value, dict):
            kwargs = {name: _build(value[name], hint) for name, hint in _init_fields(tp) if name in value}
            return tp(**kwargs)
        if tp is tuple and isinstance(value, list):
            return tuple(value)
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        return _build(value, args[0])
    if origin is typing.Union or origin is types.UnionType:
        options = [arg for arg in args if arg is not type(None)]
        return _build(value, options[0]) if len(options) == 1 else value
    if origin in (list, collections.abc.Sequence, collections.abc.MutableSequence) and isinstance(value, list):
        return [_build(item, args[0]) for item in value] if args else value
    if origin is tuple and isinstance(value, list):
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_build(item, args[0]) for item in value)
        if args:
            return tuple(_build(item, arg) for item, arg in zip(value, args, strict=False))
        return tuple(value)
    if origin in (dict, collections.abc.Mapping, collections.abc.MutableMapping) and isinstance(value, dict):
        return {key: _build(item, args[1]) for key, item in value.items()} if len(args) == 2 else value
    return value


@functools.cache
def _init_fields(cls: type[Any]) -> tuple[tuple[str, Any], ...]:
    """(name, resolved type) of the ``__init__`` fields of a dataclass, resolved once per class."""
    try:
        hints = typing.get_type_hints(cls, include_extras=True)
    except Exception:  # unresolvable forward references: rebuild this level only
        hints = {}
    out = []
    for field in dataclasses.fields(cls):
        if field.init:
            hint = hints.get(field.name, field.type)
            out.append((field.name, Any if isinstance(hint, str) else hint))
    return tuple(out)
