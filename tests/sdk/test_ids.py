"""Step ids (the shared vectors are checked in tests/test_step_ids.py against the Rust core too)."""

from __future__ import annotations

from durably._ids import StepIdCounter, hash_step_id, pre_hash_id


def test_hash_is_lowercase_sha1_hex_of_utf8() -> None:
    assert hash_step_id("step-one") == "536a1ebaf1da1fe4cde6b1e002b0230b80303167"
    assert hash_step_id("step-one:1") == "30610fce2354db7ed228564c92cfe50f1ed81f6e"
    assert hash_step_id("my-step-id") == "e7d8a2f140845095749d60246ff1110c9d01d76a"


def test_pre_hash_id_adds_the_counter_after_the_first_occurrence() -> None:
    assert [pre_hash_id("a", i) for i in range(3)] == ["a", "a:1", "a:2"]


def test_counter_counts_per_name() -> None:
    counter = StepIdCounter()
    got = [counter.next(name) for name in ["a", "b", "a", "a", "b"]]
    assert [index for _, index in got] == [0, 0, 1, 2, 1]
    assert got[2][0] == hash_step_id("a:1") and got[4][0] == hash_step_id("b:1")
