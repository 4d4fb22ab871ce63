"""A smoke test of the human CLI: `durably send`, `durably runs`, `durably run`."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import durably

from .harness import STEPS, Harness, describe, find_run

WORKERS = [STEPS]


def _cli(cluster: Harness, *args: str) -> str:
    env = {**os.environ, "DURABLY_ADDRESS": cluster.address}
    done = subprocess.run(
        [sys.executable, "-m", "durably_server", *args], capture_output=True, text=True, env=env, timeout=30
    )
    assert done.returncode == 0, f"durably {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


async def test_send_then_show_the_run(cluster: Harness, client: durably.Client) -> None:
    event_id = f"cli-{uuid.uuid4().hex}"
    out = _cli(cluster, "send", "demo/run", "--data", '{"via": "cli"}', "--id", event_id, "--address", cluster.address)
    assert event_id in out, out

    run = await find_run(client, event_id)
    done = await client.wait_for_run(run.id, timeout=30)
    assert done.status == "completed", describe(done)
    [handler, *_] = cluster.observations("handler", run=run.id)
    assert handler["event"]["data"] == {"via": "cli"}

    listing = _cli(cluster, "runs", "--function", "three-steps")
    assert run.id in listing, listing
    assert run.id in _cli(cluster, "runs", "--status", "completed")

    shown = _cli(cluster, "run", run.id)
    assert run.id in shown and "completed" in shown, shown
    for name in ("step-one", "step-two", "step-three"):
        assert name in shown, shown
