"""Failure semantics and function options, SDK side: RetryAfterError's delay, concurrency, timeouts,
on_failure handlers, cron and filtered triggers, cancel_on, and how each reaches FunctionConfig."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta
from typing import Any

import durably
import pytest
from durably import _convert
from durably._durations import now_ms
from durably.protocol.v1 import common_pb2, worker_pb2
from sdk_helpers import execute, memo_ok, ops, outcome, output

client = durably.Client(app_id="opts", address="127.0.0.1:9")


async def handler(ctx: durably.Context) -> None:
    return None


async def on_failed(ctx: durably.Context) -> dict[str, Any]:
    return {"failed_run": ctx.event.data["run_id"], "event": ctx.event.name}


def _config(function: durably.Function) -> worker_pb2.FunctionConfig:
    return _convert.function_config(function)


def _registered(*functions: durably.Function) -> list[worker_pb2.FunctionConfig]:
    """The FunctionConfigs a worker serving ``functions`` registers."""
    worker = durably.Worker(client, functions=list(functions))
    message = _convert.register_message(client.app_id, worker._functions.values(), 1, "w", "0")
    return list(message.register.functions)


# --- RetryAfterError ------------------------------------------------------------------------------


def _raises_in_step(exc: Exception) -> durably.Function:
    def body() -> None:
        raise exc

    @client.function(id="rate-limited")
    async def fn(ctx: durably.Context) -> None:
        await ctx.step.run("call-api", body)

    return fn


@pytest.mark.parametrize(
    ("after", "ms"), [(5, 5_000), (2.5, 2_500), (0.0001, 1), (timedelta(minutes=1), 60_000), (0, 0)]
)
async def test_retry_after_in_a_step_is_a_retriable_step_error_with_the_delay(after: Any, ms: int) -> None:
    result = await execute(_raises_in_step(durably.RetryAfterError("slow down", after=after)))
    assert ops(result) == [("OPCODE_STEP_ERROR", "call-api", 0)]
    error = result.ops[0].error
    assert (error.name, error.message, error.code, error.non_retriable) == (
        "RetryAfterError",
        "slow down",
        "retry_after_error",
        False,
    )
    assert error.retry_after_ms == ms


async def test_retry_after_a_datetime_counts_from_the_report() -> None:
    deadline = datetime.now(UTC) + timedelta(seconds=30)
    deadline_ms = int(deadline.timestamp() * 1000)
    before = now_ms()
    result = await execute(_raises_in_step(durably.RetryAfterError("later", after=deadline)))
    after = now_ms()
    assert deadline_ms - after <= result.ops[0].error.retry_after_ms <= deadline_ms - before + 1


async def test_retry_after_a_past_datetime_is_zero() -> None:
    result = await execute(_raises_in_step(durably.RetryAfterError("now", after=datetime(2020, 1, 1, tzinfo=UTC))))
    assert result.ops[0].error.retry_after_ms == 0


async def test_retry_after_outside_steps_is_carried_by_the_function_error() -> None:
    @client.function(id="handler-rate-limited")
    async def fn(ctx: durably.Context) -> None:
        await ctx.step.run("first", lambda: 1)
        raise durably.RetryAfterError("busy", after=timedelta(seconds=90))

    result = await execute(fn, [memo_ok("first", 1)])
    assert outcome(result) == "error" and result.ops == []
    assert (result.error.name, result.error.non_retriable, result.error.retry_after_ms) == (
        "RetryAfterError",
        False,
        90_000,
    )


async def test_other_failures_carry_no_delay() -> None:
    result = await execute(_raises_in_step(ValueError("boom")))
    assert result.ops[0].error.retry_after_ms == 0


def test_retry_after_error_checks_its_delay() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        durably.RetryAfterError("x", after=datetime(2030, 1, 1))
    with pytest.raises(ValueError, match="negative"):
        durably.RetryAfterError("x", after=-1)
    with pytest.raises(ValueError, match="negative"):
        durably.RetryAfterError("x", after=timedelta(seconds=-1))
    with pytest.raises(TypeError):
        durably.RetryAfterError("x", after="30s")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        durably.RetryAfterError("x", after=True)
    copy = pickle.loads(pickle.dumps(durably.RetryAfterError("x", after=3)))
    assert (str(copy), copy.after, copy.retry_after_ms()) == ("x", 3, 3000)


# --- concurrency ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("concurrency", "limits"),
    [
        (None, []),
        (5, [(5, "")]),
        (durably.Concurrency(2), [(2, "")]),
        (durably.Concurrency(1, key="event.data.userId"), [(1, "event.data.userId")]),
        (
            [durably.Concurrency(10), durably.Concurrency(1, key="event.data.user-id")],
            [(10, ""), (1, "event.data.user-id")],
        ),
        ([3], [(3, "")]),
    ],
)
def test_concurrency_reaches_the_function_config(concurrency: Any, limits: list[tuple[int, str]]) -> None:
    fn = client.function(id="limited", concurrency=concurrency)(handler)
    assert [(limit.limit, limit.key) for limit in _config(fn).concurrency] == limits
    assert all(isinstance(limit, common_pb2.ConcurrencyLimit) for limit in _config(fn).concurrency)


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: durably.Concurrency(0), ValueError, "between 1 and 10000"),
        (lambda: durably.Concurrency(10_001), ValueError, "between 1 and 10000"),
        (lambda: durably.Concurrency(True), TypeError, "must be an int"),  # type: ignore[arg-type]
        (lambda: durably.Concurrency(1, key="data.userId"), ValueError, "event.data.userId"),
        (lambda: durably.Concurrency(1, key="event"), ValueError, "field path"),
        (lambda: durably.Concurrency(1, key="event.data.a b"), ValueError, "field path"),
        (lambda: client.function(id="f", concurrency=0), ValueError, "between 1"),
        (lambda: client.function(id="f", concurrency=[1, 2, 3]), ValueError, "at most 2 concurrency limits"),
        (lambda: client.function(id="f", concurrency="1"), TypeError, "concurrency must be"),  # type: ignore[arg-type]
    ],
)
def test_bad_concurrency_fails_at_decoration(make: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        make()


# --- timeouts -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timeouts", "start", "finish"),
    [
        (None, 0, 0),
        (durably.Timeouts(start="30s"), 30_000, 0),
        (durably.Timeouts(finish="2h"), 0, 7_200_000),
        (durably.Timeouts(start=timedelta(minutes=1), finish=90.5), 60_000, 90_500),
        (durably.Timeouts(start="1h30m", finish="366d"), 5_400_000, 366 * 86_400_000),
    ],
)
def test_timeouts_reach_the_function_config(timeouts: Any, start: int, finish: int) -> None:
    config = _config(client.function(id="timed", timeouts=timeouts)(handler))
    assert (config.start_timeout_ms, config.finish_timeout_ms) == (start, finish)


def test_timeouts_are_parsed_once_and_comparable() -> None:
    timeouts = durably.Timeouts(start="1m", finish=60)
    assert (timeouts.start, timeouts.finish) == (timedelta(minutes=1), timedelta(minutes=1))
    assert timeouts == durably.Timeouts(start=timedelta(seconds=60), finish="60s")
    with pytest.raises(AttributeError):
        timeouts.start = None  # type: ignore[misc]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"start": "-1s"}, "negative"),
        ({"finish": "367d"}, "longer than one year"),
        ({"start": "soon"}, "not a duration"),
        ({"finish": 0}, "longer than 0"),
    ],
)
def test_bad_timeouts(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        durably.Timeouts(**options)


def test_timeouts_must_be_a_timeouts_object() -> None:
    with pytest.raises(TypeError, match=r"durably\.Timeouts"):
        client.function(id="f", timeouts="30s")  # type: ignore[arg-type]


# --- on_failure -----------------------------------------------------------------------------------


def test_on_failure_is_a_function_of_its_own() -> None:
    fn = client.function(id="charge", trigger=durably.on_event("order/placed"), retries=5, on_failure=on_failed)(
        handler
    )
    failure = fn.on_failure
    assert failure is not None
    assert (failure.id, failure.app_id, failure.handler, failure.triggers, failure.retries) == (
        "charge-failure",
        "opts",
        on_failed,
        (),
        5,
    )
    assert failure.on_failure is None


def test_a_worker_registers_the_function_and_its_failure_handler() -> None:
    fn = client.function(id="charge", trigger=durably.on_event("order/placed"), retries=2, on_failure=on_failed)(
        handler
    )
    main, failure = _registered(fn)
    assert (main.id, main.on_failure, main.retries, [t.event for t in main.triggers]) == (
        "charge",
        "charge-failure",
        2,
        ["order/placed"],
    )
    assert (failure.id, failure.on_failure, failure.retries, list(failure.triggers)) == ("charge-failure", "", 2, [])
    # Listing the handler as well changes nothing; another function with its id is refused.
    assert [config.id for config in _registered(fn, fn.on_failure)] == ["charge", "charge-failure"]  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="two functions have the id 'charge-failure'"):
        _registered(fn, client.function(id="charge-failure")(handler))


async def test_the_failure_handler_runs_with_the_failed_event() -> None:
    fn = client.function(id="charge", on_failure=on_failed)(handler)
    assert fn.on_failure is not None
    result = await execute(fn.on_failure, data={"run_id": "run-9", "function_id": "charge"})
    assert output(result) == {"failed_run": "run-9", "event": "test/event"}


def test_on_failure_errors_fail_at_decoration() -> None:
    def sync_handler(ctx: durably.Context) -> None:
        return None

    with pytest.raises(TypeError, match="'charge-failure': the handler must be an `async def`"):
        client.function(id="charge", on_failure=sync_handler)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at most 120 characters"):
        client.function(id="x" * 121, on_failure=on_failed)
    assert client.function(id="x" * 120, on_failure=on_failed)(handler).on_failure.id == "x" * 120 + "-failure"  # type: ignore[union-attr]


# --- triggers: filters and cron -------------------------------------------------------------------


def test_event_trigger_with_if_and_several_triggers() -> None:
    fn = client.function(
        id="big-orders",
        trigger=[durably.on_event("order/placed", if_="event.data.total > 100"), durably.on_cron("*/5 * * * *")],
    )(handler)
    assert fn.triggers == (
        durably.EventTrigger("order/placed", if_="event.data.total > 100"),
        durably.CronTrigger("*/5 * * * *", "UTC"),
    )
    event, cron = _config(fn).triggers
    assert (event.WhichOneof("kind"), event.event, event.if_expression) == (
        "event",
        "order/placed",
        "event.data.total > 100",
    )
    assert cron.WhichOneof("kind") == "cron"
    assert (cron.cron.schedule, cron.cron.timezone, cron.if_expression) == ("*/5 * * * *", "UTC", "")


def test_cron_trigger_alone_with_a_time_zone() -> None:
    fn = client.function(id="nightly", trigger=durably.on_cron("0  3 * * MON-FRI", timezone="Europe/Paris"))(handler)
    (trigger,) = _config(fn).triggers
    assert (trigger.cron.schedule, trigger.cron.timezone) == ("0 3 * * MON-FRI", "Europe/Paris")


@pytest.mark.parametrize(
    "schedule",
    ["* * * * *", "*/15 9-17 * * 1-5", "0 0 1,15 * *", "30 2 L * *", "0 12 * JAN,jul SUN", "0 0 * * 5#2", "0 0 * * 7"],
)
def test_valid_cron_schedules(schedule: str) -> None:
    assert durably.on_cron(schedule).schedule == schedule


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("* * * *", "5 fields"),
        ("* * * * * *", "5 fields"),
        ("@hourly", "5 fields"),
        ("60 * * * *", "outside 0-59"),
        ("* 24 * * *", "outside 0-23"),
        ("* * 0 * *", "outside 1-31"),
        ("* * * 13 *", "outside 1-12"),
        ("* * * * 8", "outside 0-7"),
        ("*/0 * * * *", "step of 0"),
        ("x * * * *", "not a valid minute"),
        ("* * * FOO *", "not a valid month"),
        ("1-2-3 * * * *", "is not a value"),
    ],
)
def test_bad_cron_schedules(schedule: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        durably.on_cron(schedule)


def test_cron_time_zones_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        durably.on_cron("* * * * *", timezone="Mars/Olympus")
    with pytest.raises(ValueError, match="unknown time zone"):
        durably.on_cron("* * * * *", timezone="")
    with pytest.raises(TypeError):
        durably.on_cron(5)  # type: ignore[arg-type]


def test_match_is_refused_on_a_trigger() -> None:
    with pytest.raises(ValueError, match="only for cancel_on"):
        client.function(id="f", trigger=durably.on_event("e", match="data.id"))
    with pytest.raises(TypeError, match="on_cron"):
        client.function(id="f", trigger="e")  # type: ignore[arg-type]


# --- cancel_on ------------------------------------------------------------------------------------


def test_cancel_on_reaches_the_function_config() -> None:
    fn = client.function(
        id="fulfil",
        trigger=durably.on_event("order/placed"),
        cancel_on=[
            durably.on_event("order/cancelled", match="data.orderId"),
            durably.on_event("user/deleted", if_="async.data.userId == event.data.userId"),
        ],
    )(handler)
    assert [(rule.event, rule.match, rule.if_expression) for rule in _config(fn).cancel_on] == [
        ("order/cancelled", "data.orderId", ""),
        ("user/deleted", "", "async.data.userId == event.data.userId"),
    ]
    single = client.function(id="f", cancel_on=durably.on_event("stop", match="data.id", if_="async.data.now"))(handler)
    assert [(r.event, r.match, r.if_expression) for r in _config(single).cancel_on] == [
        ("stop", "data.id", "async.data.now")
    ]


def test_bad_cancel_on_rules() -> None:
    with pytest.raises(TypeError, match=r"cancel_on takes durably\.on_event"):
        client.function(id="f", cancel_on=[durably.on_cron("* * * * *")])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="dotted field path"):
        durably.on_event("stop", match="data.order id")
    with pytest.raises(ValueError, match=r"without an event\./async\. root"):
        durably.on_event("stop", match="async.data.id")
    with pytest.raises(ValueError, match="non-empty expression"):
        durably.on_event("stop", if_="")


def test_a_plain_function_has_an_empty_config() -> None:
    config = _config(client.function(id="plain", trigger=durably.on_event("e"))(handler))
    assert config == worker_pb2.FunctionConfig(
        id="plain", triggers=[worker_pb2.Trigger(event="e")], retries=3, optimize_parallelism=False
    )
