"""The worker's memo cache fills in the results the executor names instead of sending
(``Memo.reported_in``) from what the worker kept when it reported them."""

from __future__ import annotations

import durably
from durably._convert import memos_from_pb
from durably._memos import MemoCache, Memos, Reported
from durably._ops import OpKind, StepOp
from durably._worker import handle_execute
from durably.protocol.v1 import common_pb2, worker_pb2
from sdk_helpers import client, make_execute, no_checkpoint


def ran(step_id: str, data: bytes, scalar: tuple[object] | None = None) -> StepOp:
    return StepOp(OpKind.STEP_RUN, step_id, step_id, 0, 0, 0, data_json=data, scalar=scalar)


def test_a_named_result_is_the_one_kept_for_that_execution() -> None:
    cache = MemoCache(10)
    assert cache.receive("run", 0, []) is not None
    big = b'"' + b"x" * 1000 + b'"'
    planned = StepOp(OpKind.STEP_PLANNED, "p", "p", 0, 0, 0)
    cache.keep("run", "exec-1", [ran("a", big), ran("b", b"2"), planned])
    cache.keep("run", "exec-2", [ran("b", b"3")])  # another execution's report of b: not the one recorded

    memos = cache.receive("run", 0, [("a", Reported("exec-1")), ("b", Reported("exec-1")), ("c", b"4")])
    assert memos is not None
    assert memos.outcomes == [big, b"2", b"4"] and memos.outcomes[0] is big, "a kept result is used as it is"
    assert memos.positions == {"a": 0, "b": 1, "c": 2} and memos.length == 3
    assert cache.receive("run", 3, [("p", Reported("exec-1"))]) is None, "only a step's result is kept"


def test_a_kept_immutable_result_is_not_decoded_again() -> None:
    cache = MemoCache(10)
    cache.receive("run", 0, [("a", b"1")])
    text = "x" * 1000
    cache.keep("run", "exec-1", [ran("b", f'"{text}"'.encode(), (text,)), ran("c", b"[1]"), ran("d", b"null", (None,))])
    memos = cache.receive("run", 1, [("b", Reported("exec-1")), ("c", Reported("exec-1")), ("d", Reported("exec-1"))])
    assert memos is not None
    assert memos.scalars == {1: text, 3: None} and memos.scalars[1] is text, "the value itself, at its position"


def test_a_named_result_the_worker_does_not_have_asks_for_the_whole_state() -> None:
    cache = MemoCache(10)
    cache.receive("run", 0, [("a", b"1")])
    cache.keep("run", "exec-1", [ran("b", b"2")])
    assert cache.receive("run", 1, [("b", Reported("exec-9"))]) is None
    # The run was forgotten: a delta on top of it cannot be applied either ...
    assert cache.receive("run", 1, [("c", b"3")]) is None
    # ... until the executor sends the whole state.
    memos = cache.receive("run", 0, [("a", b"1"), ("b", b"2")])
    assert memos is not None and memos.outcomes == [b"1", b"2"]


def test_a_named_result_is_used_once_and_results_of_runs_not_held_are_not_kept() -> None:
    cache = MemoCache(1)
    cache.receive("run", 0, [])
    cache.keep("run", "exec-1", [ran("a", b"1")])
    assert cache.receive("run", 0, [("a", Reported("exec-1"))]) is not None
    assert cache.receive("run", 0, [("a", Reported("exec-1"))]) is None, "a kept result is handed out once"

    cache.keep("other", "exec-2", [ran("a", b"1")])  # never executed here: nothing to keep it with
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


async def test_the_worker_keeps_what_it_reports_with_immutable_values_as_they_are() -> None:
    @client.function(id="keeper")
    async def fn(ctx: durably.Context) -> None:
        await ctx.step.run("text", lambda: "hello")

    @client.function(id="keeper-list")
    async def fn_list(ctx: durably.Context) -> None:
        await ctx.step.run("items", lambda: ["a"])

    for function, expected in ((fn, ("hello",)), (fn_list, None)):
        kept: list[StepOp] = []
        message = make_execute(function)
        result = await handle_execute({function.id: function}, message, Memos.of([]), print, no_checkpoint, kept.extend)
        [op] = kept
        assert [reported.id for reported in result.ops] == [op.id] and op.op is OpKind.STEP_RUN
        assert op.scalar == expected and op.data_json == result.ops[0].data_json


def test_the_cache_drops_the_least_recently_used_runs_beyond_its_byte_budget_but_never_the_one_in_use() -> None:
    cache = MemoCache(100, max_bytes=1100)
    for run in ("a", "b", "c"):
        assert cache.receive(run, 0, [("s", b"x" * 300)]) is not None
    assert cache.size == 900
    cache.keep("a", "exec-1", [ran("t", b"y" * 200)])  # a is used again: b is now the oldest
    cache.keep("a", "exec-1", [ran("t", b"y" * 200)])  # kept again (sent ahead, then in the final result)
    assert cache.size == 1100
    assert cache.receive("d", 0, [("s", b"x" * 300)]) is not None
    assert cache.receive("b", 1, [("t", b"1")]) is None, "b was dropped to stay within 1100 bytes"
    assert cache.size == 1100, "a (500: its outcome and a kept result), c and d"
    memos = cache.receive("a", 1, [("t", Reported("exec-1"))])
    assert memos is not None and memos.outcomes == [b"x" * 300, b"y" * 200] and cache.size == 1100

    huge = cache.receive("e", 0, [("s", b"z" * 5000)])
    assert huge is not None and cache.size == 5000, "a run over the budget alone is still held, alone"
    cache.drop("e")
    assert cache.size == 0
