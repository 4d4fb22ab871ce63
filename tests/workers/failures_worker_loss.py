"""Worker: step `slow` blocks until control file `release-<run>` exists; outputs carry this pid."""

from __future__ import annotations

import os
from typing import Any

import durably
from observe import client, record, serve, wait_for_file


@client.function(id="hold", trigger=durably.on_event("failures/hold"), retries=3)
async def hold(ctx: durably.Context) -> dict[str, Any]:
    run = ctx.run_id

    def prepare() -> int:
        record("step", run=run, name="prepare")
        return os.getpid()

    async def slow() -> dict[str, int]:
        record("step", run=run, name="slow", phase="started", attempt=ctx.attempt)
        await wait_for_file(f"release-{run}")
        record("step", run=run, name="slow", phase="finished", attempt=ctx.attempt)
        return {"pid": os.getpid()}

    prepared_by = await ctx.step.run("prepare", prepare)
    slow_result = await ctx.step.run("slow", slow)
    return {"prepared_by": prepared_by, "slow": slow_result, "finished_by": os.getpid()}


if __name__ == "__main__":
    serve(hold)
