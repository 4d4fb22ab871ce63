"""Worker: cron triggers (issue 4).

`cron-kathmandu` runs every minute of the current and the next hour *in Asia/Kathmandu* (UTC+05:45),
hours no UTC reading of the clock can be in, so it ticks only if the time zone option is honoured.
`cron-rare` runs at midnight on 29 February in Paris. The schedule in use is logged at start-up
(``cron-schedule``) and every run logs ``cron-run`` with the event it got.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import durably
from observe import client, record, serve

ZONE = "Asia/Kathmandu"
_HOUR = datetime.now(ZoneInfo(ZONE)).hour
SCHEDULE = f"* {_HOUR},{(_HOUR + 1) % 24} * * *"


def _seen(ctx: durably.Context) -> dict[str, Any]:
    event = {"id": ctx.event.id, "name": ctx.event.name, "data": ctx.event.data}
    record("cron-run", run=ctx.run_id, fn=ctx.function_id, event=event)
    return event


@client.function(id="cron-kathmandu", trigger=durably.on_cron(SCHEDULE, timezone=ZONE), retries=0)
async def cron_kathmandu(ctx: durably.Context) -> dict[str, Any]:
    return _seen(ctx)


@client.function(id="cron-rare", trigger=durably.on_cron("0 0 29 2 *", timezone="Europe/Paris"), retries=0)
async def cron_rare(ctx: durably.Context) -> dict[str, Any]:
    return _seen(ctx)


if __name__ == "__main__":
    record("cron-schedule", schedule=SCHEDULE, timezone=ZONE)
    serve(cron_kathmandu, cron_rare)
