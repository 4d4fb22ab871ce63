"""Step results must be representable in JSON; tuples come back as lists."""

from __future__ import annotations

import durably
import pytest

from .harness import STEPS, Harness, describe, find_run

WORKERS = [STEPS]


@pytest.mark.parametrize("kind", ["set", "object", "nan", "infinity", "bytes"])
async def test_unrepresentable_step_result_fails_the_run_without_retries(
    cluster: Harness, client: durably.Client, kind: str
) -> None:
    [event_id] = await client.send(durably.Event(name="demo/bad-output", data={"kind": kind}))
    run = await find_run(client, event_id)
    done = await client.wait_for_run(run.id, timeout=30)

    step = f"produce-{kind}"
    assert done.status == "failed", describe(done)
    assert done.error is not None, describe(done)
    assert step in done.error.message, f"the error should name step {step!r}: {done.error!r}"
    # Non-retriable: the body ran exactly once although the function allows 3 retries.
    assert cluster.count("step", run=run.id, name=step) == 1, cluster.observations("step", run=run.id)
    # Nothing was saved as the step's result, so the handler never got past it.
    assert cluster.count("after-bad-step", run=run.id) == 0


async def test_tuple_result_is_saved_as_a_list(cluster: Harness, client: durably.Client) -> None:
    [event_id] = await client.send(durably.Event(name="demo/tuple", data={}))
    run = await find_run(client, event_id)
    done = await client.wait_for_run(run.id, timeout=30)

    assert done.status == "completed", describe(done)
    assert done.output == {"made": [1, "two", [3]], "seen": {"type": "list"}}
    [inspected] = cluster.observations("step", run=run.id, name="inspect")
    assert inspected["type"] == "list" and inspected["value"] == [1, "two", [3]]
    assert cluster.count("step", run=run.id, name="make-tuple") == 1
    assert done.steps[0].name == "make-tuple" and done.steps[0].output == [1, "two", [3]]
