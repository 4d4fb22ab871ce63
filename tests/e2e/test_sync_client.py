"""durably.SyncClient: the same client for callers without an event loop."""

from __future__ import annotations

from collections.abc import Iterator

import durably
import pytest

from .harness import ERRORS, STEPS, Harness, describe, wait_until

WORKERS = [STEPS, ERRORS]


@pytest.fixture
def sync_client(cluster: Harness) -> Iterator[durably.SyncClient]:
    client = durably.SyncClient(app_id="tests", address=cluster.address)
    try:
        yield client
    finally:
        client.close()


def _find_run(client: durably.SyncClient, event_id: str) -> durably.Run:
    runs: list[durably.Run] = wait_until(
        lambda: client.list_runs(event_id=event_id), what=f"a run for event {event_id}"
    )
    assert len(runs) == 1, runs
    return runs[0]


def test_sync_client_sends_waits_gets_and_lists(sync_client: durably.SyncClient) -> None:
    ok_ids = sync_client.send(
        [durably.Event(name="demo/run", data={"k": 1}), durably.Event(name="demo/run", data={"k": 2})]
    )
    assert len(ok_ids) == 2
    [bad_id] = sync_client.send(durably.Event(name="demo/gives-up", data={}))

    ok_runs = [_find_run(sync_client, event_id) for event_id in ok_ids]
    bad_run = _find_run(sync_client, bad_id)
    for run in ok_runs:
        done = sync_client.wait_for_run(run.id, timeout=30)
        assert done.status == "completed", describe(done)
        assert done.output == {"result1": {"value": "A"}, "result2": {"value": "B"}, "result3": {"value": "C"}}
    failed = sync_client.wait_for_run(bad_run.id, timeout=30)
    assert failed.status == "failed", describe(failed)
    assert failed.error is not None and "card declined for good" in failed.error.message

    got = sync_client.get_run(ok_runs[0].id)
    assert (got.id, got.event_id, got.status) == (ok_runs[0].id, ok_ids[0], "completed")
    assert [s.name for s in got.steps] == ["step-one", "step-two", "step-three"]

    ok_run_ids = {r.id for r in ok_runs}
    by_function = sync_client.list_runs(function_id="three-steps")
    assert ok_run_ids <= {r.id for r in by_function}
    assert all(r.function_id == "three-steps" for r in by_function)
    assert bad_run.id not in {r.id for r in by_function}

    by_status = sync_client.list_runs(status="failed")
    assert bad_run.id in {r.id for r in by_status}
    assert all(r.status == "failed" for r in by_status)
    assert not ok_run_ids & {r.id for r in by_status}

    both = sync_client.list_runs(function_id="three-steps", status="completed")
    assert ok_run_ids <= {r.id for r in both}
    assert all(r.function_id == "three-steps" and r.status == "completed" for r in both)
    assert sync_client.list_runs(function_id="gives-up", status="completed") == []
    assert len(sync_client.list_runs(function_id="three-steps", limit=1)) == 1


def test_sync_client_get_run_of_unknown_id_raises(sync_client: durably.SyncClient) -> None:
    with pytest.raises(durably.RunNotFoundError):
        sync_client.get_run("no-such-run")
