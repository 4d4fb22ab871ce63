"""Worker: long sequential runs for the state-transfer tests (bytes sent per run must not grow as N²;
a worker that replaces a killed one has no cache and must get the whole state).

Step ``s<i>`` returns ``expected(i, width)``, a string that names its step; step i gets step i-1's
result as an argument and fails for good if it is not what step i-1 returned.
"""

from __future__ import annotations

from typing import Any

import durably
from observe import client, record, serve, wait_for_file


def expected(i: int, width: int) -> str:
    """The result of step ``s<i>``: exactly ``width`` characters."""
    head = f"s{i}:"
    return head + "z" * (width - len(head))


@client.function(id="transfer-seq", trigger=durably.on_event("transfer/seq"), retries=0)
async def transfer_seq(ctx: durably.Context) -> dict[str, Any]:
    """``n`` sequential steps of ``width``-character results; step ``s<block>`` (if given) waits for
    control file ``release-<run>``. Returns every result, in order."""
    run = ctx.run_id
    n, width = int(ctx.event.data["n"]), int(ctx.event.data["width"])
    block = ctx.event.data.get("block")
    record("handler", run=run, fn=ctx.function_id)

    async def body(i: int, previous: str | None) -> str:
        if i > 0 and previous != expected(i - 1, width):
            record("bad-input", run=run, i=i, got=previous)
            raise durably.NonRetriableError(f"step s{i} got {previous!r}, not step s{i - 1}'s result")
        if i == block:
            record("step", run=run, name=f"s{i}", phase="started")
            await wait_for_file(f"release-{run}")
        record("step", run=run, name=f"s{i}", phase="finished")
        return expected(i, width)

    results: list[str] = []
    previous: str | None = None
    for i in range(n):
        previous = await ctx.step.run(f"s{i}", body, i, previous)
        results.append(previous)
    return {"count": len(results), "results": results if ctx.event.data.get("return_all") else None}


if __name__ == "__main__":
    serve(transfer_seq)
