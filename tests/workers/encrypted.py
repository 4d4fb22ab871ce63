"""Worker: functions whose data carries secrets, for runs with ``durably.Encryption`` (keys from
``DURABLY_TEST_KEY`` / ``DURABLY_TEST_FALLBACK_KEYS``, see observe.py)."""

from __future__ import annotations

from typing import Any

import durably
from observe import client, observations, record, serve


@client.function(id="enc-audit")
async def enc_audit(ctx: durably.Context) -> dict[str, Any]:
    """Invoked only: returns the note it was given in its event's sealed field."""
    return {"seen": ctx.event.data["encrypted"]["note"]}


@client.function(id="enc-order", trigger=durably.on_event("enc/order"), retries=2)
async def enc_order(ctx: durably.Context) -> dict[str, Any]:
    """Every path a secret takes: a failed then successful step, a sent event, an invoke, a wait."""
    run = ctx.run_id
    card = ctx.event.data["encrypted"]["card"]

    def charge() -> dict[str, str]:
        attempt = len(observations("charge", run=run))
        record("charge", run=run)
        if attempt == 0:
            raise ValueError(f"card declined: {card}")
        return {"receipt": f"paid with {card}"}

    receipt = await ctx.step.run("charge", charge)
    await ctx.step.send_event(
        "notify", durably.Event("enc/notify", {"orderId": ctx.event.data["orderId"], "encrypted": receipt})
    )
    audit = await ctx.step.invoke("audit", function=enc_audit, data={"encrypted": {"note": f"audit of {card}"}})
    confirm = await ctx.step.wait_for_event("confirm", event="enc/confirm", match="data.orderId", timeout="60s")
    assert confirm is not None, "the confirmation did not come"
    return {"receipt": receipt["receipt"], "audit": audit["seen"], "confirmed": confirm.data["encrypted"]}


@client.function(id="enc-notified", trigger=durably.on_event("enc/notify"))
async def enc_notified(ctx: durably.Context) -> Any:
    """Triggered by enc-order's sent event: returns its sealed field, opened."""
    return ctx.event.data["encrypted"]


@client.function(id="enc-fails", trigger=durably.on_event("enc/fails"), retries=0)
async def enc_fails(ctx: durably.Context) -> None:
    """Fails for good with the secret in its error."""
    card = ctx.event.data["encrypted"]["card"]

    def refuse() -> None:
        raise durably.NonRetriableError(f"no funds on {card}")

    await ctx.step.run("refuse", refuse)


@client.function(id="enc-steps-c", trigger=durably.on_event("enc/steps-c"), checkpointing=True)
async def enc_steps_c(ctx: durably.Context) -> list[str]:
    """Sequential steps with checkpointing: each sealed result is committed before the handler goes on."""
    secret = ctx.event.data["encrypted"]["secret"]
    seen: list[str] = []
    for i in range(3):
        seen.append(await ctx.step.run(f"s{i}", lambda i=i: f"{secret} #{i}"))
    return seen


@client.function(id="enc-nap", trigger=durably.on_event("enc/nap"))
async def enc_nap(ctx: durably.Context) -> dict[str, Any]:
    """A step, a sleep of ``data.seconds`` (a worker restarted with a new key meanwhile), a step."""
    secret = ctx.event.data["encrypted"]["secret"]
    before = await ctx.step.run("before", lambda: f"before {secret}")
    await ctx.step.sleep("nap", ctx.event.data["seconds"])
    after = await ctx.step.run("after", lambda: f"after {before}")
    return {"before": before, "after": after}


if __name__ == "__main__":
    serve(enc_audit, enc_order, enc_notified, enc_fails, enc_steps_c, enc_nap)
