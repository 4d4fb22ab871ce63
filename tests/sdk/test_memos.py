"""The worker's memo cache fills in the results the executor names instead of sending
(``Memo.reported_in``) from what the worker kept when it reported them."""

from __future__ import annotations

from durably._convert import memos_from_pb
from durably._memos import MemoCache, Reported
from durably.protocol.v1 import common_pb2, worker_pb2


def test_a_named_result_is_the_one_kept_for_that_execution() -> None:
    cache = MemoCache(10)
    assert cache.receive("run", 0, []) is not None
    big = b'"' + b"x" * 1000 + b'"'
    cache.keep("run", "exec-1", [("a", big), ("b", b"2")])
    cache.keep("run", "exec-2", [("b", b"3")])  # another execution's report of b: not the one recorded

    memos = cache.receive("run", 0, [("a", Reported("exec-1")), ("b", Reported("exec-1")), ("c", b"4")])
    assert memos is not None
    assert memos.outcomes == [big, b"2", b"4"] and memos.outcomes[0] is big, "a kept result is used as it is"
    assert memos.positions == {"a": 0, "b": 1, "c": 2} and memos.length == 3


def test_a_named_result_the_worker_does_not_have_asks_for_the_whole_state() -> None:
    cache = MemoCache(10)
    cache.receive("run", 0, [("a", b"1")])
    cache.keep("run", "exec-1", [("b", b"2")])
    assert cache.receive("run", 1, [("b", Reported("exec-9"))]) is None
    # The run was forgotten: a delta on top of it cannot be applied either ...
    assert cache.receive("run", 1, [("c", b"3")]) is None
    # ... until the executor sends the whole state.
    memos = cache.receive("run", 0, [("a", b"1"), ("b", b"2")])
    assert memos is not None and memos.outcomes == [b"1", b"2"]


def test_a_named_result_is_used_once_and_results_of_runs_not_held_are_not_kept() -> None:
    cache = MemoCache(1)
    cache.receive("run", 0, [])
    cache.keep("run", "exec-1", [("a", b"1")])
    assert cache.receive("run", 0, [("a", Reported("exec-1"))]) is not None
    assert cache.receive("run", 0, [("a", Reported("exec-1"))]) is None, "a kept result is handed out once"

    cache.keep("other", "exec-2", [("a", b"1")])  # never executed here: nothing to keep it with
    assert cache.receive("other", 0, [("a", Reported("exec-2"))]) is None


def test_memos_from_pb_reads_each_kind_of_outcome() -> None:
    memos = [
        worker_pb2.Memo(id="a", data_json=b"1"),
        worker_pb2.Memo(id="b", reported_in="exec-1"),
        worker_pb2.Memo(id="c", error=common_pb2.Failure(name="Boom", message="no")),
    ]
    (a, data), (b, named), (c, failure) = memos_from_pb(memos)
    assert (a, data) == ("a", b"1")
    assert (b, named) == ("b", Reported("exec-1"))
    assert c == "c" and not isinstance(failure, bytes | Reported) and failure.name == "Boom"
