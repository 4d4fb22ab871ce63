"""Function declarations, triggers, events and workers are checked when they are made."""

from __future__ import annotations

from typing import Any

import durably
import pytest
from durably.errors import ErrorCode, InvalidArgumentError

client = durably.Client(app_id="decl", address="127.0.0.1:9")


async def handler(ctx: durably.Context) -> None:
    return None


def test_function_holds_its_declaration() -> None:
    fn = client.function(id="orders/process:v1", trigger=durably.on_event("order/placed"), retries=0)(handler)
    assert isinstance(fn, durably.Function)
    assert (fn.id, fn.app_id, fn.handler, fn.retries, fn.optimize_parallelism) == (
        "orders/process:v1",
        "decl",
        handler,
        0,
        False,
    )
    assert fn.triggers == (durably.EventTrigger(event="order/placed"),)
    several = client.function("f2", [durably.on_event("a"), durably.on_event("b")], optimize_parallelism=True)
    assert [t.event for t in several(handler).triggers] == ["a", "b"]
    assert client.function("no-trigger")(handler).triggers == ()


@pytest.mark.parametrize("bad_id", ["", "has space", "x" * 129, "é", None])
def test_bad_function_ids_fail_at_decoration(bad_id: Any) -> None:
    with pytest.raises(ValueError, match="function id"):
        client.function(id=bad_id)


@pytest.mark.parametrize("retries", [-1, 21, 100])
def test_retries_out_of_range(retries: int) -> None:
    with pytest.raises(ValueError, match="between 0 and 20"):
        client.function(id="f", retries=retries)


def test_retries_must_be_an_int() -> None:
    with pytest.raises(TypeError):
        client.function(id="f", retries=True)
    with pytest.raises(TypeError):
        client.function(id="f", retries=1.5)  # type: ignore[arg-type]


def test_handler_must_be_async_with_one_argument() -> None:
    def sync_handler(ctx: durably.Context) -> None:
        return None

    async def no_args() -> None:
        return None

    async def two_args(ctx: durably.Context, other: int) -> None:
        return None

    with pytest.raises(TypeError, match="async def"):
        client.function(id="f")(sync_handler)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="exactly one argument"):
        client.function(id="f")(no_args)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="exactly one argument"):
        client.function(id="f")(two_args)  # type: ignore[arg-type]


def test_triggers_are_checked() -> None:
    with pytest.raises(TypeError, match="on_event"):
        client.function(id="f", trigger="order/placed")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        durably.on_event("")
    with pytest.raises(ValueError, match="255"):
        durably.on_event("x" * 256)


def test_worker_checks_its_functions() -> None:
    fn = client.function(id="w")(handler)
    other_app = durably.Client(app_id="other", address="127.0.0.1:9")
    with pytest.raises(ValueError, match="belongs to app 'decl'"):
        durably.Worker(other_app, functions=[fn])
    with pytest.raises(ValueError, match="two functions have the id 'w'"):
        durably.Worker(client, functions=[fn, client.function(id="w")(handler)])
    with pytest.raises(ValueError, match="at least one"):
        durably.Worker(client, functions=[])
    with pytest.raises(ValueError, match="capacity"):
        durably.Worker(client, functions=[fn], capacity=0)
    with pytest.raises(TypeError):
        durably.Worker(client, functions=[handler])  # type: ignore[list-item]
    worker = durably.Worker(client, functions=[fn], worker_name="me")
    assert worker.worker_name == "me" and worker.worker_id is None


def test_client_address_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DURABLY_ADDRESS", raising=False)
    assert durably.Client("a").address == "127.0.0.1:7070"
    monkeypatch.setenv("DURABLY_ADDRESS", "example:1234")
    assert durably.Client("a").address == "example:1234"
    assert durably.SyncClient("a").address == "example:1234"
    assert durably.Client("a", address="x:1").address == "x:1"
    with pytest.raises(ValueError, match="app_id"):
        durably.Client("")


async def test_events_are_checked_before_sending() -> None:
    with pytest.raises(InvalidArgumentError, match=r'event 1 \("e"\): data \$\.when is a set'):
        await client.send([durably.Event("e"), durably.Event("e", {"when": {1}})])
    with pytest.raises(ValueError, match="data must be a dict"):
        await client.send(durably.Event("e", [1]))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no name"):
        await client.send(durably.Event(""))
    with pytest.raises(TypeError):
        await client.send({"name": "e"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit"):
        await client.list_runs(limit=0)
    with pytest.raises(ValueError, match="unknown run status"):
        await client.list_runs(status="done")


def test_errors() -> None:
    exc = durably.StepError("s", "ValueError", "bad", "tb")
    assert isinstance(exc, durably.DurablyError) and exc.code is ErrorCode.STEP_ERRORED
    assert issubclass(durably.OutputUnserializableError, durably.NonRetriableError)
    retry = durably.RetryAfterError("later", after=2.5)
    assert retry.after == 2.5 and str(retry) == "later"
    with pytest.raises(TypeError):
        durably.RetryAfterError("later", after="5s")  # type: ignore[arg-type]
    assert issubclass(InvalidArgumentError, ValueError) and issubclass(InvalidArgumentError, durably.DurablyError)


def test_public_names() -> None:
    expected = {
        "Client", "SyncClient", "Worker", "Context", "Step", "Event", "Run", "RunStep", "RunStatus", "ErrorInfo",
        "Function", "on_event", "EventTrigger", "DurablyError", "NonRetriableError", "RetryAfterError",
        "StepError", "OutputUnserializableError", "LimitExceeded", "RunNotFoundError",
        "on_cron", "CronTrigger", "Concurrency", "Timeouts", "Duration",
    }  # fmt: skip
    assert expected <= set(durably.__all__)
    assert all(hasattr(durably, name) for name in durably.__all__)
    assert durably.__version__ == "0.1.0"
