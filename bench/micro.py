"""Micro-benchmarks of the Rust core, called from Python, against the pure-Python reference (``bench.pyref``).

Each case times the same calls on both implementations as the daemon makes them (through pyo3 for
Rust), so the ratio is what the daemon gains or loses per call. Before timing, both are run on the
same inputs, including every limit and refusal, and must agree.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

from durably_server import _core

from bench import pyref
from bench.progress import say
from bench.settings import Profile
from bench.stats import median

STEPS = 1000
GATHER = 200  # W3's smaller gather
PAYLOAD = b"1795619350.1664124"  # what a W2 step saves: a time.time() float as JSON
MAX_PASSES = 100_000


@dataclass
class MicroResult:
    name: str
    what: str
    rust_ops_per_s: float | None
    python_ops_per_s: float
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """Rust speed over Python speed (above 1: Rust is faster)."""
        return None if self.rust_ops_per_s is None else self.rust_ops_per_s / self.python_ops_per_s

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "rust_over_python": self.ratio}


def _ids(core: Any) -> list[tuple[str, str, int]]:
    """``(hashed id, name, index)`` of STEPS repeats of one step name, as a loop of ``step.run`` makes."""
    counter = core.StepIdCounter()
    return [(hashed, "step", index) for hashed, index in (counter.next("step") for _ in range(STEPS))]


def _filled(core: Any, ids: list[tuple[str, str, int]], count: int) -> Any:
    state = core.RunState()
    for hashed, name, index in ids[:count]:
        state.record(hashed, name, index, PAYLOAD, False)
    return state


# ---- agreement ----------------------------------------------------------------------------------


def _outcome(call: Callable[[], Any]) -> Any:
    try:
        return ("ok", call())
    except Exception as exc:  # the class name is what both must agree on
        return ("error", type(exc).__name__)


def check_agreement() -> list[str]:
    """Differences between the Rust core and the reference on the same inputs (empty: they agree)."""
    problems: list[str] = []

    def same(what: str, rust: Callable[[], Any], python: Callable[[], Any]) -> None:
        got, expected = _outcome(rust), _outcome(python)
        if got != expected:
            problems.append(f"{what}: rust {got!r} != python {expected!r}")

    for text in ["", "step", "step:1", "charge-customer", "é✓ unicode", "x" * 1000]:
        same(f"hash_step_id({text[:20]!r})", partial(_core.hash_step_id, text), partial(pyref.hash_step_id, text))
    rust_counter, py_counter = _core.StepIdCounter(), pyref.StepIdCounter()
    for name in ["a", "b", "a", "a", "b", "c"]:
        same(f"StepIdCounter.next({name!r})", partial(rust_counter.next, name), partial(py_counter.next, name))
    limits = {"max_steps": 3, "max_step_bytes": 10, "max_state_bytes": 25}
    rust_state, py_state = _core.RunState(base_bytes=2, **limits), pyref.RunState(base_bytes=2, **limits)
    good = [(_core.hash_step_id(pre), name, index) for pre, name, index in [("a", "a", 0), ("a:1", "a", 1)]]
    cases: list[tuple[str, str, int, bytes]] = [
        (good[0][0], "a", 0, b"12345"),  # recorded
        (good[0][0], "a", 0, b"1"),  # duplicate
        (good[1][0], "a", 1, b"x" * 11),  # payload over max_step_bytes
        ("0" * 40, "a", 1, b"1"),  # id that is not the hash
        (good[1][0], "", 1, b"1"),  # empty name
        (good[1][0], "a", 1, b"x" * 10),  # recorded (17 bytes)
        (_core.hash_step_id("b"), "b", 0, b"x" * 9),  # state over max_state_bytes (26)
        (_core.hash_step_id("b"), "b", 0, b"x" * 8),  # recorded: exactly 25
        (_core.hash_step_id("c"), "c", 0, b""),  # over max_steps
    ]
    for hashed, name, index, payload in cases:
        what = f"RunState.check/record({name!r}, {index}, {len(payload)} B)"
        size = len(payload)
        same(
            what,
            partial(rust_state.check, hashed, name, index, size),
            partial(py_state.check, hashed, name, index, size),
        )
        same(
            what,
            partial(rust_state.record, hashed, name, index, payload, False),
            partial(py_state.record, hashed, name, index, payload, False),
        )
    same("RunState.memos()", rust_state.memos, py_state.memos)
    _check_batches(same)
    if hasattr(rust_state, "memos_from"):
        for start in [0, 2, 3, 4, -1]:
            what = f"RunState.memos_from({start})"
            same(what, partial(rust_state.memos_from, start), partial(py_state.memos_from, start))
    return problems


def _check_batches(same: Callable[[str, Callable[[], Any], Callable[[], Any]], None]) -> None:
    """``record_batch`` on both: all or none, each item checked as if those before it were recorded."""
    limits = {"max_steps": 4, "max_step_bytes": 10, "max_state_bytes": 30}
    rust_state, py_state = _core.RunState(**limits), pyref.RunState(**limits)

    def item(name: str, index: int, payload: bytes) -> tuple[str, str, int, bytes, bool]:
        return (_core.hash_step_id(_core.pre_hash_id(name, index)), name, index, payload, False)

    batches = [
        [item("p", 0, b"1"), item("p", 1, b"2")],  # recorded
        [item("p", 2, b"3"), item("p", 2, b"3")],  # repeated within the batch
        [item("p", 2, b"x" * 10), item("p", 3, b"x" * 10)],  # the second crosses max_state_bytes
        [item("p", 2, b"3"), item("p", 3, b"4"), item("p", 4, b"5")],  # the third is step 5 of 4
        [item("p", 2, b"3"), item("q", 0, b"x" * 11)],  # one payload over max_step_bytes
        [item("p", 2, b"3"), item("p", 3, b"4")],  # recorded: nothing before was
    ]
    for n, batch in enumerate(batches):
        what = f"RunState.record_batch(#{n})"
        same(what, partial(rust_state.record_batch, batch), partial(py_state.record_batch, batch))
    same("RunState.memos() after batches", rust_state.memos, py_state.memos)


# ---- timing -------------------------------------------------------------------------------------


def _rate(make_pass: Callable[[], Callable[[], int]], profile: Profile) -> float:
    """Ops per second: median over repetitions, each running passes until its time budget is spent.

    ``make_pass`` prepares one pass (fresh state, untimed) and returns it; the pass returns its op count.
    """
    rates = []
    for _ in range(profile.micro_reps):
        ops = 0
        spent = 0.0
        passes = 0
        while spent < profile.micro_seconds and passes < MAX_PASSES:
            one_pass = make_pass()
            started = time.perf_counter()
            ops += one_pass()
            spent += time.perf_counter() - started
            passes += 1
        rates.append(ops / spent)
    return median(rates)


def _hash_pass(core: Any) -> Callable[[], Callable[[], int]]:
    texts = ["step"] + [f"step:{i}" for i in range(1, STEPS)]
    hash_step_id = core.hash_step_id

    def one() -> int:
        for text in texts:
            hash_step_id(text)
        return len(texts)

    return lambda: one


def _counter_pass(core: Any) -> Callable[[], Callable[[], int]]:
    def make() -> Callable[[], int]:
        counter = core.StepIdCounter()

        def one() -> int:
            next_id = counter.next
            for _ in range(STEPS):
                next_id("step")
            return STEPS

        return one

    return make


def _record_pass(core: Any) -> Callable[[], Callable[[], int]]:
    ids = _ids(_core)

    def make() -> Callable[[], int]:
        state = core.RunState()

        def one() -> int:
            record = state.record
            for hashed, name, index in ids:
                record(hashed, name, index, PAYLOAD, False)
            return len(ids)

        return one

    return make


def _check_pass(core: Any) -> Callable[[], Callable[[], int]]:
    ids = _ids(_core)
    half = STEPS // 2
    state = _filled(core, ids, half)
    pending = ids[half:]

    def one() -> int:
        check = state.check
        for hashed, name, index in pending:
            check(hashed, name, index, len(PAYLOAD))
        return len(pending)

    return lambda: one


def _batch_pass(core: Any) -> Callable[[], Callable[[], int]]:
    """One op: a gather's GATHER results merged into a fresh run at once (``record_batch``)."""
    batch = [(hashed, name, index, PAYLOAD, False) for hashed, name, index in _ids(_core)[:GATHER]]

    def make() -> Callable[[], int]:
        state = core.RunState()

        def one() -> int:
            state.record_batch(batch)
            return 1

        return one

    return make


def _memos_from_pass(core: Any, start: int, calls: int) -> Callable[[], Callable[[], int]]:
    state = _filled(core, _ids(_core), STEPS)

    def one() -> int:
        memos_from = state.memos_from
        for _ in range(calls):
            memos_from(start)
        return calls

    return lambda: one


def _memos_pass(core: Any, calls: int) -> Callable[[], Callable[[], int]]:
    state = _filled(core, _ids(_core), STEPS)

    def one() -> int:
        memos = state.memos
        for _ in range(calls):
            memos()
        return calls

    return lambda: one


def run(profile: Profile) -> tuple[list[MicroResult], list[str]]:
    problems = check_agreement()
    if problems:
        say(f"micro: the Rust core and the Python reference disagree: {problems[:3]}")
    results: list[MicroResult] = []
    has_memos_from = hasattr(_core.RunState, "memos_from")
    cases: list[tuple[str, str, Callable[[Any], Callable[[], Callable[[], int]]], bool]] = [
        ("hash_step_id", "SHA-1 hex of one step id", _hash_pass, True),
        ("StepIdCounter.next", "next id of a repeated name (count + hash)", _counter_pass, True),
        ("RunState.record", f"record one outcome (id check, limits) into a run of up to {STEPS}", _record_pass, True),
        ("RunState.check", f"check one outcome against a run of {STEPS // 2}", _check_pass, True),
        (
            "RunState.record_batch",
            f"merge a gather's {GATHER} results at once (checked together, all or none)",
            _batch_pass,
            True,
        ),
        (
            "RunState.memos_from",
            f"the 1 newest memo of a {STEPS}-step run (what a delta ships)",
            lambda core: _memos_from_pass(core, STEPS - 1, 1000),
            has_memos_from,
        ),
        (
            "RunState.memos",
            f"all {STEPS} memos of a run (what a full-state Execute ships)",
            lambda core: _memos_pass(core, 20),
            True,
        ),
    ]
    for name, what, case, available in cases:
        say(f"micro: {name}")
        python = _rate(case(pyref), profile)
        rust = _rate(case(_core), profile) if available else None
        note = "" if available else "not in this build of the Rust core"
        results.append(MicroResult(name, what, rust, python, note))
    return results, problems
