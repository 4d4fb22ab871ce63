"""Step results must be representable in JSON; tuples come back as lists."""

from __future__ import annotations

import durably
import pytest

from .harness import STEPS, Harness, describe, run_to_end

WORKERS = [STEPS]


@pytest.mark.parametrize("kind", ["set", "object", "nan", "infinity", "bytes"])
async def test_unrepresentable_step_result_fails_the_run_without_retries(
    cluster: Harness, client: durably.Client, kind: str
) -> None:
    done = await run_to_end(client, "demo/bad-output", {"kind": kind})

    step = f"produce-{kind}"
    assert done.status == "failed", describe(done)
    assert done.error is not None, describe(done)
    assert step in done.error.message, f"the error should name step {step!r}: {done.error!r}"
    # Non-retriable: the body ran exactly once although the function allows 3 retries.
    assert cluster.count("step", run=done.id, name=step) == 1, cluster.observations("step", run=done.id)
    # Nothing was saved as the step's result, so the handler never got past it.
    assert cluster.count("after-bad-step", run=done.id) == 0


async def test_tuple_result_is_saved_as_a_list(cluster: Harness, client: durably.Client) -> None:
    done = await run_to_end(client, "demo/tuple", {})

    assert done.status == "completed", describe(done)
    assert done.output == {"made": [1, "two", [3]], "seen": {"type": "list"}}
    [inspected] = cluster.observations("step", run=done.id, name="inspect")
    assert inspected["type"] == "list" and inspected["value"] == [1, "two", [3]]
    assert cluster.count("step", run=done.id, name="make-tuple") == 1
    assert done.steps[0].name == "make-tuple" and done.steps[0].output == [1, "two", [3]]
