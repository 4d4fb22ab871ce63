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


def snapshot(state: RunState) -> tuple[int, int, int, list[tuple[str, bytes, bool]]]:
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
        "hash_step_id",
        "pre_hash_id",
    }
