"""A smoke test of the human CLI: `durably send`, `durably runs`, `durably run [--follow]`."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid

import durably

from .harness import CRASH, STEPS, Harness, await_until, describe, find_run

WORKERS = [STEPS, CRASH]


def _cli(cluster: Harness, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "durably_server", *args], capture_output=True, text=True, env=_env(cluster), timeout=30
    )
    assert done.returncode == 0, f"durably {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _env(cluster: Harness) -> dict[str, str]:
    return {**os.environ, "DURABLY_ADDRESS": cluster.address}


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


async def test_run_follow_shows_each_step_as_it_happens(cluster: Harness, client: durably.Client) -> None:
    [event_id] = await client.send(durably.Event(name="demo/crash-between", data={}))
    run = await find_run(client, event_id)
    follow = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "durably_server", "run", run.id, "--follow"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(cluster),
    )
    assert follow.stdout is not None and follow.stderr is not None
    lines: list[str] = []

    async def read() -> None:
        assert follow.stdout is not None
        while line := await follow.stdout.readline():
            lines.append(line.decode())

    try:
        reading = asyncio.create_task(read())
        # Step one is shown while step two is still blocked: the output follows the run.
        await await_until(lambda: any(line.startswith("  one[") for line in lines), what=f"step one in {lines}")
        assert not any(line.startswith("  two[") for line in lines), lines
        cluster.release(f"go-{run.id}")
        await asyncio.wait_for(reading, 30)
        assert await asyncio.wait_for(follow.wait(), 10) == 0, (lines, await follow.stderr.read())
    finally:
        if follow.returncode is None:
            follow.kill()
            await follow.wait()
    steps = [line.split("[")[0].strip() for line in lines if line.startswith("  ")]
    assert steps == ["one", "two", "three"], lines
    statuses = [line.split()[1] for line in lines if line.startswith("status")]
    assert statuses[0] in ("queued", "running") and statuses[-1] == "completed", lines
    assert any(line.startswith("output") for line in lines), lines
