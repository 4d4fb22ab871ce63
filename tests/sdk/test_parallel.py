"""Parallel steps, targeted executions, races and limits, against a fake executor sequence.

The executor's side of the contract: a discovery that meets several new steps together gets them
back as STEP_PLANNED; each planned step is then run by an execution whose ``targets`` name it;
results are saved in the order they were reported, which is the order the steps finished.
"""

from __future__ import annotations

import asyncio
import json
import pickle
import time
from typing import Any

import durably
import pytest
from durably._execution import MAX_STEP_OUTPUT_BYTES
from durably.protocol.v1 import worker_pb2
from sdk_helpers import FakeRun, client, execute, execute_reports, memo_ok, ops, outcome, output, sid

RUN = "OPCODE_STEP_RUN"
ERROR = "OPCODE_STEP_ERROR"
PLANNED = "OPCODE_STEP_PLANNED"


def _fan_out(ran: list[str], after: list[str], *, delay: float = 0.0) -> durably.Function:
    """gather(a, b, c) of async bodies sleeping ``delay``, then a step "total" and the return."""

    async def body(name: str) -> str:
        ran.append(name)
        await asyncio.sleep(delay)
        return name.upper()

    @client.function(id="fan-out")
    async def fn(ctx: durably.Context) -> dict[str, Any]:
        results = await asyncio.gather(*(ctx.step.run(name, body, name) for name in ("a", "b", "c")))
        after.append("gather returned")
        total = await ctx.step.run("total", lambda: "".join(results))
        return {"results": results, "total": total}

    return fn


async def test_gather_of_three_new_steps_plans_them_and_runs_none() -> None:
    ran: list[str] = []
    after: list[str] = []
    result = await execute(_fan_out(ran, after))
    assert ops(result) == [(PLANNED, "a", 0), (PLANNED, "b", 0), (PLANNED, "c", 0)]
    assert [op.id for op in result.ops] == [sid("a"), sid("b"), sid("c")]
    assert all(op.data_json == b"" and not op.HasField("error") for op in result.ops)
    assert outcome(result) == "yielded"
    assert ran == [] and after == []


async def test_targets_run_only_the_targets_and_the_handler_does_not_go_past_them() -> None:
    ran: list[str] = []
    after: list[str] = []
    run = FakeRun(_fan_out(ran, after))
    await run.discover()

    only_a = await run.run_targets("a")
    assert ops(only_a) == [(RUN, "a", 0)]
    assert json.loads(only_a.ops[0].data_json) == "A"
    assert outcome(only_a) == "yielded"
    assert ran == ["a"] and after == []  # b and c neither ran nor were reported

    rest = await run.run_targets("b", "c")
    assert sorted(ops(rest)) == [(RUN, "b", 0), (RUN, "c", 0)]
    assert outcome(rest) == "yielded" and after == []
    assert sorted(ran) == ["a", "b", "c"]

    final = await run.discover()  # all three memoized: the handler goes on, "total" runs inline
    assert ops(final) == [(RUN, "total", 0)]
    assert output(final) == {"results": ["A", "B", "C"], "total": "ABC"}
    assert sorted(ran) == ["a", "b", "c"] and after == ["gather returned"]


async def test_targets_in_one_execute_run_concurrently() -> None:
    ran: list[str] = []
    run = FakeRun(_fan_out(ran, [], delay=0.3))
    await run.discover()
    started = time.perf_counter()
    result = await run.run_targets("a", "b", "c")
    elapsed = time.perf_counter() - started
    assert sorted(ops(result)) == [(RUN, "a", 0), (RUN, "b", 0), (RUN, "c", 0)]
    assert elapsed < 0.6, f"three 0.3 s async bodies took {elapsed:.2f} s"


async def test_sync_target_bodies_run_in_threads_concurrently() -> None:
    @client.function(id="sync-fan-out")
    async def fn(ctx: durably.Context) -> None:
        await asyncio.gather(*(ctx.step.run(name, time.sleep, 0.5) for name in ("a", "b", "c")))

    started = time.perf_counter()
    result = await execute(fn, targets=[sid("a"), sid("b"), sid("c")])
    elapsed = time.perf_counter() - started
    assert sorted(ops(result)) == [(RUN, "a", 0), (RUN, "b", 0), (RUN, "c", 0)]
    assert elapsed < 0.9, f"three 0.5 s sync bodies took {elapsed:.2f} s"


async def test_gather_with_some_memoized_plans_only_the_new_ones() -> None:
    ran: list[str] = []
    run = FakeRun(_fan_out(ran, []))
    run.memos = [memo_ok("b", "saved-b")]
    result = await run.discover()
    assert ops(result) == [(PLANNED, "a", 0), (PLANNED, "c", 0)]
    assert ran == []


async def test_one_new_step_among_memoized_ones_runs_inline() -> None:
    ran: list[str] = []
    run = FakeRun(_fan_out(ran, []))
    run.memos = [memo_ok("a", "A"), memo_ok("c", "C")]
    result = await run.discover()  # met alone, nothing else to plan: as a sequential step
    assert ops(result) == [(RUN, "b", 0)]
    assert ran == ["b"] and outcome(result) == "yielded"  # "total" is new: stop there


async def test_two_gathers_one_after_the_other() -> None:
    ran: list[str] = []

    def body(name: str) -> str:
        ran.append(name)
        return name

    @client.function(id="two-gathers")
    async def fn(ctx: durably.Context) -> list[Any]:
        first = await asyncio.gather(ctx.step.run("a", body, "a"), ctx.step.run("b", body, "b"))
        second = await asyncio.gather(ctx.step.run("c", body, "c"), ctx.step.run("d", body, "d"))
        return [first, second]

    run = FakeRun(fn)
    assert ops(await run.discover()) == [(PLANNED, "a", 0), (PLANNED, "b", 0)]
    await run.run_targets("a", "b")
    assert ops(await run.discover()) == [(PLANNED, "c", 0), (PLANNED, "d", 0)]
    assert sorted(ran) == ["a", "b"]
    await run.run_targets("c", "d")
    final = await run.discover()
    assert final.ops == [] and output(final) == [["a", "b"], ["c", "d"]]
    assert sorted(ran) == ["a", "b", "c", "d"]


async def test_nested_gathers_plan_every_step_in_the_order_met() -> None:
    @client.function(id="nested-gathers")
    async def fn(ctx: durably.Context) -> None:
        await asyncio.gather(
            asyncio.gather(ctx.step.run("a", lambda: 1), ctx.step.run("b", lambda: 2)),
            ctx.step.run("c", lambda: 3),
            asyncio.gather(*(ctx.step.run("item", lambda: 4) for _ in range(2))),
        )

    result = await execute(fn)
    # The order the calls were made: inner gathers start their steps while the outer one's arguments
    # are evaluated, before the outer gather wraps "c" in a task.
    assert ops(result) == [
        (PLANNED, "a", 0),
        (PLANNED, "b", 0),
        (PLANNED, "item", 0),
        (PLANNED, "item", 1),
        (PLANNED, "c", 0),
    ]
    assert [op.id for op in result.ops][2:4] == [sid("item", 0), sid("item", 1)]


def _thousand() -> durably.Function:
    @client.function(id="thousand")
    async def fn(ctx: durably.Context) -> int:
        values = await asyncio.gather(*[ctx.step.run(f"item-{i}", lambda i=i: i) for i in range(1000)])
        return sum(values)

    return fn


async def test_a_gather_of_a_thousand_new_steps_is_planned_in_one_execution_quickly() -> None:
    fn = _thousand()
    started = time.perf_counter()
    result = await execute(fn)
    elapsed = time.perf_counter() - started
    assert ops(result) == [(PLANNED, f"item-{i}", 0) for i in range(1000)]
    assert outcome(result) == "yielded"
    assert elapsed < 0.5, f"planning 1,000 steps took {elapsed:.3f} s"

    memos = [memo_ok(f"item-{i}", i) for i in reversed(range(1000))]  # any record order
    started = time.perf_counter()
    replay = await execute(fn, memos)
    elapsed = time.perf_counter() - started
    assert output(replay) == sum(range(1000))
    assert elapsed < 0.5, f"replaying a gather of 1,000 saved steps took {elapsed:.3f} s"


async def test_plan_only_plans_even_a_single_new_step() -> None:
    ran: list[str] = []

    @client.function(id="plan-only")
    async def fn(ctx: durably.Context) -> str:
        await ctx.step.run("first", lambda: "saved")
        return await ctx.step.run("second", ran.append, "second")

    result = await execute(fn, [memo_ok("first", "x")], plan_only=True)
    assert ops(result) == [(PLANNED, "second", 0)]
    assert outcome(result) == "yielded" and ran == []


async def test_target_not_found_is_a_step_not_found_error_with_the_ops_that_ran() -> None:
    ran: list[str] = []
    fn = _fan_out(ran, [])
    result = await execute(fn, targets=[sid("a"), sid("nowhere"), sid("elsewhere")])
    assert ops(result) == [(RUN, "a", 0)] and ran == ["a"]
    assert outcome(result) == "error"
    error = result.error
    assert (error.name, error.code, error.non_retriable) == ("StepNotFound", "step_not_found", False)
    assert sid("nowhere") in error.message and sid("elsewhere") in error.message
    assert sid("a") not in error.message


async def test_target_not_reached_because_the_handler_returned() -> None:
    @client.function(id="returns-early")
    async def fn(ctx: durably.Context) -> str:
        return "done"

    result = await execute(fn, targets=[sid("a")])
    assert result.ops == [] and (result.error.name, result.error.code) == ("StepNotFound", "step_not_found")


async def test_a_failing_target_is_a_step_error_for_that_target_only() -> None:
    async def body(name: str) -> str:
        if name == "b":
            raise ValueError("b broke")
        await asyncio.sleep(0.05)
        return name

    @client.function(id="one-fails")
    async def fn(ctx: durably.Context) -> None:
        await asyncio.gather(*(ctx.step.run(name, body, name) for name in ("a", "b", "c")))

    result = await execute(fn, targets=[sid("a"), sid("b")])
    assert ops(result) == [(ERROR, "b", 0), (RUN, "a", 0)]  # in the order they finished; c not run
    assert (result.ops[0].error.name, result.ops[0].error.message) == ("ValueError", "b broke")
    assert json.loads(result.ops[1].data_json) == "a"
    assert outcome(result) == "yielded"


# --- races: memoized steps complete in record order ------------------------------------------------


def _race(order: tuple[str, str], delays: dict[str, float], winners: list[str]) -> durably.Function:
    """asyncio.wait(FIRST_COMPLETED) over two steps started in ``order``, then a step after the race."""

    async def body(name: str) -> str:
        await asyncio.sleep(delays[name])
        return name

    @client.function(id="race")
    async def fn(ctx: durably.Context) -> dict[str, Any]:
        racers = [asyncio.ensure_future(ctx.step.run(name, body, name)) for name in order]
        done, _ = await asyncio.wait(racers, return_when=asyncio.FIRST_COMPLETED)
        assert len(done) == 1, "only the step that finished first may be done"
        winner = done.pop().result()
        winners.append(winner)
        after = await ctx.step.run("after", lambda: f"{winner} won")
        return {"winner": winner, "after": after}

    return fn


@pytest.mark.parametrize("order", [("fast", "slow"), ("slow", "fast")])
async def test_race_winner_is_the_step_that_finished_first_on_every_replay(order: tuple[str, str]) -> None:
    winners: list[str] = []
    run = FakeRun(_race(order, {"fast": 0.01, "slow": 0.2}, winners))
    planned = await run.discover()
    assert sorted(ops(planned)) == [(PLANNED, "fast", 0), (PLANNED, "slow", 0)]

    both = await run.run_targets("fast", "slow")  # one replay runs both; ops in completion order
    assert ops(both) == [(RUN, "fast", 0), (RUN, "slow", 0)]

    for _ in range(3):  # every replay against the same record order picks the same winner
        replay = await execute(run.function, run.memos)
        assert ops(replay) == [(RUN, "after", 0)]
    final = await run.discover()
    await run.discover()
    assert winners == ["fast"] * 5
    assert output(await execute(run.function, run.memos)) == {"winner": "fast", "after": "fast won"}
    assert final.ops and final.ops[0].name == "after"


@pytest.mark.parametrize("order", [("fast", "slow"), ("slow", "fast")])
@pytest.mark.parametrize("record", [("fast", "slow"), ("slow", "fast")])
async def test_race_winner_follows_the_record_order_not_the_code_order(
    order: tuple[str, str], record: tuple[str, str]
) -> None:
    winners: list[str] = []
    fn = _race(order, {"fast": 0, "slow": 0}, winners)
    memos = [memo_ok(name, name) for name in record] + [memo_ok("after", f"{record[0]} won")]
    for _ in range(3):
        assert output(await execute(fn, memos)) == {"winner": record[0], "after": f"{record[0]} won"}
    assert winners == [record[0]] * 3


async def test_race_loser_keeps_running_as_a_planned_step() -> None:
    """Race mode: the executor re-invokes after the winner; the handler goes on past the race while
    the loser is still in flight, and the loser is planned again (the executor dedupes it)."""
    winners: list[str] = []
    fn = _race(("slow", "fast"), {"fast": 0, "slow": 0}, winners)
    result = await execute(fn, [memo_ok("fast", "fast")], plan_only=True)
    assert ops(result) == [(PLANNED, "slow", 0), (PLANNED, "after", 0)]
    assert winners == ["fast"]


@pytest.mark.parametrize("record", [("a", "b", "c"), ("c", "a", "b"), ("b", "c", "a")])
async def test_as_completed_sees_saved_steps_in_record_order(record: tuple[str, str, str]) -> None:
    @client.function(id="as-completed")
    async def fn(ctx: durably.Context) -> list[str]:
        return [await next_done for next_done in asyncio.as_completed([ctx.step.run(n, str) for n in "abc"])]

    assert output(await execute(fn, [memo_ok(name, name) for name in record])) == list(record)


async def test_branches_with_sequential_steps_interleave_in_record_order() -> None:
    @client.function(id="branches")
    async def fn(ctx: durably.Context) -> list[str]:
        seen: list[str] = []

        async def branch(name: str) -> None:
            for i in range(2):
                seen.append(await ctx.step.run(f"{name}{i}", str))

        await asyncio.gather(branch("x"), branch("y"))
        return seen

    record = ["y0", "x0", "x1", "y1"]
    assert output(await execute(fn, [memo_ok(name, name) for name in record])) == record


async def test_sequential_replay_of_a_thousand_steps_stays_cheap() -> None:
    @client.function(id="sequential-thousand")
    async def fn(ctx: durably.Context) -> int:
        total = 0
        for i in range(1000):
            total += await ctx.step.run(f"s{i}", int)
        return total

    memos = [memo_ok(f"s{i}", i) for i in range(1000)]
    best = min([await _timed(execute(fn, memos)) for _ in range(3)])
    assert best < 0.05, f"replaying 1,000 sequential saved steps took {best * 1000:.1f} ms"


async def _timed(run: Any) -> float:
    started = time.perf_counter()
    result = await run
    elapsed = time.perf_counter() - started
    assert output(result) == sum(range(1000))
    return elapsed


# --- limits ----------------------------------------------------------------------------------------


def _returns_json_of_size(size: int) -> durably.Function:
    @client.function(id="big-output")
    async def fn(ctx: durably.Context) -> None:
        await ctx.step.run("big", lambda: "x" * (size - 2))  # the JSON adds two quotes

    return fn


async def test_step_output_of_exactly_4_mib_passes() -> None:
    assert MAX_STEP_OUTPUT_BYTES == 4 * 1024 * 1024
    result = await execute(_returns_json_of_size(MAX_STEP_OUTPUT_BYTES))
    assert ops(result) == [(RUN, "big", 0)]
    assert len(result.ops[0].data_json) == MAX_STEP_OUTPUT_BYTES


async def test_step_output_one_byte_over_4_mib_fails_for_good() -> None:
    result = await execute(_returns_json_of_size(MAX_STEP_OUTPUT_BYTES + 1))
    assert ops(result) == [(ERROR, "big", 0)]
    assert result.ops[0].data_json == b""
    error = result.ops[0].error
    assert (error.name, error.code, error.non_retriable) == ("StepOutputTooLarge", "limit_exceeded", True)
    assert '"big"' in error.message and "4 MiB" in error.message and "4,194,305 bytes" in error.message


def _memo_limit_error(name: str) -> worker_pb2.Memo:
    memo = memo_ok("big", None)
    memo.ClearField("data_json")
    memo.error.name, memo.error.code, memo.error.non_retriable = name, "limit_exceeded", True
    memo.error.message = "step output too large"
    return memo


@pytest.mark.parametrize("catch", [durably.StepError, durably.StepOutputTooLarge, durably.LimitExceeded])
async def test_limit_failure_of_a_step_is_catchable_as_step_error_and_as_the_limit(catch: type[Exception]) -> None:
    caught: list[BaseException] = []

    @client.function(id="catch-limit")
    async def fn(ctx: durably.Context) -> str:
        try:
            await ctx.step.run("big", lambda: None)
        except catch as exc:
            caught.append(exc)
            return "recovered"
        return "not reached"

    assert output(await execute(fn, [_memo_limit_error("StepOutputTooLarge")])) == "recovered"
    [exc] = caught
    assert isinstance(exc, durably.StepError) and isinstance(exc, durably.StepOutputTooLarge)
    assert not isinstance(exc, durably.StateTooLarge)
    assert (exc.step_id, exc.error_name, exc.error_code) == ("big", "StepOutputTooLarge", "limit_exceeded")
    again = pickle.loads(pickle.dumps(exc))
    assert type(again) is type(exc) and again.error_message == "step output too large"


@pytest.mark.parametrize("name", ["StepOutputTooLarge", "StepLimitExceeded", "StateTooLarge"])
async def test_uncaught_limit_failure_fails_the_run_with_the_limit_name(name: str) -> None:
    @client.function(id="uncaught-limit")
    async def fn(ctx: durably.Context) -> None:
        try:
            await ctx.step.run("big", lambda: None)
        except getattr(durably, name):
            raise

    result = await execute(fn, [_memo_limit_error(name)])
    assert outcome(result) == "error"
    assert (result.error.name, result.error.code, result.error.non_retriable) == (name, "limit_exceeded", True)
    assert '"big"' in result.error.message


async def test_a_step_error_with_another_code_is_a_plain_step_error() -> None:
    memo = _memo_limit_error("StepOutputTooLarge")
    memo.error.code = "unknown"

    @client.function(id="not-a-limit")
    async def fn(ctx: durably.Context) -> None:
        await ctx.step.run("big", lambda: None)

    result = await execute(fn, [memo])
    assert (result.error.name, result.error.code) == ("StepError", "step_errored")


async def test_a_result_too_large_for_one_message_fails_the_run_instead_of_the_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A result larger than one gRPC message (64 MiB; 1 MiB here) would break the stream, and every
    execution on it, on every retry; what it carries cannot fit a run's state anyway."""
    monkeypatch.setattr("durably._worker.MAX_MESSAGE_BYTES", 1024 * 1024)

    @client.function(id="too-large-output")
    async def fn(ctx: durably.Context) -> str:
        chunk = await ctx.step.run("chunk", lambda: "x" * 400_000)
        return chunk * 3

    result = await execute(fn, [memo_ok("chunk", "x" * 400_000)])
    assert result.ops == [] and outcome(result) == "error"
    error = result.error
    assert (error.name, error.code, error.non_retriable) == ("StateTooLarge", "limit_exceeded", True)
    assert "1,200,002 bytes" in error.message  # the output
    assert "1,048,576 bytes" in error.message and "32 MiB" in error.message

    targets = [sid(f"chunk-{i}") for i in range(3)]

    @client.function(id="large-together")
    async def together(ctx: durably.Context) -> None:
        await asyncio.gather(*(ctx.step.run(f"chunk-{i}", lambda: "x" * 400_000) for i in range(3)))

    # Targets go out as they finish, so results too large together still reach the executor.
    reports = await execute_reports(together, targets=targets)
    assert [len(report.ops) for report in reports if report.ops] == [1, 1, 1]
    assert sorted(op.name for report in reports for op in report.ops) == ["chunk-0", "chunk-1", "chunk-2"]


# --- partial results: targets reported as they finish ----------------------------------------------


async def test_targets_are_reported_as_they_finish() -> None:
    finished: dict[str, float] = {}

    async def body(name: str, delay: float) -> str:
        await asyncio.sleep(delay)
        finished[name] = time.perf_counter()
        return name

    @client.function(id="reported-as-finished")
    async def fn(ctx: durably.Context) -> None:
        await asyncio.gather(ctx.step.run("slow", body, "slow", 0.3), ctx.step.run("fast", body, "fast", 0.01))

    from durably._memos import Memos
    from durably._worker import handle_execute
    from sdk_helpers import make_execute, no_checkpoint

    message = make_execute(fn, targets=[sid("slow"), sid("fast")])
    partials: list[tuple[float, worker_pb2.ExecutionResult]] = []
    final = await handle_execute(
        {fn.id: fn},
        message,
        Memos.of([]),
        lambda result: partials.append((time.perf_counter(), result)),
        no_checkpoint,
    )
    [(sent_at, partial)] = partials
    assert partial.partial and partial.WhichOneof("outcome") is None
    assert partial.execution_id == message.execution_id
    assert ops(partial) == [(RUN, "fast", 0)] and json.loads(partial.ops[0].data_json) == "fast"
    assert sent_at < finished["slow"]  # sent while the slow target was still running
    assert ops(final) == [(RUN, "slow", 0)]  # not repeated
    assert not final.partial and outcome(final) == "yielded"


async def test_no_partial_result_when_one_target_is_left_or_none_is() -> None:
    ran: list[str] = []
    reports = await execute_reports(_fan_out(ran, []), targets=[sid("a")])
    assert len(reports) == 1 and ops(reports[0]) == [(RUN, "a", 0)]
    reports = await execute_reports(_fan_out(ran, []))
    assert len(reports) == 1 and len(reports[0].ops) == 3  # a discovery: planned, no partials


async def test_a_target_finished_before_a_missing_one_is_reported_early() -> None:
    ran: list[str] = []
    *partials, final = await execute_reports(_fan_out(ran, []), targets=[sid("a"), sid("nowhere")])
    # "a" goes out early or with the final result (finished targets wait a moment to travel together).
    assert [op for report in (*partials, final) for op in ops(report)] == [(RUN, "a", 0)]
    assert (final.error.name, final.error.code) == ("StepNotFound", "step_not_found")
    assert sid("nowhere") in final.error.message
