"""step.send_event and step.invoke (issue 4).

send_event returns the ids of the events it sent, the events trigger functions like any other, and a
retry of the handler after the send does not send them again. invoke runs another function (of this
app, or of another app by "app/fn") as a child run and returns its output; a failed or timed-out
child raises durably.StepError in the parent.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import durably

from .harness import Harness, WorkerSpec, describe, find_run, open_client, run_to_end

SEND = WorkerSpec("coord_send.py", ("fan-out", "fanned"))
INVOKE = WorkerSpec("coord_invoke.py", ("child-double", "child-fails", "child-naps", "invoke-parent"))
OTHER_APP = WorkerSpec("coord_other_app.py", ("shout",))
WORKERS = [SEND, INVOKE]


async def runs_of(client: durably.Client, function_id: str) -> list[durably.Run]:
    return await client.list_runs(function_id=function_id, limit=1000)


async def test_send_event_returns_the_ids_and_the_events_trigger_functions_once(
    cluster: Harness, client: durably.Client
) -> None:
    tag = uuid.uuid4().hex[:10]
    done = await run_to_end(client, "coord/fan-out", {"tag": tag}, timeout=30)

    assert done.status == "completed", describe(done)
    ids = done.output["ids"]
    assert len(ids) == 4 and len(set(ids)) == 4 and all(isinstance(i, str) and i for i in ids), ids
    assert ids[3] == f"fixed-{tag}", f"an event's own id was not kept: {ids}"
    [send] = [s for s in done.steps if s.name == "send"]
    assert send.status == "completed" and send.output == ids, describe(done)

    # The handler failed once after the send and was retried: the retry got the saved ids back.
    assert len(cluster.observations("handler-error", run=done.id)) == 1
    sent = cluster.observations("sent", run=done.id)
    assert len(sent) >= 2, f"the handler was not retried after the send: {sent}"
    assert all(o["ids"] == ids for o in sent), f"a replay of the send step saw other ids: {sent}"

    # Each sent event triggered `fanned` exactly once, with the data it was sent with.
    fanned: list[durably.Run] = []
    for n, event_id in enumerate(ids):
        triggered = await find_run(client, event_id)  # exactly one run
        assert triggered.function_id == "fanned", describe(triggered)
        run = await client.wait_for_run(triggered.id, timeout=10)
        assert run.status == "completed", describe(run)
        assert run.output == {"event_id": event_id, "data": {"tag": tag, "n": n}}, describe(run)
        fanned.append(run)

    await asyncio.sleep(0.5)
    seen = cluster.observations("fanned", tag=tag)
    assert sorted(o["n"] for o in seen) == [0, 1, 2, 3], f"the sent events were handled {len(seen)} times: {seen}"
    mine = sorted(r.id for r in await runs_of(client, "fanned") if r.event_id in ids)
    assert mine == sorted(r.id for r in fanned), f"{len(mine)} runs of fanned for 4 sent events"


async def invoke(client: durably.Client, mode: str) -> durably.Run:
    return await run_to_end(client, "coord/invoke", {"mode": mode}, timeout=30)


def children_of(cluster: Harness, parent: durably.Run, kind: str = "child") -> list[str]:
    """Ids of the child runs `parent` started (each child logs its parent's run id)."""
    return sorted({o["run"] for o in cluster.observations(kind, parent=parent.id)})


async def test_invoke_returns_the_childs_output(cluster: Harness, client: durably.Client) -> None:
    done = await invoke(client, "ok")

    assert done.status == "completed", describe(done)
    output: dict[str, Any] = done.output["output"]
    assert output["doubled"] == 42 and output["data"] == {"x": 21, "parent": done.id}, describe(done)
    [call] = [s for s in done.steps if s.name == "call"]
    assert call.status == "completed" and call.output == output, describe(done)

    children = children_of(cluster, done)
    assert len(children) == 1, f"the invoke started {len(children)} child runs"
    child = await client.get_run(children[0])
    assert child.id != done.id and child.function_id == "child-double", describe(child)
    assert child.status == "completed" and child.output == output, describe(child)


async def test_a_failed_child_raises_step_error_in_the_parent(cluster: Harness, client: durably.Client) -> None:
    done = await invoke(client, "fail")

    assert done.status == "completed", describe(done)
    error = done.output.get("error")
    assert error is not None, f"the parent got no StepError: {describe(done)}"
    assert error["step"] == "call", error
    assert "child broke: on purpose" in error["message"], error
    assert cluster.count("invoke-returned", run=done.id) == 0
    [call] = [s for s in done.steps if s.name == "call"]
    assert call.status == "failed", describe(done)

    [child_id] = children_of(cluster, done)
    child = await client.get_run(child_id)
    assert child.function_id == "child-fails" and child.status == "failed", describe(child)


async def test_invoke_timeout_raises_step_error(cluster: Harness, client: durably.Client) -> None:
    done = await invoke(client, "timeout")

    assert done.status == "completed", describe(done)
    error = done.output.get("error")
    assert error is not None, f"the parent got no StepError: {describe(done)}"
    assert error["step"] == "call" and "timeout" in f"{error['name']} {error['message']}".lower(), error
    called = cluster.observations("invoke-call", run=done.id)[0]["t"]
    raised = cluster.observations("invoke-raised", run=done.id)[0]["t"]
    assert 1.0 <= raised - called < 4.0, f"a 1 s invoke timeout raised after {raised - called:.2f} s"
    [child_id] = children_of(cluster, done)
    assert (await client.get_run(child_id)).function_id == "child-naps"


async def test_invoke_of_a_function_nobody_registered_raises_step_error(
    cluster: Harness, client: durably.Client
) -> None:
    done = await invoke(client, "missing")

    assert done.status == "completed", describe(done)
    error = done.output.get("error")
    assert error is not None and "no-such-function" in error["message"], describe(done)


async def test_invoke_a_function_of_another_app_by_id(harness: Harness) -> None:
    harness.start_worker(INVOKE)
    harness.start_worker(OTHER_APP, app_id="other")
    async with open_client(harness.address) as client:
        done = await invoke(client, "other-app")
        assert done.status == "completed", describe(done)
        assert done.output == {"output": {"shout": "HELLO", "app": "other"}}, describe(done)

        [child_id] = children_of(harness, done, kind="shout")
        child = await client.get_run(child_id)
        assert child.app_id == "other" and child.function_id == "shout", describe(child)
        assert child.status == "completed", describe(child)
        assert [r.id for r in await runs_of(client, "shout")] == [child.id]
