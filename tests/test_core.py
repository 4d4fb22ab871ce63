"""RunState through Python: the limits at their exact boundaries, what each refusal raises and says,
and that a refused step changes nothing (the daemon relies on that to keep a run's state consistent).
"""

import inspect

import pytest
from durably_server import _core
from durably_server._core import (
    MAX_STATE_BYTES,
    MAX_STEP_BYTES,
    MAX_STEPS,
    CoreError,
    DuplicateStep,
    InvalidStepId,
    LimitExceeded,
    RunState,
    StateTooLarge,
    StepIdCounter,
    StepLimitExceeded,
    StepOutputTooLarge,
    hash_step_id,
    pre_hash_id,
)

MIB = 1024 * 1024
# One 4 MiB object reused for every large step: RunState keeps the object, it does not copy it.
FOUR_MIB = b"x" * (4 * MIB)


def step_id(name: str, index: int = 0) -> str:
    return hash_step_id(pre_hash_id(name, index))


def snapshot(state: RunState) -> tuple[int, int, int, list[tuple[str, bytes | None, bool]]]:
    return state.step_count, state.size_bytes, len(state), state.memos()


def assert_message(err: pytest.ExceptionInfo[CoreError], *parts: object) -> None:
    for part in parts:
        assert str(part) in str(err.value), f"{part!r} not in {err.value}"


def test_limits_are_the_articles() -> None:
    assert (MAX_STEPS, MAX_STEP_BYTES, MAX_STATE_BYTES) == (1000, 4 * MIB, 32 * MIB)
    defaults = {name: p.default for name, p in inspect.signature(RunState).parameters.items()}
    assert defaults == {
        "base_bytes": 0,
        "max_steps": MAX_STEPS,
        "max_step_bytes": MAX_STEP_BYTES,
        "max_state_bytes": MAX_STATE_BYTES,
    }


def test_exception_hierarchy() -> None:
    for limit in (StepLimitExceeded, StepOutputTooLarge, StateTooLarge):
        assert issubclass(limit, LimitExceeded)
    for error in (LimitExceeded, DuplicateStep, InvalidStepId):
        assert issubclass(error, CoreError)
    assert issubclass(CoreError, Exception)
    assert not issubclass(DuplicateStep, LimitExceeded)
    exported = (CoreError, LimitExceeded, StepOutputTooLarge, DuplicateStep, InvalidStepId, RunState)
    assert {cls.__module__ for cls in (*exported, StepIdCounter)} == {"durably_server._core"}


def test_record_and_read_back_in_order() -> None:
    state = RunState()
    payloads = [b'{"a":1}', b'{"error":"boom"}', b"[]"]
    assert state.record(step_id("a"), "a", 0, payloads[0], False) == 7
    assert state.record(step_id("b"), "b", 0, payloads[1], True) == 23
    assert state.record(step_id("a", 1), "a", 1, payloads[2], False) == 25
    assert (state.step_count, state.size_bytes, len(state)) == (3, 25, 3)
    memos = state.memos()
    assert memos == [
        (step_id("a"), payloads[0], False),
        (step_id("b"), payloads[1], True),
        (step_id("a", 1), payloads[2], False),
    ]
    assert all(got is sent for (_, got, _), sent in zip(memos, payloads, strict=True))
    assert state.get(step_id("b")) == (payloads[1], True)
    assert state.contains(step_id("a", 1))
    assert not state.contains(step_id("a", 2))
    assert state.get(step_id("a", 2)) is None


def test_base_bytes_count_in_the_state() -> None:
    state = RunState(base_bytes=100)
    assert (state.size_bytes, state.step_count) == (100, 0)
    assert state.record(step_id("a"), "a", 0, b"12345", False) == 105


def test_step_output_of_4_mib_passes_one_byte_more_fails() -> None:
    state = RunState()
    assert state.record(step_id("at-limit"), "at-limit", 0, FOUR_MIB, False) == MAX_STEP_BYTES
    before = snapshot(state)
    with pytest.raises(StepOutputTooLarge) as err:
        state.record(step_id("too-big"), "too-big", 0, FOUR_MIB + b"x", False)
    assert_message(err, '"too-big"', step_id("too-big"), MAX_STEP_BYTES + 1, MAX_STEP_BYTES, "max_step_bytes")
    assert snapshot(state) == before
    assert not state.contains(step_id("too-big"))


def test_state_of_32_mib_passes_one_byte_more_fails() -> None:
    state = RunState()
    counter = StepIdCounter()
    for _ in range(8):
        hashed, index = counter.next("chunk")
        state.record(hashed, "chunk", index, FOUR_MIB, False)
    assert state.size_bytes == MAX_STATE_BYTES
    before = snapshot(state)
    hashed, index = counter.next("chunk")
    with pytest.raises(StateTooLarge) as err:
        state.record(hashed, "chunk", index, b"x", False)
    assert_message(err, '"chunk"', hashed, MAX_STATE_BYTES + 1, MAX_STATE_BYTES, "max_state_bytes")
    assert snapshot(state) == before
    assert state.record(hashed, "chunk", index, b"", False) == MAX_STATE_BYTES


def test_base_bytes_count_towards_the_state_limit() -> None:
    state = RunState(base_bytes=10)
    counter = StepIdCounter()
    for _ in range(7):
        hashed, index = counter.next("chunk")
        state.record(hashed, "chunk", index, FOUR_MIB, False)
    hashed, index = counter.next("chunk")
    with pytest.raises(StateTooLarge):
        state.record(hashed, "chunk", index, FOUR_MIB, False)
    assert state.record(hashed, "chunk", index, FOUR_MIB[:-10], False) == MAX_STATE_BYTES


def test_1000_steps_pass_the_1001st_fails() -> None:
    state = RunState()
    counter = StepIdCounter()
    for _ in range(MAX_STEPS):
        hashed, index = counter.next("loop")
        state.record(hashed, "loop", index, b"{}", False)
    assert state.step_count == MAX_STEPS
    before = snapshot(state)
    hashed, index = counter.next("loop")
    with pytest.raises(StepLimitExceeded) as err:
        state.record(hashed, "loop", index, b"{}", False)
    assert_message(err, '"loop"', hashed, "1001", "1000 steps", "max_steps")
    assert snapshot(state) == before


def test_duplicate_is_refused_and_the_first_outcome_kept() -> None:
    state = RunState()
    first = b'"first"'
    state.record(step_id("a"), "a", 0, first, False)
    before = snapshot(state)
    with pytest.raises(DuplicateStep) as err:
        state.record(step_id("a"), "a", 0, b'"second"', True)
    assert_message(err, '"a"', step_id("a"))
    assert snapshot(state) == before
    got = state.get(step_id("a"))
    assert got is not None and got[0] is first and got[1] is False


@pytest.mark.parametrize(
    ("bad_id", "name", "index"),
    [
        pytest.param(step_id("a", 1), "a", 0, id="index-mismatch"),
        pytest.param(step_id("a"), "b", 0, id="name-mismatch"),
        pytest.param(step_id("a").upper(), "a", 0, id="uppercase-hex"),
        pytest.param("a", "a", 0, id="unhashed"),
        pytest.param(hash_step_id(""), "", 0, id="empty-name"),
        pytest.param(step_id("a"), "a", -1, id="negative-index"),
    ],
)
def test_invalid_step_id(bad_id: str, name: str, index: int) -> None:
    state = RunState()
    with pytest.raises(InvalidStepId):
        state.check(bad_id, name, index, 1)
    with pytest.raises(InvalidStepId):
        state.record(bad_id, name, index, b"1", False)
    assert snapshot(state) == (0, 0, 0, [])


def test_pre_hash_id_refuses_a_negative_index() -> None:
    with pytest.raises(InvalidStepId):
        pre_hash_id("a", -1)


def test_check_validates_like_record_without_recording() -> None:
    state = RunState(max_step_bytes=10)
    state.check(step_id("a"), "a", 0, 10)
    assert snapshot(state) == (0, 0, 0, [])
    with pytest.raises(StepOutputTooLarge):
        state.check(step_id("a"), "a", 0, 11)
    state.record(step_id("a"), "a", 0, b"0123456789", False)
    with pytest.raises(DuplicateStep):
        state.check(step_id("a"), "a", 0, 0)


def test_checks_run_in_the_documented_order() -> None:
    """A step breaking every rule reports the first one: id, duplicate, count, output size, state size."""
    state = RunState(base_bytes=5, max_steps=1, max_step_bytes=10, max_state_bytes=15)
    state.record(step_id("a"), "a", 0, b"0123456789", False)
    with pytest.raises(InvalidStepId):
        state.check("bad", "a", 0, 100)
    with pytest.raises(DuplicateStep):
        state.check(step_id("a"), "a", 0, 100)
    with pytest.raises(StepLimitExceeded):
        state.check(step_id("b"), "b", 0, 100)
    state = RunState(base_bytes=10, max_steps=1, max_step_bytes=10, max_state_bytes=15)
    with pytest.raises(StepOutputTooLarge):
        state.check(step_id("b"), "b", 0, 11)
    with pytest.raises(StateTooLarge):
        state.check(step_id("b"), "b", 0, 6)
    state.check(step_id("b"), "b", 0, 5)


def test_module_exports_the_contract() -> None:
    assert set(_core.__all__) == {
        "MAX_JSON_DEPTH",
        "MAX_STATE_BYTES",
        "MAX_STEPS",
        "MAX_STEP_BYTES",
        "CoreError",
        "DuplicateStep",
        "InvalidStepId",
        "LimitExceeded",
        "RunState",
        "StateTooLarge",
        "StepIdCounter",
        "StepLimitExceeded",
        "StepOutputTooLarge",
        "check_json",
        "hash_step_id",
        "json_depth",
        "pre_hash_id",
        "simulate_power_loss",
    }


# --- Memo deltas, batches of outcomes and the function's output ---


def fill(state: RunState, name: str, count: int, payload: bytes = b"{}") -> None:
    """Records `count` steps named `name` one by one (indices 0..count-1)."""
    for index in range(count):
        state.record(step_id(name, index), name, index, payload, False)


def test_memos_from_returns_the_outcomes_from_a_position_on() -> None:
    state = RunState()
    assert state.memos_from(0) == []
    payloads = [b"1", b"22", b"333"]
    for name, payload in zip("abc", payloads, strict=True):
        state.record(step_id(name), name, 0, payload, name == "b")
    assert state.memos_from(0) == state.memos()
    assert state.memos_from(1) == state.memos()[1:]
    assert state.memos_from(2) == [(step_id("c"), payloads[2], False)]
    assert state.memos_from(2)[0][1] is payloads[2]
    assert state.memos_from(3) == []
    new = b"4444"
    state.record(step_id("d"), "d", 0, new, False)
    assert state.memos_from(3) == [(step_id("d"), new, False)]


def test_forget_payloads_drops_big_payloads_from_a_position_on_and_every_limit_still_counts_them() -> None:
    state = RunState(max_state_bytes=3 * MIB + 10)
    big, small = b"b" * MIB, b"s"
    for name, payload in zip("abcd", [big, small, big, big], strict=True):
        state.record(step_id(name), name, 0, payload, name == "c")
    size = state.size_bytes
    assert state.forget_payloads(1, 1000) == 2, "c and d, not a (before start) nor b (small)"
    assert state.memos() == [
        (step_id("a"), big, False),
        (step_id("b"), small, False),
        (step_id("c"), None, True),
        (step_id("d"), None, False),
    ]
    assert state.memos_from(3) == [(step_id("d"), None, False)] and state.get(step_id("c")) == (None, True)
    assert state.size_bytes == size and state.step_count == 4 and state.contains(step_id("d"))
    with pytest.raises(StateTooLarge):
        state.check(step_id("e"), "e", 0, 10)
    with pytest.raises(DuplicateStep):
        state.record(step_id("d"), "d", 0, small, False)
    assert state.forget_payloads(0, 1000) == 1 and state.forget_payloads(4, 0) == 0
    with pytest.raises(ValueError, match="out of range"):
        state.forget_payloads(5, 0)
    with pytest.raises(ValueError, match="out of range"):
        state.forget_payloads(-1, 0)


@pytest.mark.parametrize("start", [5, 6, 2**40, -1, -4])
def test_memos_from_out_of_range_is_a_value_error(start: int) -> None:
    state = RunState()
    fill(state, "s", 4)
    with pytest.raises(ValueError, match=f"memo position {start} is out of range.*from 0 to 4"):
        state.memos_from(start)


def test_memo_deltas_ship_each_outcome_once() -> None:
    """What the executor does: after each step it sends the worker only what the worker has not seen."""
    state = RunState()
    seen, shipped = 0, 0
    for index in range(MAX_STEPS):
        state.record(step_id("s", index), "s", index, b"0123456789", False)
        delta = state.memos_from(seen)
        assert [memo_id for memo_id, _, _ in delta] == [step_id("s", index)]
        seen += len(delta)
        shipped += sum(len(payload) for _, payload, _ in delta)
    assert (seen, shipped) == (MAX_STEPS, 10 * MAX_STEPS)


def test_batch_step_count_exactly_at_the_limit_passes_one_more_fails() -> None:
    state = RunState(max_steps=5)
    fill(state, "done", 2)
    before = snapshot(state)
    batch = [(step_id(name), name, 0, 1) for name in "cdefg"]
    state.check_batch(batch[:3])
    for item in batch:
        state.check(*item)  # each alone fits; together the fourth would be step 6 of 5
    with pytest.raises(StepLimitExceeded) as err:
        state.check_batch(batch)
    assert_message(err, '"f"', step_id("f"), "step 6", "counting the 3 steps before it in this batch", "5 steps")
    assert snapshot(state) == before


def test_batch_state_size_is_cumulative_exactly_at_the_limit_passes_one_more_byte_fails() -> None:
    state = RunState(base_bytes=MIB)
    fill(state, "chunk", 7, FOUR_MIB)  # 29 MiB; room for 3 MiB more
    before = snapshot(state)
    state.check_batch([(step_id("a"), "a", 0, 2 * MIB), (step_id("b"), "b", 0, MIB)])
    state.check(step_id("b"), "b", 0, MIB + 1)  # alone it fits
    with pytest.raises(StateTooLarge) as err:
        state.check_batch(
            [(step_id("a"), "a", 0, 2 * MIB), (step_id("b"), "b", 0, MIB + 1), (step_id("c"), "c", 0, MAX_STEP_BYTES)]
        )
    assert_message(err, '"b"', step_id("b"), MIB + 1, MAX_STATE_BYTES + 1, MAX_STATE_BYTES, "max_state_bytes")
    assert snapshot(state) == before


def test_batch_step_output_of_4_mib_passes_one_byte_more_fails() -> None:
    state = RunState()
    state.check_batch([(step_id("a"), "a", 0, MAX_STEP_BYTES), (step_id("b"), "b", 0, MAX_STEP_BYTES)])
    with pytest.raises(StepOutputTooLarge) as err:
        state.check_batch([(step_id("a"), "a", 0, MAX_STEP_BYTES), (step_id("b"), "b", 0, MAX_STEP_BYTES + 1)])
    assert_message(err, '"b"', MAX_STEP_BYTES + 1, "max_step_bytes")


def test_batch_duplicates_within_the_batch_and_against_the_state() -> None:
    state = RunState()
    state.record(step_id("a"), "a", 0, b"1", False)
    with pytest.raises(DuplicateStep) as err:
        state.check_batch([(step_id("b"), "b", 0, 1), (step_id("c"), "c", 0, 1), (step_id("b"), "b", 0, 1)])
    assert_message(err, '"b"', step_id("b"), "more than once in this batch")
    with pytest.raises(DuplicateStep) as err:
        state.check_batch([(step_id("b"), "b", 0, 1), (step_id("a"), "a", 0, 1)])
    assert_message(err, '"a"', "already recorded")
    state.check_batch([(step_id("b", index), "b", index, 1) for index in range(3)])


@pytest.mark.parametrize(
    ("bad_id", "name", "index"),
    [
        pytest.param(step_id("b", 1), "b", 0, id="index-mismatch"),
        pytest.param("b", "b", 0, id="unhashed"),
        pytest.param(hash_step_id(""), "", 0, id="empty-name"),
        pytest.param(step_id("b"), "b", -1, id="negative-index"),
    ],
)
def test_batch_invalid_step_id(bad_id: str, name: str, index: int) -> None:
    state = RunState()
    with pytest.raises(InvalidStepId):
        state.check_batch([(step_id("a"), "a", 0, 1), (bad_id, name, index, 1)])
    with pytest.raises(InvalidStepId):
        state.record_batch([(step_id("a"), "a", 0, b"1", False), (bad_id, name, index, b"1", False)])
    assert snapshot(state) == (0, 0, 0, [])


def test_batch_reports_the_first_refused_item() -> None:
    state = RunState(max_steps=2, max_step_bytes=10)
    # A negative index is an InvalidStepId, but an earlier item over a limit is reported first.
    items = [(step_id("a"), "a", 0, 11), (step_id("b"), "b", -1, 1)]
    with pytest.raises(StepOutputTooLarge):
        state.check_batch(items)
    with pytest.raises(StepOutputTooLarge):
        state.record_batch([(i, n, x, b"x" * size, False) for i, n, x, size in items])
    # The second item is over max_step_bytes, the third over max_steps: the second is reported.
    with pytest.raises(StepOutputTooLarge) as err:
        state.check_batch([(step_id("a"), "a", 0, 1), (step_id("b"), "b", 0, 11), (step_id("c"), "c", 0, 1)])
    assert_message(err, '"b"')
    # Within an item, record's order: a repeat that is also over the step count is a duplicate.
    with pytest.raises(DuplicateStep):
        state.check_batch([(step_id("a"), "a", 0, 1), (step_id("b"), "b", 0, 1), (step_id("a"), "a", 0, 100)])
    with pytest.raises(StepLimitExceeded):
        state.check_batch([(step_id("a"), "a", 0, 1), (step_id("b"), "b", 0, 1), (step_id("c"), "c", 0, 100)])


def test_empty_batch_passes_even_at_the_limits() -> None:
    state = RunState(max_steps=1, max_state_bytes=1)
    state.record(step_id("a"), "a", 0, b"1", False)
    state.check_batch([])
    assert state.record_batch([]) == 1
    assert state.step_count == 1


def test_record_batch_records_every_outcome_in_order() -> None:
    state = RunState(base_bytes=3)
    state.record(step_id("first"), "first", 0, b"1", False)
    payloads = [b'{"a":1}', b'{"error":"boom"}', b"[]"]
    items = [
        (step_id("a"), "a", 0, payloads[0], False),
        (step_id("b"), "b", 0, payloads[1], True),
        (step_id("a", 1), "a", 1, payloads[2], False),
    ]
    assert state.record_batch(items) == 4 + 7 + 16 + 2
    assert (state.step_count, state.size_bytes) == (4, 29)
    delta = state.memos_from(1)
    assert delta == [(memo_id, payload, is_error) for memo_id, _, _, payload, is_error in items]
    assert all(got is sent for (_, got, _), sent in zip(delta, payloads, strict=True))
    assert state.get(step_id("b")) == (payloads[1], True)


def test_record_batch_is_all_or_nothing() -> None:
    state = RunState(max_steps=4, max_step_bytes=10, max_state_bytes=25)
    state.record(step_id("first"), "first", 0, b"12345", False)
    before = snapshot(state)

    def item(name: str, size: int) -> tuple[str, str, int, bytes, bool]:
        return step_id(name), name, 0, b"x" * size, False

    refused: list[tuple[type[CoreError], list[tuple[str, str, int, bytes, bool]]]] = [
        (StateTooLarge, [item("a", 10), item("b", 10), item("c", 1)]),
        (StepLimitExceeded, [item("a", 1), item("b", 1), item("c", 1), item("d", 1)]),
        (StepOutputTooLarge, [item("a", 1), item("b", 11)]),
        (DuplicateStep, [item("a", 1), item("b", 1), item("a", 1)]),
        (DuplicateStep, [item("a", 1), item("first", 1)]),
        (InvalidStepId, [item("a", 1), (step_id("x"), "y", 0, b"", False)]),
    ]
    for error, batch in refused:
        with pytest.raises(error):
            state.check_batch([(i, n, x, len(p)) for i, n, x, p, _ in batch])
        with pytest.raises(error):
            state.record_batch(batch)
        assert snapshot(state) == before, error
        assert not state.contains(step_id("a"))
    # A malformed item is refused before anything is recorded too.
    with pytest.raises(TypeError):
        state.record_batch([item("a", 1), (step_id("b"), "b", 0, "not bytes", False)])  # type: ignore[list-item]
    assert snapshot(state) == before
    # Right up to the limits, then one more step fails.
    assert state.record_batch([item("a", 10), item("b", 10)]) == 25
    assert state.record_batch([item("c", 0)]) == 25
    with pytest.raises(StepLimitExceeded):
        state.record_batch([item("d", 0)])


def test_output_exactly_filling_the_state_passes_one_byte_more_fails() -> None:
    state = RunState(base_bytes=10)
    fill(state, "chunk", 7, FOUR_MIB)
    room = MAX_STATE_BYTES - state.size_bytes
    before = snapshot(state)
    state.check_output(room)
    with pytest.raises(StateTooLarge) as err:
        state.check_output(room + 1)
    assert_message(
        err, "function's output", f"{room + 1} bytes", MAX_STATE_BYTES + 1, MAX_STATE_BYTES, "max_state_bytes"
    )
    assert snapshot(state) == before
    # Only the state limit applies to the output, not max_step_bytes.
    RunState().check_output(MAX_STEP_BYTES + 1)
    with pytest.raises(StateTooLarge):
        RunState().check_output(MAX_STATE_BYTES + 1)


@pytest.mark.parametrize("data", [b"null", b"1", b'"s"', b'{"a": [1, 2.5, true]}', b" [] ", b"[" * 500 + b"]" * 500])
def test_check_json_accepts_one_json_value(data: bytes) -> None:
    _core.check_json(data)


@pytest.mark.parametrize("data", [b"", b"NaN", b"Infinity", b"{", b"1 2", b'"\xff"', b"{'a': 1}", b"[1,]"])
def test_check_json_refuses_what_is_not_json(data: bytes) -> None:
    with pytest.raises(ValueError):
        _core.check_json(data)


def test_the_sdk_and_the_core_agree_on_how_deep_json_may_nest() -> None:
    """What the SDK encodes the executor accepts, and the reverse: a value one side takes and the other
    refuses would be a run stuck on a result it can never store or replay (docs: reliability.md T17)."""
    from durably._json import MAX_DEPTH, JsonValueError, encode
    from durably_server._core import MAX_JSON_DEPTH, check_json

    assert MAX_DEPTH == MAX_JSON_DEPTH
    deepest: list[object] = []
    for _ in range(MAX_DEPTH - 1):
        deepest = [deepest]
    check_json(encode(deepest))
    with pytest.raises(JsonValueError):
        encode([deepest])
    for levels in (MAX_DEPTH + 1, 1_000_000):  # counted without recursion: no depth overflows a stack
        with pytest.raises(ValueError, match="more than 500"):
            check_json(b"[" * levels + b"]" * levels)
