"""The small CEL-like language of `if_` filters on waits, cancellations and triggers.

Inngest lets a wait (`step.wait_for_event(..., if_=...)`), a `cancel_on` rule and an event
trigger carry an expression such as `async.data.userId == event.data.userId && async.data.n > 3`.
In a wait or cancellation `event` is the run's triggering event and `async` the incoming candidate;
in a trigger only `event` (the incoming event) exists. Expressions come from user code, so they are
parsed by hand into a tree and evaluated by closures compiled from it; nothing is ever `eval`-ed.

Grammar, lowest precedence first::

    or       := and ("||" and)*
    and      := equality ("&&" equality)*
    equality := relation (("==" | "!=") relation)?          # comparisons do not chain
    relation := unary (("<" | "<=" | ">" | ">=") unary)?
    unary    := ("!" | "-") unary | primary
    primary  := "(" or ")" | literal | path
    path     := root ("." name | "[" string "]" | "[" integer "]")*
    literal  := string | number | true | false | null | "[" literals "]" | "{" string ":" literal, ... "}"

Strings take single or double quotes and JSON's escapes plus `\\'`. List and map literals hold
constants only; they exist so that interpolating a whole object (`event.data`) can be written back.

Semantics, chosen so that a rule never throws at evaluation time and never fires by accident:

- `==` / `!=` compare JSON values: `1 == 1.0` is true, `true == 1` is false, values of different
  types are simply unequal.
- `<`, `<=`, `>`, `>=` compare numbers with numbers and strings with strings; otherwise false.
- A path that does not exist (absent key, index out of range, field of a non-object) gives a
  *missing* value. **Every comparison involving a missing value is false, `!=` included**, so
  `async.data.x != "a"` does not match an event without `x`, and `async.data.x == null` is false
  when `x` is absent (it is true only when `x` is present and null). Inngest/CEL reach the same
  outcome by treating the missing field as an error that makes the expression false.
- `&&` / `||` short-circuit and count an operand only when it is the boolean `true`;
  `!x` is true only when `x` is `false`; `-x` of a non-number is missing.
- The whole expression matches only if it evaluates to the boolean `true`.

Parsing folds constant parts, and `Expression.interpolate` substitutes the fixed trigger event
before folding, so a wait stores only what still depends on `async`, and a rule the trigger event
can never satisfy becomes exactly `false` (Inngest creates no cancellation pause for those).
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

MAX_LENGTH = 4096
MAX_DEPTH = 64

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"\d+(\.\d+)?([eE][+-]?\d+)?")
_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "/": "/", "n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}
_TWO_CHAR = ("||", "&&", "==", "!=", "<=", ">=")
_ONE_CHAR = "<>!-()[].{},:"
_KEYWORDS: dict[str, object] = {"true": True, "false": False, "null": None}
_MISTAKES = {"=": "use == to compare", "&": "use && for 'and'", "|": "use || for 'or'"}


class ExpressionError(ValueError):
    """An expression that cannot be used; `position` (0-based, or None) points at the culprit."""

    def __init__(self, message: str, source: str = "", position: int | None = None) -> None:
        self.message, self.source, self.position = message, source, position
        where = "" if position is None else f" at position {position}"
        start = max(0, (position or 0) - 40)
        shown = source if len(source) <= 80 else ("…" if start else "") + source[start : start + 80] + "…"
        super().__init__(f"{message}{where}" + (f" in {shown!r}" if source.strip() else ""))


class _Missing:
    """The value of a path that does not exist; unequal to everything, itself included."""

    def __repr__(self) -> str:
        return "<missing>"


MISSING: object = _Missing()


# --- the tree -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lit:
    value: object


@dataclass(frozen=True)
class Path:
    root: str
    segments: tuple[str | int, ...]


@dataclass(frozen=True)
class Unary:
    op: str  # "!" or "-"
    operand: Node


@dataclass(frozen=True)
class Compare:
    op: str  # "==", "!=", "<", "<=", ">", ">="
    left: Node
    right: Node


@dataclass(frozen=True)
class Junction:
    """`a && b && c` (or `||`) as one node: flat, so long chains do not make the tree deep."""

    op: str  # "&&" or "||"
    operands: tuple[Node, ...]


Node = Lit | Path | Unary | Compare | Junction


# --- semantics (shared by evaluation and constant folding) --------------------------------------


def _same(a: object, b: object) -> bool:
    """JSON equality: numbers by value, bool never equal to a number, containers element-wise."""
    ta, tb = type(a), type(b)
    if ta is tb:
        if ta is list:
            assert isinstance(a, list) and isinstance(b, list)
            return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
        if ta is dict:
            assert isinstance(a, dict) and isinstance(b, dict)
            return a.keys() == b.keys() and all(_same(v, b[k]) for k, v in a.items())
        return a is not MISSING and a == b
    return (ta is int or ta is float) and (tb is int or tb is float) and a == b


def _unequal(a: object, b: object) -> bool:
    return a is not MISSING and b is not MISSING and not _same(a, b)


def _ordering(compare: Callable[[Any, Any], Any]) -> Callable[[object, object], bool]:
    def test(a: object, b: object) -> bool:
        if isinstance(a, str):
            return isinstance(b, str) and bool(compare(a, b))
        numbers = isinstance(a, int | float) and isinstance(b, int | float)
        return numbers and type(a) is not bool and type(b) is not bool and bool(compare(a, b))

    return test


_COMPARISONS: dict[str, Callable[[object, object], bool]] = {
    "==": _same,
    "!=": _unequal,
    "<": _ordering(operator.lt),
    "<=": _ordering(operator.le),
    ">": _ordering(operator.gt),
    ">=": _ordering(operator.ge),
}


def _negate(value: object) -> object:
    if isinstance(value, int | float) and type(value) is not bool:
        return -value
    return MISSING


_UNARY: dict[str, Callable[[object], object]] = {"!": lambda value: value is False, "-": _negate}


# --- building nodes: every constructor folds what is already known ------------------------------


_MIRRORED = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


def _unary(op: str, operand: Node) -> Node:
    return Lit(_UNARY[op](operand.value)) if isinstance(operand, Lit) else Unary(op, operand)


def _compare(op: str, left: Node, right: Node) -> Node:
    if isinstance(left, Lit) and isinstance(right, Lit):
        return Lit(_COMPARISONS[op](left.value, right.value))
    if (isinstance(left, Lit) and left.value is MISSING) or (isinstance(right, Lit) and right.value is MISSING):
        return Lit(False)
    if isinstance(left, Lit):  # the constant goes right: one canonical form, one fast path in _compile
        return Compare(_MIRRORED[op], right, left)
    return Compare(op, left, right)


def _is_boolean(node: Node) -> bool:
    return isinstance(node, Compare | Junction) or (isinstance(node, Unary) and node.op == "!")


def _junction(op: str, operands: list[Node]) -> Node:
    """Flatten, then drop constants: for `&&` a non-true constant decides, `true` is neutral."""
    deciding = op == "||"  # the constant truth value that settles the whole junction
    kept: list[Node] = []
    for node in operands:
        for part in node.operands if isinstance(node, Junction) and node.op == op else (node,):
            if isinstance(part, Lit):
                if (part.value is True) == deciding:
                    return Lit(deciding)
            else:
                kept.append(part)
    if not kept:
        return Lit(not deciding)
    if len(kept) == 1:
        if _is_boolean(kept[0]):
            return kept[0]
        kept.insert(0, Lit(not deciding))  # `true && x` is true only when x is true, unlike `x`
    return Junction(op, tuple(kept))


# --- tokens and parsing -------------------------------------------------------------------------


class _Token(NamedTuple):
    kind: str  # "str", "num", "name", "op", "end"
    text: str
    value: object
    pos: int


def _tokenize(source: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(source)
    while i < n:
        c = source[i]
        if c in " \t\r\n":
            i += 1
        elif c in "\"'":
            value, end = _scan_string(source, i)
            tokens.append(_Token("str", source[i:end], value, i))
            i = end
        elif c in "0123456789":
            match = _NUMBER.match(source, i)
            assert match is not None
            text = match.group()
            number = float(text) if match.group(1) or match.group(2) else int(text)
            if number in (float("inf"), float("-inf")):
                raise ExpressionError("number too large", source, i)
            tokens.append(_Token("num", text, number, i))
            i = match.end()
        elif (match := _IDENTIFIER.match(source, i)) is not None:
            tokens.append(_Token("name", match.group(), match.group(), i))
            i = match.end()
        elif source.startswith(_TWO_CHAR, i):
            tokens.append(_Token("op", source[i : i + 2], None, i))
            i += 2
        elif c in _ONE_CHAR:
            tokens.append(_Token("op", c, None, i))
            i += 1
        else:
            raise ExpressionError(_MISTAKES.get(c, f"unexpected character {c!r}"), source, i)
    tokens.append(_Token("end", "", None, n))
    return tokens


def _scan_string(source: str, start: int) -> tuple[str, int]:
    """The decoded string literal opening at `start`, and the index just past its closing quote."""
    quote, i = source[start], start + 1
    chars: list[str] = []
    while i < len(source):
        c = source[i]
        if c == quote:
            text = "".join(chars)
            # \uD83D\uDE00 arrives as two surrogates; join them as JSON does.
            return text.encode("utf-16", "surrogatepass").decode("utf-16", "surrogatepass"), i + 1
        if c != "\\":
            chars.append(c)
            i += 1
            continue
        escape = source[i + 1 : i + 2]
        if escape == "u":
            digits = source[i + 2 : i + 6]
            if len(digits) != 4 or not all(d in "0123456789abcdefABCDEF" for d in digits):
                raise ExpressionError("\\u needs four hex digits", source, i)
            chars.append(chr(int(digits, 16)))
            i += 6
        elif escape in _ESCAPES:
            chars.append(_ESCAPES[escape])
            i += 2
        else:
            raise ExpressionError(f"unknown escape \\{escape}", source, i)
    raise ExpressionError("unterminated string", source, start)


class _Parser:
    def __init__(self, source: str, roots: Collection[str]) -> None:
        self.source, self.roots = source, roots
        self.tokens = _tokenize(source)
        self.index = 0
        self.depth = 0

    def fail(self, message: str, token: _Token | None = None) -> ExpressionError:
        return ExpressionError(message, self.source, (token or self.peek()).pos)

    def peek(self) -> _Token:
        return self.tokens[self.index]

    def take(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def at(self, *ops: str) -> bool:
        token = self.peek()
        return token.kind == "op" and token.text in ops

    def expect(self, op: str, why: str) -> None:
        if not self.at(op):
            raise self.fail(why)
        self.index += 1

    def nest(self, token: _Token) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(f"nesting deeper than {MAX_DEPTH} levels", token)

    def whole(self) -> Node:
        if not self.source.strip():
            raise ExpressionError("the expression is empty", self.source, 0)
        node = self.either()
        token = self.peek()
        if token.kind != "end":
            raise self.fail(f"unexpected {token.text!r}; expected an operator such as &&, || or ==")
        return Lit(node.value is True) if isinstance(node, Lit) else node

    def either(self) -> Node:
        operands = [self.both()]
        while self.at("||"):
            self.take()
            operands.append(self.both())
        return operands[0] if len(operands) == 1 else _junction("||", operands)

    def both(self) -> Node:
        operands = [self.equality()]
        while self.at("&&"):
            self.take()
            operands.append(self.equality())
        return operands[0] if len(operands) == 1 else _junction("&&", operands)

    def equality(self) -> Node:
        return self.comparison(self.relation, ("==", "!="))

    def relation(self) -> Node:
        return self.comparison(self.unary, ("<", "<=", ">", ">="))

    def comparison(self, operand: Callable[[], Node], ops: tuple[str, ...]) -> Node:
        left = operand()
        if not self.at(*ops):
            return left
        op = self.take().text
        node = _compare(op, left, operand())
        if self.at(*ops):
            raise self.fail("comparisons do not chain; join them with && or add parentheses")
        return node

    def unary(self) -> Node:
        if not self.at("!", "-"):
            return self.primary()
        token = self.take()
        self.nest(token)
        node = _unary(token.text, self.unary())
        self.depth -= 1
        return node

    def primary(self) -> Node:
        token = self.peek()
        if token.kind == "name" and token.text not in _KEYWORDS:
            self.take()
            if token.text not in self.roots:
                names = ", ".join(sorted(self.roots)) or "none"
                raise self.fail(f"unknown name {token.text!r}; expressions can use {names}", token)
            return self.path(token.text)
        if self.at("("):
            self.take()
            self.nest(token)
            node = self.either()
            self.expect(")", f"missing ')' to close the '(' at position {token.pos}")
            self.depth -= 1
            return node
        return Lit(self.constant())

    def path(self, root: str) -> Node:
        segments: list[str | int] = []
        while self.at(".", "["):
            if self.take().text == ".":
                name = self.take()
                if name.kind != "name":
                    raise self.fail("expected a field name after '.'", name)
                segments.append(name.text)
                continue
            key = self.take()
            if key.kind == "str" or (key.kind == "num" and isinstance(key.value, int)):
                assert isinstance(key.value, str | int)
                segments.append(key.value)
            else:
                raise self.fail("expected a quoted key or a whole-number index inside [ ]", key)
            self.expect("]", "expected ']'")
        return Path(root, tuple(segments))

    def constant(self) -> object:
        """A literal value: scalars anywhere, lists and maps of constants as written by `interpolate`."""
        token = self.take()
        if token.kind in ("str", "num"):
            return token.value
        if token.kind == "name" and token.text in _KEYWORDS:
            return _KEYWORDS[token.text]
        if token.kind == "name":
            raise self.fail("lists and maps may hold only constants", token)
        if token.kind == "op" and token.text == "-" and self.peek().kind == "num":
            return _negate(self.take().value)
        if token.kind == "op" and token.text in ("[", "{"):
            self.nest(token)
            value = self.collection(token.text)
            self.depth -= 1
            return value
        if token.kind == "end":
            raise self.fail("the expression ends where a value was expected", token)
        raise self.fail(f"expected a value, found {token.text!r}", token)

    def collection(self, opener: str) -> object:
        closer = "]" if opener == "[" else "}"
        items: list[object] = []
        entries: dict[str, object] = {}
        while not self.at(closer):
            if items or entries:
                self.expect(",", f"expected ',' or '{closer}'")
            if opener == "[":
                items.append(self.constant())
                continue
            key = self.take()
            if key.kind != "str":
                raise self.fail("map keys must be quoted strings", key)
            self.expect(":", "expected ':' after a map key")
            entries[str(key.value)] = self.constant()
        self.take()
        return items if opener == "[" else entries


# --- evaluation ---------------------------------------------------------------------------------

_Fn = Callable[[Mapping[str, object]], object]


def _compile(node: Node) -> _Fn:
    """Turn the tree into nested closures: parse once, evaluate for every candidate event."""
    if isinstance(node, Lit):
        value = node.value
        return lambda variables: value
    if isinstance(node, Path):
        return _compile_path(node.root, node.segments)
    if isinstance(node, Unary):
        inner, apply = _compile(node.operand), _UNARY[node.op]
        return lambda variables: apply(inner(variables))
    if isinstance(node, Compare):
        test, left = _COMPARISONS[node.op], _compile(node.left)
        if isinstance(node.right, Lit):
            constant = node.right.value
            return lambda variables: test(left(variables), constant)
        right = _compile(node.right)
        return lambda variables: test(left(variables), right(variables))
    parts = tuple(_compile(operand) for operand in node.operands)
    if node.op == "&&":
        return lambda variables: all(part(variables) is True for part in parts)
    return lambda variables: any(part(variables) is True for part in parts)


def _compile_path(root: str, segments: tuple[str | int, ...]) -> _Fn:
    def get(variables: Mapping[str, object]) -> object:
        return _walk(variables.get(root, MISSING), segments)

    return get


def _walk(value: object, segments: tuple[str | int, ...]) -> object:
    """Follow keys through dicts and indexes through lists; anything else is missing."""
    for segment in segments:
        if type(value) is dict:
            value = value.get(segment, MISSING) if type(segment) is str else MISSING
        elif type(value) is list and type(segment) is int and segment < len(value):
            value = value[segment]
        else:
            return MISSING
    return value


# --- rendering ----------------------------------------------------------------------------------

_PRECEDENCE = {"||": 1, "&&": 2, "==": 3, "!=": 3, "<": 4, "<=": 4, ">": 4, ">=": 4}


def _render(node: Node, least: int = 0) -> str:
    """Canonical source for `node`, parenthesised when its precedence is below `least`."""
    if isinstance(node, Lit):
        return json.dumps(node.value, ensure_ascii=False, allow_nan=False)
    if isinstance(node, Path):
        return node.root + "".join(_render_segment(segment) for segment in node.segments)
    if isinstance(node, Unary):
        return node.op + _render(node.operand, 5)
    level = _PRECEDENCE[node.op]
    if isinstance(node, Compare):
        text = f"{_render(node.left, level + 1)} {node.op} {_render(node.right, level + 1)}"
    else:
        text = f" {node.op} ".join(_render(operand, level + 1) for operand in node.operands)
    return f"({text})" if level < least else text


def _render_segment(segment: str | int) -> str:
    if isinstance(segment, int):
        return f"[{segment}]"
    return f".{segment}" if _IDENTIFIER.fullmatch(segment) else f"[{json.dumps(segment, ensure_ascii=False)}]"


def _substitute(node: Node, name: str, value: object) -> Node:
    if isinstance(node, Path):
        return Lit(_walk(value, node.segments)) if node.root == name else node
    if isinstance(node, Unary):
        return _unary(node.op, _substitute(node.operand, name, value))
    if isinstance(node, Compare):
        return _compare(node.op, _substitute(node.left, name, value), _substitute(node.right, name, value))
    if isinstance(node, Junction):
        return _junction(node.op, [_substitute(operand, name, value) for operand in node.operands])
    return node


def _roots(node: Node) -> set[str]:
    if isinstance(node, Path):
        return {node.root}
    if isinstance(node, Unary):
        return _roots(node.operand)
    if isinstance(node, Compare):
        return _roots(node.left) | _roots(node.right)
    if isinstance(node, Junction):
        return set().union(*(_roots(operand) for operand in node.operands))
    return set()


# --- the public surface -------------------------------------------------------------------------


@dataclass(frozen=True)
class Expression:
    """A parsed expression; build it with `parse`. Equal when the sources are equal."""

    source: str
    node: Node = field(repr=False, compare=False)
    _run: _Fn = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_run", _compile(self.node))

    def evaluate(self, variables: Mapping[str, object]) -> bool:
        """Whether the expression is the boolean true for these roots, e.g. {"event": .., "async": ..}."""
        return self._run(variables) is True

    def interpolate(self, name: str, value: object) -> Expression:
        """Fix root `name` to `value` and fold; the result's `source` is canonical and parses back.

        Used when a wait is created: the run's trigger event never changes, so only `async` stays
        variable. A rule that can no longer match comes back as `false`. Raises ExpressionError
        when the inlined value is not JSON or makes the expression exceed the length/depth limits.
        """
        folded = _substitute(self.node, name, value)
        if isinstance(folded, Lit):
            folded = Lit(folded.value is True)
        try:
            source = _render(folded)
        except (TypeError, ValueError) as error:
            raise ExpressionError(f"cannot inline {name} into the expression: {error}", self.source) from None
        try:
            return parse(source, roots=_roots(folded))
        except ExpressionError as error:
            raise ExpressionError(f"with {name} inlined: {error.message}", self.source) from None

    def is_one_comparison(self) -> bool:
        """Whether the whole expression is a single comparison (no `&&`, `||` or `!` around it)."""
        return isinstance(self.node, Compare)

    def equality_keys(self, name: str) -> list[tuple[str, object]]:
        """(path, literal) for each top-level `&&` conjunct `<name>.path == <literal>`, in source order.

        Every match must satisfy all of them, so the daemon can index waits by one and look only at
        waits whose key the incoming event has. Only plain dotted paths ("data.userId") and scalar
        literals qualify. Numbers compare by value (`1 == 1.0`) and `true` is not `1`, so index keys
        must normalise numbers the same way.
        """
        conjuncts = self.node.operands if isinstance(self.node, Junction) and self.node.op == "&&" else (self.node,)
        keys: list[tuple[str, object]] = []
        for node in conjuncts:
            if not isinstance(node, Compare) or node.op != "==":
                continue
            for path, literal in ((node.left, node.right), (node.right, node.left)):
                if (
                    isinstance(path, Path)
                    and path.root == name
                    and path.segments
                    and all(isinstance(s, str) and _IDENTIFIER.fullmatch(s) for s in path.segments)
                    and isinstance(literal, Lit)
                    and isinstance(literal.value, str | int | float | bool | None)
                ):
                    keys.append((".".join(str(s) for s in path.segments), literal.value))
        return keys

    def roots(self) -> set[str]:
        """The root names the expression still depends on (constant parts are folded away)."""
        return _roots(self.node)


def parse(source: str, *, roots: Collection[str] = ("event", "async")) -> Expression:
    """Parse `source`, allowing only the given root names; ExpressionError says what and where."""
    if len(source) > MAX_LENGTH:
        raise ExpressionError(f"the expression is longer than {MAX_LENGTH} characters", source, MAX_LENGTH)
    return Expression(source, _Parser(source, roots).whole())


def match_expression(path: str) -> str:
    """Inngest's `match="data.userId"` shorthand: the field must be equal on both events."""
    if not all(_IDENTIFIER.fullmatch(part) for part in path.split(".")):
        raise ExpressionError(
            f"match needs a dotted field path like 'data.userId', got {path!r}; use if_ for anything else"
        )
    return f"event.{path} == async.{path}"
