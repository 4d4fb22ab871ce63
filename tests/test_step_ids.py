"""The shared step-id vectors against both implementations: the Rust core and the SDK's pure Python.

They must agree byte for byte with each other and with Inngest's SDKs, or a worker's replay would miss
the memos the executor recorded. Both run the same cases from tests/vectors/step_ids.json.
"""

import hashlib
import importlib
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

VECTORS: dict[str, Any] = json.loads((Path(__file__).parent / "vectors" / "step_ids.json").read_text(encoding="utf-8"))
IMPLEMENTATIONS = ["durably_server._core", "durably._ids"]


def _short(text: str) -> str:
    if not text:
        return "<empty>"
    return text if len(text) <= 24 else f"{text[:20]}...({len(text)})"


@pytest.fixture(params=IMPLEMENTATIONS)
def ids(request: pytest.FixtureRequest) -> ModuleType:
    # Imported per test, never skipped: a missing implementation must fail loudly.
    return importlib.import_module(request.param)


def test_vectors_are_sha1_of_utf8() -> None:
    """The vectors themselves are checked with hashlib, independently of both implementations."""
    for case in VECTORS["hashes"]:
        assert hashlib.sha1(case["pre_hash_id"].encode()).hexdigest() == case["hashed"]
    for sequence in VECTORS["sequences"]:
        for want in sequence["expected"]:
            assert hashlib.sha1(want["pre_hash_id"].encode()).hexdigest() == want["hashed"]


def test_vectors_hold_the_protocol_examples() -> None:
    hashes = {case["pre_hash_id"]: case["hashed"] for case in VECTORS["hashes"]}
    assert hashes["step-one"] == "536a1ebaf1da1fe4cde6b1e002b0230b80303167"
    assert hashes["step-one:1"] == "30610fce2354db7ed228564c92cfe50f1ed81f6e"
    assert hashes["step-one:2"] == "ba7bc684628f9c893bed07840177c0574574baa6"
    assert hashes["my-step-id"] == "e7d8a2f140845095749d60246ff1110c9d01d76a"


@pytest.mark.parametrize("case", VECTORS["hashes"], ids=lambda case: _short(case["pre_hash_id"]))
def test_hash_step_id(ids: ModuleType, case: dict[str, str]) -> None:
    assert ids.hash_step_id(case["pre_hash_id"]) == case["hashed"]


@pytest.mark.parametrize("sequence", VECTORS["sequences"], ids=lambda seq: _short(",".join(seq["names"])))
def test_pre_hash_id(ids: ModuleType, sequence: dict[str, Any]) -> None:
    for name, want in zip(sequence["names"], sequence["expected"], strict=True):
        assert ids.pre_hash_id(name, want["index"]) == want["pre_hash_id"]


@pytest.mark.parametrize("sequence", VECTORS["sequences"], ids=lambda seq: _short(",".join(seq["names"])))
def test_counter(ids: ModuleType, sequence: dict[str, Any]) -> None:
    counter = ids.StepIdCounter()
    got = [counter.next(name) for name in sequence["names"]]
    assert got == [(want["hashed"], want["index"]) for want in sequence["expected"]]


def test_counters_are_per_execution(ids: ModuleType) -> None:
    first, second = ids.StepIdCounter(), ids.StepIdCounter()
    assert first.next("a") == (ids.hash_step_id("a"), 0)
    assert first.next("a") == (ids.hash_step_id("a:1"), 1)
    assert second.next("a") == (ids.hash_step_id("a"), 0)


def test_user_id_with_counter_suffix_collides_like_inngest(ids: ModuleType) -> None:
    """A user id "a:1" hashes like the 2nd use of "a": Inngest has the same property; we keep it."""
    counter = ids.StepIdCounter()
    assert counter.next("a:1")[0] == ids.hash_step_id("a:1")
    counter.next("a")
    assert counter.next("a")[0] == ids.hash_step_id("a:1")
