"""Worker of another app (started with DURABLY_TEST_APP=other): `shout`, invoked as "other/shout"."""

from __future__ import annotations

from typing import Any

import durably
from observe import client, record, serve


@client.function(id="shout", retries=0)
async def shout(ctx: durably.Context) -> dict[str, Any]:
    record("shout", run=ctx.run_id, app=client.app_id, parent=ctx.event.data["parent"])
    text = str(ctx.event.data["text"])
    loud = await ctx.step.run("upper", text.upper)
    return {"shout": loud, "app": client.app_id}


if __name__ == "__main__":
    serve(shout)
