"""``durably.Encryption`` (reliability.md T21): secrets in event fields, step results, errors and
outputs never reach the daemon's database file, its WAL or its logs in plain text; the clients and
workers holding the key see them as they were; keys rotate with a fallback."""

from __future__ import annotations

import json
import os
from pathlib import Path

import durably
from durably._encryption import MARKER

from .harness import ENCRYPTED, Harness, await_until, describe, environ_without, find_run, open_client, run_cli

KEY_A = durably.Encryption.generate_key()
KEY_B = durably.Encryption.generate_key()
CARD = "CANARY-CARD-4242"
CONFIRMATION = "CANARY-CONFIRMED-7731"
VISIBLE = "order-visible-5150"
"""Plain event data: found in the store, which shows that the search for the canaries can find text."""


def stored_text(harness: Harness) -> str:
    """Everything the daemon wrote: its database, its WAL, its logs (bytes read as Latin-1)."""
    db = harness.workdir / "durably.db"
    files = [db, Path(f"{db}-wal")]
    text = "".join(path.read_bytes().decode("latin-1") for path in files if path.exists())
    return text + harness.daemon.stdout() + harness.daemon.stderr()


async def test_secrets_reach_the_store_and_logs_only_sealed(harness: Harness) -> None:
    harness.start_worker(ENCRYPTED, env={"DURABLY_ENCRYPTION_KEY": KEY_A})
    sealed = durably.Encryption(KEY_A)
    async with open_client(harness.address, sealed) as client, open_client(harness.address) as keyless:
        [order_id] = await client.send(durably.Event("enc/order", {"orderId": VISIBLE, "encrypted": {"card": CARD}}))
        order = await find_run(client, order_id)
        await await_until(
            lambda: _status_is(client, order.id, "waiting"), timeout=30, what="the order to wait for its confirmation"
        )
        await client.send(durably.Event("enc/confirm", {"orderId": VISIBLE, "encrypted": CONFIRMATION}))
        done = await client.wait_for_run(order.id, timeout=30)
        [steps_id] = await client.send(durably.Event("enc/steps-c", {"encrypted": {"secret": CARD}}))
        checkpointed = await client.wait_for_run((await find_run(client, steps_id)).id, timeout=30)
        [fails_id] = await client.send(durably.Event("enc/fails", {"encrypted": {"card": CARD}}))
        failed = await client.wait_for_run((await find_run(client, fails_id)).id, timeout=30)
        notified = await await_until(
            lambda: client.list_runs(function_id="enc-notified", status="completed"), timeout=30, what="enc-notified"
        )
        raw = await keyless.get_run(order.id)

    assert done.status == "completed", describe(done)
    assert done.output == {
        "receipt": f"paid with {CARD}",
        "audit": f"audit of {CARD}",
        "confirmed": CONFIRMATION,
    }
    charge = next(step for step in done.steps if step.name == "charge")
    assert charge.output == {"receipt": f"paid with {CARD}"} and charge.attempts == 2, describe(done)
    assert notified[0].output == {"receipt": f"paid with {CARD}"}
    assert checkpointed.output == [f"{CARD} #{i}" for i in range(3)], describe(checkpointed)
    assert [step.output for step in checkpointed.steps] == checkpointed.output
    assert failed.status == "failed" and failed.error is not None, describe(failed)
    assert f"no funds on {CARD}" in failed.error.message
    assert CARD in failed.error.stack

    # Without the key, a client sees what is stored: sealed values.
    assert isinstance(raw.output, dict) and raw.output[MARKER] == "v1" and raw.output["key"] == sealed.key_id
    assert all(MARKER in str(step.output) for step in raw.steps if step.name == "charge")

    stored = stored_text(harness)
    assert VISIBLE in stored, "the search cannot find plain text in the store"
    for canary in (CARD, CONFIRMATION):
        assert canary not in stored, f"{canary} is stored or logged in plain text"


async def _status_is(client: durably.Client, run_id: str, status: str) -> bool:
    return (await client.get_run(run_id)).status == status


async def test_a_new_key_finishes_runs_sealed_with_the_old_one(harness: Harness) -> None:
    old = harness.start_worker(ENCRYPTED, env={"DURABLY_ENCRYPTION_KEY": KEY_A})
    rotated = durably.Encryption(KEY_B, fallback_keys=[KEY_A])
    async with open_client(harness.address, durably.Encryption(KEY_A)) as before:
        [event_id] = await before.send(durably.Event("enc/nap", {"seconds": 2, "encrypted": {"secret": CARD}}))
    async with open_client(harness.address, rotated) as client, open_client(harness.address) as keyless:
        run = await find_run(client, event_id)
        await await_until(lambda: _status_is(client, run.id, "sleeping"), timeout=30, what="the run to sleep")
        old.stop()
        harness.start_worker(
            ENCRYPTED, env={"DURABLY_ENCRYPTION_KEY": KEY_B, "DURABLY_ENCRYPTION_FALLBACK_KEYS": KEY_A}
        )
        done = await client.wait_for_run(run.id, timeout=30)
        raw = await keyless.get_run(run.id)

    assert done.status == "completed", describe(done)
    assert done.output == {"before": f"before {CARD}", "after": f"after before {CARD}"}
    keys = {step.name: step.output["key"] for step in raw.steps if isinstance(step.output, dict)}
    assert keys == {"before": durably.Encryption(KEY_A).key_id, "after": rotated.key_id}, raw.steps
    assert raw.output["key"] == rotated.key_id
    assert CARD not in stored_text(harness)


async def test_the_client_commands_seal_and_open_with_the_keys_in_the_environment(harness: Harness) -> None:
    harness.start_worker(ENCRYPTED, env={"DURABLY_ENCRYPTION_KEY": KEY_A})
    keyed = {**os.environ, "DURABLY_ADDRESS": harness.address, "DURABLY_ENCRYPTION_KEY": KEY_A}
    keyless = {**environ_without("DURABLY_ENCRYPTION_KEY"), "DURABLY_ADDRESS": harness.address}
    sent = run_cli("send", "enc/fails", "--data", json.dumps({"encrypted": {"card": CARD}}), env=keyed)
    assert sent.returncode == 0, sent.stderr
    event_id = sent.stdout.split()[0]
    async with open_client(harness.address) as client:
        run = await find_run(client, event_id)
        failed = await client.wait_for_run(run.id, timeout=30)
    assert failed.status == "failed", describe(failed)

    shown = run_cli("run", run.id, env=keyed)
    assert shown.returncode == 0, shown.stderr
    assert f"no funds on {CARD}" in shown.stdout
    hidden = run_cli("run", run.id, env=keyless)
    assert hidden.returncode == 0, hidden.stderr
    assert "durably-encrypted:v1:" in hidden.stdout and CARD not in hidden.stdout
    assert CARD not in stored_text(harness)
