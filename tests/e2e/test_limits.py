"""The article's limits: 4 MiB per step output, 32 MiB of run state (event data included), 1,000 steps
per run. A value of exactly the limit passes; a breach fails the run with a clear error naming the
limit, the step and the size; the daemon stays up, a run in flight meanwhile and new runs are unaffected.
"""

from __future__ import annotations

import json
from typing import Any

import durably
import pytest

from .harness import Harness, WorkerSpec, await_until, describe, find_run, open_client, run_to_end

LIMITS = WorkerSpec("limits_steps.py", ("limit-output", "limit-state", "limit-steps", "limit-echo", "limit-bystander"))
WORKERS = [LIMITS]

MiB = 1024 * 1024
MAX_STEP_BYTES = 4 * MiB
MAX_STATE_BYTES = 32 * MiB
MAX_STEPS = 1000


def spellings(number: int) -> tuple[str, ...]:
    """How a message may write a byte count: ``4194305`` or ``4,194,305``."""
    return (str(number), f"{number:,}")


def assert_limit_error(run: durably.Run, name: str, *parts: tuple[str, ...]) -> None:
    """The run failed with limit error ``name`` (or a StepError that names it) and its message holds
    one spelling of each of ``parts``."""
    assert run.status == "failed", describe(run)
    error = run.error
    assert error is not None, describe(run)
    print(f"run {run.id} failed with {error.name} (code {error.code!r}): {error.message}")
    assert error.name == name or (error.name == "StepError" and name in error.message), (
        f"expected error {name}, got {error.name}: {error.message}"
    )
    if error.name == name:
        assert error.code == "limit_exceeded", f"{error.name} has code {error.code!r}, not 'limit_exceeded'"
    for alternatives in parts:
        assert any(text in error.message for text in alternatives), (
            f"the {error.name} message does not name any of {alternatives}: {error.message!r}"
        )


async def start_bystander(cluster: Harness, client: durably.Client) -> str:
    """A normal run whose step ``hold`` is in progress until released."""
    [event_id] = await client.send(durably.Event(name="limits/bystander", data={}))
    run = await find_run(client, event_id)
    await await_until(
        lambda: cluster.observations("step", run=run.id, name="hold", phase="started"),
        timeout=20,
        what="the bystander's step `hold` to start",
    )
    return run.id


async def assert_others_unaffected(cluster: Harness, client: durably.Client, bystander: str, tag: str) -> None:
    """After a breach: the daemon is up, the run that was in flight finishes, a new run completes."""
    assert cluster.daemon.alive(), f"the daemon died:\n{cluster.daemon.report()}"
    cluster.release(f"hold-{bystander}")
    held = await client.wait_for_run(bystander, timeout=30)
    assert held.status == "completed", describe(held)
    assert held.output == {"before": "before-done", "hold": "hold-done", "after": "after-done"}, describe(held)
    echo = await run_to_end(client, "limits/echo", {"after": tag}, timeout=30)
    assert echo.status == "completed", describe(echo)
    assert echo.output == {"echo": {"after": tag}}, describe(echo)
    assert cluster.daemon.alive(), f"the daemon died:\n{cluster.daemon.report()}"


def encoded_size(data: dict[str, Any]) -> int:
    return len(json.dumps(data, separators=(",", ":")).encode())


async def test_a_step_output_of_exactly_4_mib_passes(cluster: Harness, client: durably.Client) -> None:
    done = await run_to_end(client, "limits/output", {"size": MAX_STEP_BYTES}, timeout=60)

    assert done.status == "completed", describe(done)
    assert done.output == {"length": MAX_STEP_BYTES - 2}
    run = await client.get_run(done.id)
    [big] = run.steps
    assert big.name == "big" and big.status == "completed"
    assert isinstance(big.output, str) and len(big.output) == MAX_STEP_BYTES - 2


async def test_a_step_output_one_byte_over_4_mib_fails_the_run(cluster: Harness, client: durably.Client) -> None:
    bystander = await start_bystander(cluster, client)
    size = MAX_STEP_BYTES + 1
    done = await run_to_end(client, "limits/output", {"size": size}, timeout=60)

    assert_limit_error(done, "StepOutputTooLarge", ("big",), spellings(size))
    assert done.output is None, describe(done)
    assert not [s for s in done.steps if s.status == "completed"], describe(done)
    await assert_others_unaffected(cluster, client, bystander, "step-output")


async def test_run_state_just_under_32_mib_completes(cluster: Harness, client: durably.Client) -> None:
    sizes = [MAX_STEP_BYTES] * 7 + [MAX_STEP_BYTES - 4096]
    data = {"sizes": sizes}
    output = {"count": 8}
    total = encoded_size(data) + sum(sizes) + encoded_size(output)
    assert total < MAX_STATE_BYTES  # event data + step outputs + the function's output
    print(f"state of the run: {total} bytes, {MAX_STATE_BYTES - total} under the limit")

    done = await run_to_end(client, "limits/state", data, timeout=90)

    assert done.status == "completed", describe(done)
    assert done.output == output
    run = await client.get_run(done.id)
    assert [s.name for s in run.steps] == [f"chunk-{i}" for i in range(8)], describe(run)
    assert [len(s.output) for s in run.steps] == [size - 2 for size in sizes]


async def test_run_state_over_32_mib_fails_with_state_too_large(cluster: Harness, client: durably.Client) -> None:
    """Eight 4 MiB steps are exactly 32 MiB; the event's data counts too, so the 8th step crosses."""
    bystander = await start_bystander(cluster, client)
    sizes = [MAX_STEP_BYTES] * 8
    done = await run_to_end(client, "limits/state", {"sizes": sizes}, timeout=90)

    assert_limit_error(
        done,
        "StateTooLarge",
        ("chunk-7",),
        (*spellings(MAX_STATE_BYTES), "32 MiB", "32 MB"),
        spellings(MAX_STEP_BYTES),
    )
    assert done.output is None, describe(done)
    run = await client.get_run(done.id)
    completed = [s.name for s in run.steps if s.status == "completed"]
    assert completed == [f"chunk-{i}" for i in range(7)], describe(run)
    await assert_others_unaffected(cluster, client, bystander, "state")


@pytest.mark.parametrize("count", [9, 17])
async def test_parallel_steps_that_together_cross_32_mib_fail_with_state_too_large(
    harness: Harness, count: int
) -> None:
    """A gather of 4 MiB steps: 9 of them (36 MiB) cross the state limit; 17 (68 MiB) also exceed what
    one gRPC message may carry (64 MiB), should a worker report them together. Either way the run fails
    with StateTooLarge and is not left running. A daemon of this test's own, so that a run left
    spinning cannot slow the other tests down."""
    harness.start_worker(LIMITS)
    async with open_client(harness.address) as client:
        bystander = await start_bystander(harness, client)
        sizes = [MAX_STEP_BYTES] * count
        done = await run_to_end(client, "limits/state-gather", {"sizes": sizes}, timeout=20)

        assert_limit_error(done, "StateTooLarge", ("chunk-",), (*spellings(MAX_STATE_BYTES), "32 MiB", "32 MB"))
        assert done.output is None, describe(done)
        run = await client.get_run(done.id)
        saved = sum(len(s.output) + 2 for s in run.steps if s.status == "completed")
        assert saved <= MAX_STATE_BYTES, f"{saved} bytes of step outputs were saved"
        await assert_others_unaffected(harness, client, bystander, f"state-gather-{count}")


async def test_1000_steps_complete_and_a_1001st_fails(cluster: Harness, client: durably.Client) -> None:
    done = await run_to_end(client, "limits/steps", {"groups": 10, "extra": 0}, timeout=90)
    assert done.status == "completed", describe(done)
    assert done.output == {"steps": MAX_STEPS}
    assert len((await client.get_run(done.id)).steps) == MAX_STEPS

    bystander = await start_bystander(cluster, client)
    over = await run_to_end(client, "limits/steps", {"groups": 10, "extra": 1}, timeout=90)
    assert_limit_error(over, "StepLimitExceeded", spellings(MAX_STEPS))
    assert over.output is None, describe(over)
    run = await client.get_run(over.id)
    assert len(run.steps) == MAX_STEPS, f"{len(run.steps)} steps recorded"
    assert "one-more" not in {s.name for s in run.steps if s.status == "completed"}
    await assert_others_unaffected(cluster, client, bystander, "steps")

    # An 11th gather of 100 plans steps 1,001 to 1,100 at once: refused as well.
    planned = await run_to_end(client, "limits/steps", {"groups": 11, "extra": 0}, timeout=90)
    assert_limit_error(planned, "StepLimitExceeded", spellings(MAX_STEPS))
    assert len((await client.get_run(planned.id)).steps) == MAX_STEPS


def test_the_sdk_exposes_each_limit_error_as_a_limit_exceeded() -> None:
    for name in ("StepOutputTooLarge", "StateTooLarge", "StepLimitExceeded"):
        error = getattr(durably, name, None)
        assert isinstance(error, type) and issubclass(error, durably.LimitExceeded), f"durably.{name}: {error!r}"
