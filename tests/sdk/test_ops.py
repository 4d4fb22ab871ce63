"""Steps the executor carries out: sleep, sleep_until, wait_for_event, send_event, invoke.

The worker never runs them: a discovery that meets a new one reports its op (with every field the
executor needs) and stops; a replay returns the result the executor saved. They share ids, counters
and memos with ``step.run``.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import durably
import pytest
from durably._durations import now_ms
from durably.protocol.v1 import worker_pb2
from sdk_helpers import FakeRun, client, execute, memo_err, memo_ok, ops, outcome, output, sid

RUN = "OPCODE_STEP_RUN"
ERROR = "OPCODE_STEP_ERROR"
PLANNED = "OPCODE_STEP_PLANNED"
SLEEP = "OPCODE_SLEEP"
WAIT = "OPCODE_WAIT_FOR_EVENT"
SEND = "OPCODE_SEND_EVENT"
INVOKE = "OPCODE_INVOKE"

DAY_MS = 86_400_000
other_app = durably.Client(app_id="billing", address="127.0.0.1:9")


async def _handler_noop(ctx: durably.Context) -> None:
    return None


child = client.function(id="child")(_handler_noop)
foreign_child = other_app.function(id="charge")(_handler_noop)


async def _timed(fn: durably.Function, *args: Any, **kwargs: Any) -> tuple[int, worker_pb2.ExecutionResult, int]:
    before = now_ms()
    result = await execute(fn, *args, **kwargs)
    return before, result, now_ms()


def _only_op(result: worker_pb2.ExecutionResult) -> worker_pb2.StepOp:
    assert len(result.ops) == 1, result
    return result.ops[0]


def _assert_bare(op: worker_pb2.StepOp, *, keep: str) -> None:
    """Nothing but the fields of its kind: no result, no error, no timings (nothing ran here)."""
    assert op.data_json == b"" and not op.HasField("error")
    assert (op.started_at_ms, op.ended_at_ms) == (0, 0)
    for name in ("wait", "invoke"):
        if name != keep:
            assert not op.HasField(name), name
    if keep != "wake_at_ms":
        assert op.wake_at_ms == 0
    if keep != "events":
        assert len(op.events) == 0


# --- sleep ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("duration", "ms"),
    [("30s", 30_000), ("1h30m", 5_400_000), ("500ms", 500), ("7d", 7 * DAY_MS), (timedelta(minutes=2), 120_000),
     (90, 90_000), (1.5, 1_500), (timedelta(microseconds=1), 1)],
)  # fmt: skip
async def test_sleep_reports_its_wake_time_and_stops(duration: Any, ms: int) -> None:
    after: list[str] = []

    @client.function(id="sleeper")
    async def fn(ctx: durably.Context) -> None:
        await ctx.step.sleep("nap", duration)
        after.append("woke")

    before, result, end = await _timed(fn)
    assert ops(result) == [(SLEEP, "nap", 0)]
    op = _only_op(result)
    assert op.id == sid("nap")
    assert before + ms <= op.wake_at_ms <= end + ms
    _assert_bare(op, keep="wake_at_ms")
    assert outcome(result) == "yielded" and after == []


async def test_a_saved_sleep_returns_none_and_the_handler_goes_on() -> None:
    @client.function(id="sleep-replay")
    async def fn(ctx: durably.Context) -> dict[str, Any]:
        slept = await ctx.step.sleep("nap", "1h")
        return {"slept": slept, "after": await ctx.step.run("after", lambda: "ran")}

    result = await execute(fn, [memo_ok("nap", None)])
    assert ops(result) == [(RUN, "after", 0)]
    replay = await execute(fn, [memo_ok("nap", None), memo_ok("after", "ran")])
    assert output(replay) == {"slept": None, "after": "ran"}


@pytest.mark.parametrize(
    ("duration", "message"),
    [("-5s", "negative"), (-1, "negative"), ("5 minutes", "not a duration"), ("30", "add a unit"),
     ("367d", "longer than one year"), (timedelta(days=400), "longer than one year"), (float("nan"), "not a number")],
)  # fmt: skip
async def test_a_bad_sleep_duration_raises_value_error_at_the_call(duration: Any, message: str) -> None:
    caught: list[str] = []

    @client.function(id="bad-sleep")
    async def fn(ctx: durably.Context) -> None:
        try:
            await ctx.step.sleep("nap", duration)
        except ValueError as exc:
            caught.append(str(exc))
            raise

    result = await execute(fn)
    assert result.ops == [] and outcome(result) == "error"
    assert result.error.name == "ValueError" and not result.error.non_retriable
    assert len(caught) == 1 and 'step.sleep("nap")' in caught[0] and message in caught[0]


async def test_a_sleep_of_a_wrong_type_raises_type_error() -> None:
    @client.function(id="sleep-type")
    async def fn(ctx: durably.Context) -> None:
        await ctx.step.sleep("nap", None)  # type: ignore[arg-type]

    result = await execute(fn)
    assert result.error.name == "TypeError" and 'step.sleep("nap")' in result.error.message


async def test_one_year_is_366_days() -> None:
    @client.function(id="long-sleep")
    async def fn(ctx: durably.Context) -> None:
        await ctx.step.sleep("nap", "366d")

    before, result, end = await _timed(fn)
    assert before + 366 * DAY_MS <= _only_op(result).wake_at_ms <= end + 366 * DAY_MS


# --- sleep_until ----------------------------------------------------------------------------------


def _sleep_until(when: Any) -> durably.Function:
    @client.function(id="sleep-until")
    async def fn(ctx: durably.Context) -> str:
        await ctx.step.sleep_until("until", when)
        return "woke"

    return fn


@pytest.mark.parametrize(
    "when",
    [
        datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),
        datetime(2030, 1, 2, 4, 4, 5, tzinfo=timezone(timedelta(hours=1))),
        "2030-01-02T03:04:05Z",
        "2030-01-02T05:04:05+02:00",
        "2030-01-02T03:04:05.000+00:00",
    ],
)
async def test_sleep_until_reports_the_exact_time(when: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # 2030 is more than a year away until 2029: pretend it is 2029-06-01.
    monkeypatch.setattr("durably._ops.now_ms", lambda: int(datetime(2029, 6, 1, tzinfo=UTC).timestamp() * 1000))
    result = await execute(_sleep_until(when))
    assert ops(result) == [(SLEEP, "until", 0)]
    op = _only_op(result)
    assert op.wake_at_ms == int(datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp() * 1000)
    _assert_bare(op, keep="wake_at_ms")


async def test_sleep_until_a_past_time_is_reported_all_the_same() -> None:
    past = datetime(2020, 5, 17, 12, 0, tzinfo=UTC)
    result = await execute(_sleep_until(past))
    assert ops(result) == [(SLEEP, "until", 0)]
    assert _only_op(result).wake_at_ms == int(past.timestamp() * 1000)
    assert output(await execute(_sleep_until(past), [memo_ok("until", None)])) == "woke"


@pytest.mark.parametrize(
    ("when", "error", "message"),
    [
        (datetime(2030, 1, 2, 3, 4, 5), "ValueError", "no time zone"),
        ("2030-01-02T03:04:05", "ValueError", "no time zone"),
        ("next tuesday", "ValueError", "not an ISO 8601"),
        (datetime.now(UTC) + timedelta(days=367), "ValueError", "more than one year"),
        (1_900_000_000, "TypeError", "aware datetime"),
    ],
)
async def test_sleep_until_refuses_naive_far_or_malformed_times(when: Any, error: str, message: str) -> None:
    result = await execute(_sleep_until(when))
    assert result.ops == [] and outcome(result) == "error"
    assert result.error.name == error
    assert 'step.sleep_until("until")' in result.error.message and message in result.error.message


# --- wait_for_event -------------------------------------------------------------------------------


def _waiter(**options: Any) -> durably.Function:
    @client.function(id="waiter")
    async def fn(ctx: durably.Context) -> Any:
        got = await ctx.step.wait_for_event("review", **options)
        return None if got is None else {"name": got.name, "data": got.data, "id": got.id, "ts": got.ts}

    return fn


async def test_wait_for_event_reports_event_expiry_match_and_expression() -> None:
    fn = _waiter(event="review/posted", timeout="7d", match="data.orderId", if_="async.data.stars >= 4")
    before, result, end = await _timed(fn)
    assert ops(result) == [(WAIT, "review", 0)]
    op = _only_op(result)
    assert op.id == sid("review")
    assert (op.wait.event, op.wait.match, op.wait.if_expression) == (
        "review/posted",
        "data.orderId",
        "async.data.stars >= 4",
    )
    assert before + 7 * DAY_MS <= op.wait.expires_at_ms <= end + 7 * DAY_MS
    _assert_bare(op, keep="wait")
    assert outcome(result) == "yielded"


async def test_wait_for_event_without_match_or_expression_sends_empty_strings() -> None:
    result = await execute(_waiter(event="review/posted", timeout=timedelta(seconds=30)))
    wait = _only_op(result).wait
    assert (wait.event, wait.match, wait.if_expression) == ("review/posted", "", "")


async def test_a_matched_wait_returns_the_event_and_a_timed_out_one_none() -> None:
    fn = _waiter(event="review/posted", timeout="1h")
    matched = {"id": "evt-9", "name": "review/posted", "data": {"stars": 5}, "ts": 1_700_000_000_123}
    assert output(await execute(fn, [memo_ok("review", matched)])) == matched
    assert output(await execute(fn, [memo_ok("review", None)])) is None


async def test_the_matched_event_is_a_durably_event() -> None:
    seen: list[Any] = []

    @client.function(id="wait-type")
    async def fn(ctx: durably.Context) -> None:
        seen.append(await ctx.step.wait_for_event("w", event="e", timeout="1m"))

    saved = {"id": "i", "name": "e", "data": {"k": [1]}, "ts": 5}
    await execute(fn, [memo_ok("w", saved)])
    assert seen == [durably.Event(name="e", data={"k": [1]}, id="i", ts=5)]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"event": "", "timeout": "1h"}, "non-empty event name"),
        ({"event": "e" * 256, "timeout": "1h"}, "255"),
        ({"event": "e", "timeout": "-1h"}, "negative"),
        ({"event": "e", "timeout": "400d"}, "longer than one year"),
        ({"event": "e", "timeout": "1h", "match": "data.user id"}, "dotted field path"),
        ({"event": "e", "timeout": "1h", "match": "event.data.userId"}, "without an event./async. root"),
        ({"event": "e", "timeout": "1h", "if_": "  "}, "non-empty expression"),
    ],
)
async def test_wait_for_event_argument_errors(options: dict[str, Any], message: str) -> None:
    result = await execute(_waiter(**options))
    assert result.ops == [] and result.error.name == "ValueError"
    assert 'step.wait_for_event("review")' in result.error.message and message in result.error.message


# --- send_event -----------------------------------------------------------------------------------


async def test_send_event_reports_the_events_and_returns_the_saved_ids() -> None:
    sent: list[list[str]] = []

    @client.function(id="sender")
    async def fn(ctx: durably.Context) -> None:
        sent.append(await ctx.step.send_event("notify", durably.Event("order/ready", {"orderId": 7})))
        sent.append(
            await ctx.step.send_event(
                "fan-out", [durably.Event("a/b", id="dedup-1", ts=1_700_000_000_000), durably.Event("c/d", {"x": [1]})]
            )
        )

    first = await execute(fn)
    assert ops(first) == [(SEND, "notify", 0)]
    op = _only_op(first)
    assert [(e.name, json.loads(e.data_json), e.id, e.ts_ms) for e in op.events] == [
        ("order/ready", {"orderId": 7}, "", 0)
    ]
    _assert_bare(op, keep="events")

    second = await execute(fn, [memo_ok("notify", ["id-1"])])
    assert ops(second) == [(SEND, "fan-out", 0)]
    assert [(e.name, e.data_json, e.id, e.ts_ms) for e in _only_op(second).events] == [
        ("a/b", b"{}", "dedup-1", 1_700_000_000_000),
        ("c/d", b'{"x":[1]}', "", 0),
    ]

    sent.clear()
    final = await execute(fn, [memo_ok("notify", ["id-1"]), memo_ok("fan-out", ["dedup-1", "id-3"])])
    assert outcome(final) == "output_json" and final.ops == []
    assert sent == [["id-1"], ["dedup-1", "id-3"]]


@pytest.mark.parametrize(
    ("events", "error", "message"),
    [
        (durably.Event("e", {"when": {1}}), "ValueError", 'event 0 ("e"): data $.when is a set'),
        ([durably.Event("ok"), durably.Event("")], "ValueError", "event 1 has no name"),
        (durably.Event("e", [1]), "ValueError", "data must be a dict"),  # type: ignore[arg-type]
        (durably.Event("x" * 256), "ValueError", "255"),
        ([], "ValueError", "at least one event"),
        ({"name": "e"}, "TypeError", "durably.Event"),
        ([durably.Event("ok"), "e"], "TypeError", "at position 1"),
    ],
)
async def test_send_event_checks_events_like_client_send(events: Any, error: str, message: str) -> None:
    @client.function(id="bad-sender")
    async def fn(ctx: durably.Context) -> None:
        await ctx.step.send_event("notify", events)

    result = await execute(fn)
    assert result.ops == [] and result.error.name == error
    assert 'step.send_event("notify")' in result.error.message and message in result.error.message


# --- invoke ---------------------------------------------------------------------------------------


def _invoker(function: Any, **options: Any) -> durably.Function:
    @client.function(id="invoker")
    async def fn(ctx: durably.Context) -> Any:
        try:
            return {"output": await ctx.step.invoke("call", function=function, **options)}
        except durably.StepError as exc:
            return {"error": [exc.step_id, exc.error_name, exc.error_message]}

    return fn


@pytest.mark.parametrize(
    ("function", "function_id"),
    [(child, "child"), (foreign_child, "billing/charge"), ("child", "child"), ("billing/charge", "billing/charge")],
)
async def test_invoke_reports_the_function_id(function: Any, function_id: str) -> None:
    result = await execute(_invoker(function, data={"orderId": 7}))
    assert ops(result) == [(INVOKE, "call", 0)]
    op = _only_op(result)
    assert op.id == sid("call")
    assert (op.invoke.function_id, json.loads(op.invoke.data_json), op.invoke.expires_at_ms) == (
        function_id,
        {"orderId": 7},
        0,
    )
    _assert_bare(op, keep="invoke")
    assert outcome(result) == "yielded"


async def test_invoke_with_a_timeout_and_no_data() -> None:
    before, result, end = await _timed(_invoker(child, timeout="10m"))
    invoke = _only_op(result).invoke
    assert invoke.data_json == b"{}"
    assert before + 600_000 <= invoke.expires_at_ms <= end + 600_000


async def test_invoke_returns_the_child_output_and_raises_its_failure_as_step_error() -> None:
    fn = _invoker(child)
    assert output(await execute(fn, [memo_ok("call", {"total": 42})])) == {"output": {"total": 42}}
    failed = await execute(fn, [memo_err("call", "InvokeError", "ValueError: card declined")])
    assert output(failed) == {"error": ["call", "InvokeError", "ValueError: card declined"]}
    timed_out = await execute(fn, [memo_err("call", "InvokeTimeout", "the child did not finish within 10m")])
    assert output(timed_out)["error"][1] == "InvokeTimeout"


async def test_an_uncaught_invoke_failure_fails_the_run_for_good() -> None:
    @client.function(id="invoke-uncaught")
    async def fn(ctx: durably.Context) -> Any:
        return await ctx.step.invoke("call", function="child")

    result = await execute(fn, [memo_err("call", "InvokeError", "boom")])
    assert (result.error.name, result.error.non_retriable, result.error.code) == ("StepError", True, "step_errored")
    assert "InvokeError" in result.error.message


@pytest.mark.parametrize(
    ("function", "options", "error", "message"),
    [
        (child, {"data": {"s": {1}}}, "ValueError", "data $.s is a set"),
        (child, {"data": [1]}, "ValueError", "data must be a dict"),
        (child, {"timeout": "2y"}, "ValueError", "not a duration"),
        (child, {"timeout": "400d"}, "ValueError", "longer than one year"),
        ("has space", {}, "ValueError", "not a function id"),
        (_handler_noop, {}, "TypeError", "@client.function"),
    ],
)
async def test_invoke_argument_errors(function: Any, options: dict[str, Any], error: str, message: str) -> None:
    result = await execute(_invoker(function, **options))
    assert result.ops == [] and result.error.name == error
    assert 'step.invoke("call")' in result.error.message and message in result.error.message


# --- shared with step.run: ids, counters, parallelism, plan_only, targets -------------------------


async def test_op_steps_share_ids_and_counters_with_step_run() -> None:
    @client.function(id="shared-counter")
    async def fn(ctx: durably.Context) -> str:
        await ctx.step.run("x", lambda: 1)
        await ctx.step.sleep("x", "1s")
        await ctx.step.wait_for_event("x", event="e", timeout="1s")
        await ctx.step.send_event("x", durably.Event("e"))
        await ctx.step.invoke("x", function=child)
        return await ctx.step.run("x", lambda: "last")

    memos = [memo_ok("x", 1)]
    expected = [(SLEEP, "x", 1, None), (WAIT, "x", 2, None), (SEND, "x", 3, ["i"]), (INVOKE, "x", 4, "out")]
    for kind, name, index, saved in expected:
        result = await execute(fn, memos)
        assert ops(result) == [(kind, name, index)]
        assert result.ops[0].id == sid("x", index)
        memos.append(memo_ok("x", saved, index=index))
    last = await execute(fn, memos)
    assert ops(last) == [(RUN, "x", 5)] and last.ops[0].id == sid("x", 5)
    assert output(last) == "last"


async def test_a_gather_of_a_run_and_a_sleep_reports_a_planned_step_and_a_sleep() -> None:
    ran: list[str] = []

    @client.function(id="run-and-sleep")
    async def fn(ctx: durably.Context) -> list[Any]:
        return list(await asyncio.gather(ctx.step.run("a", ran.append, "a"), ctx.step.sleep("nap", "1m")))

    run = FakeRun(fn)
    discovered = await run.discover()
    assert ops(discovered) == [(PLANNED, "a", 0), (SLEEP, "nap", 0)]
    assert ran == [] and outcome(discovered) == "yielded"

    targeted = await run.run_targets("a")  # the sleep is neither reported nor run here
    assert ops(targeted) == [(RUN, "a", 0)] and ran == ["a"]
    assert outcome(targeted) == "yielded"

    waiting = await run.discover(plan_only=False)  # "a" saved, the sleep not yet: reported again
    assert ops(waiting) == [(SLEEP, "nap", 0)]
    run.memos.append(memo_ok("nap", None))
    assert output(await run.discover()) == [None, None]


async def test_a_gather_of_op_steps_reports_them_all_in_order() -> None:
    @client.function(id="ops-together")
    async def fn(ctx: durably.Context) -> None:
        await asyncio.gather(
            ctx.step.wait_for_event("wait", event="e", timeout="1h"),
            ctx.step.send_event("send", durably.Event("e")),
            ctx.step.invoke("call", function=child),
            ctx.step.sleep("nap", "1s"),
        )

    assert ops(await execute(fn)) == [(WAIT, "wait", 0), (SEND, "send", 0), (INVOKE, "call", 0), (SLEEP, "nap", 0)]


async def test_plan_only_reports_op_steps_the_same_way() -> None:
    @client.function(id="plan-only-sleep")
    async def fn(ctx: durably.Context) -> None:
        await ctx.step.run("first", lambda: 1)
        await ctx.step.sleep("nap", "5s")

    before, result, end = await _timed(fn, [memo_ok("first", 1)], plan_only=True)
    assert ops(result) == [(SLEEP, "nap", 0)]
    assert before + 5000 <= _only_op(result).wake_at_ms <= end + 5000


async def test_a_targeted_execution_neither_reports_nor_checks_op_steps() -> None:
    @client.function(id="targeted-ops")
    async def fn(ctx: durably.Context) -> None:
        await asyncio.gather(
            ctx.step.run("a", lambda: "A"),
            ctx.step.sleep("nap", "-1s"),  # would be a ValueError in a discovery
            ctx.step.invoke("call", function=child),
        )

    result = await execute(fn, targets=[sid("a")])
    assert ops(result) == [(RUN, "a", 0)] and outcome(result) == "yielded"


async def test_a_targeted_execution_does_not_reach_an_op_step_as_a_target() -> None:
    @client.function(id="target-a-sleep")
    async def fn(ctx: durably.Context) -> None:
        await ctx.step.sleep("nap", "1s")

    result = await execute(fn, targets=[sid("nap")])
    assert result.ops == [] and result.error.name == "StepNotFound"


async def test_an_op_step_after_a_step_ran_inline_waits_for_the_next_discovery() -> None:
    @client.function(id="run-then-sleep")
    async def fn(ctx: durably.Context) -> None:
        await ctx.step.run("a", lambda: "A")
        await ctx.step.sleep("nap", "1s")

    result = await execute(fn)
    assert ops(result) == [(RUN, "a", 0)] and outcome(result) == "yielded"
    assert ops(await execute(fn, [memo_ok("a", "A")])) == [(SLEEP, "nap", 0)]


async def test_op_steps_cannot_be_nested_in_a_step_body() -> None:
    @client.function(id="nested-sleep")
    async def fn(ctx: durably.Context) -> None:
        async def body() -> None:
            await ctx.step.sleep("inner", "1s")

        await ctx.step.run("outer", body)

    result = await execute(fn)
    assert ops(result) == [(ERROR, "outer", 0)]
    error = result.ops[0].error
    assert (error.name, error.non_retriable) == ("StepNestedError", True)
    assert 'step.sleep("inner") was called inside the body of step "outer"' in error.message


async def test_an_op_step_needs_a_str_id() -> None:
    @client.function(id="no-id")
    async def fn(ctx: durably.Context) -> None:
        await ctx.step.sleep("", "1s")

    result = await execute(fn)
    assert result.error.name == "TypeError" and "step.sleep() needs a non-empty str id" in result.error.message


async def test_a_handler_with_every_op_replays_from_saved_results() -> None:
    @client.function(id="every-op")
    async def fn(ctx: durably.Context) -> dict[str, Any]:
        await ctx.step.sleep("nap", "1d")
        await ctx.step.sleep_until("until", "2020-01-01T00:00:00Z")
        reply = await ctx.step.wait_for_event("reply", event="r", timeout="1d", match="data.id")
        ids = await ctx.step.send_event("notify", durably.Event("n"))
        summary = await ctx.step.invoke("summarise", function=child, data={"id": 1})
        return {"reply": reply and reply.data, "ids": ids, "summary": summary}

    memos = [
        memo_ok("nap", None),
        memo_ok("until", None),
        memo_ok("reply", {"id": "e1", "name": "r", "data": {"id": 1}, "ts": 9}),
        memo_ok("notify", ["n1"]),
        memo_ok("summarise", "short"),
    ]
    result = await execute(fn, memos)
    assert result.ops == []
    assert output(result) == {"reply": {"id": 1}, "ids": ["n1"], "summary": "short"}
