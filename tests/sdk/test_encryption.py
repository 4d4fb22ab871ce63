"""``durably.Encryption`` on its own and where the SDK applies it (no executor: see
tests/e2e/test_encryption.py for the store and logs)."""

from __future__ import annotations

import base64
import json

import durably
import orjson
import pytest
from durably import _convert
from durably._api import WatchedRun
from durably._encryption import MARKER, open_event
from durably._ops import invoke_request, send_request
from durably._types import check_event
from durably.protocol.v1 import api_pb2, common_pb2

KEY = durably.Encryption.generate_key()
OLD = durably.Encryption.generate_key()


def test_json_values_round_trip_and_are_sealed_json() -> None:
    box = durably.Encryption(KEY)
    sealed = box.seal(b'{"card":"4242"}')
    envelope = json.loads(sealed)
    assert envelope[MARKER] == "v1" and envelope["key"] == box.key_id
    assert b"4242" not in sealed
    assert box.open(sealed) == b'{"card":"4242"}'
    assert box.seal(b"1") != box.seal(b"1"), "a nonce was reused"


def test_values_not_sealed_pass_through() -> None:
    box = durably.Encryption(KEY)
    for plain in (b"null", b'{"a":1}', b'"__durably_encrypted__"', b'{"__durably_encrypted__":"v0"}'):
        assert box.open(plain) == plain
    assert box.open_text("plain message") == "plain message"
    assert box.open_event_data({"encrypted": {"a": 1}}) == {"encrypted": {"a": 1}}


def test_an_envelope_written_again_by_other_json_code_still_opens() -> None:
    box = durably.Encryption(KEY)
    envelope = json.loads(box.seal(b"[1,2]"))
    rewritten = json.dumps({"data": envelope["data"], "key": envelope["key"], MARKER: "v1"}, indent=1).encode()
    assert box.open(rewritten) == b"[1,2]"


def test_texts_round_trip_and_cannot_pass_for_json() -> None:
    box = durably.Encryption(KEY)
    sealed = box.seal_text("no funds on 4242")
    assert "4242" not in sealed and box.open_text(sealed) == "no funds on 4242"
    assert box.seal_text("") == ""
    _, _, kid, data = sealed.split(":", 3)
    as_json = orjson.dumps({MARKER: "v1", "key": kid, "data": data})
    with pytest.raises(durably.DecryptionError, match="could not be opened"):
        box.open(as_json)


def test_fallback_keys_open_what_they_sealed_and_the_missing_key_is_named() -> None:
    old = durably.Encryption(OLD)
    sealed = old.seal(b'"secret"')
    assert durably.Encryption(KEY, fallback_keys=[OLD]).open(sealed) == b'"secret"'
    with pytest.raises(durably.DecryptionError, match=f"sealed with key {old.key_id}.*fallback_keys") as caught:
        durably.Encryption(KEY).open(sealed)
    assert caught.value.code == "decryption_failed"


def test_an_altered_value_is_refused() -> None:
    box = durably.Encryption(KEY)
    envelope = json.loads(box.seal(b'"secret"'))
    raw = bytearray(base64.b64decode(envelope["data"]))
    raw[-1] ^= 1
    envelope["data"] = base64.b64encode(raw).decode()
    with pytest.raises(durably.DecryptionError, match="altered"):
        box.open(orjson.dumps(envelope))


@pytest.mark.parametrize(
    ("key", "error"),
    [
        (b"short", "must be 32 bytes.*got 5 bytes"),
        ("not base64 at all!", "must be 32 bytes.*got"),
        (base64.b64encode(b"x" * 16).decode(), "got 16 bytes"),
    ],
)
def test_bad_keys_are_refused_with_what_a_key_is(key: str | bytes, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        durably.Encryption(key)


def test_keys_in_any_base64_and_as_bytes_are_the_same_key() -> None:
    raw = base64.urlsafe_b64decode(KEY)
    ids = {durably.Encryption(k).key_id for k in (raw, KEY, base64.b64encode(raw).decode(), KEY.rstrip("="))}
    assert len(ids) == 1
    with pytest.raises(TypeError, match="list of keys"):
        durably.Encryption(KEY, fallback_keys=OLD)  # type: ignore[arg-type]


def test_the_event_field_is_sealed_when_sent_and_opened_when_received() -> None:
    box = durably.Encryption(KEY)
    event = durably.Event("order/placed", {"orderId": "o-1", "encrypted": {"card": "4242"}})
    sent = json.loads(check_event(event, "event 0", box))
    assert sent["orderId"] == "o-1" and sent["encrypted"][MARKER] == "v1" and "4242" not in json.dumps(sent)
    assert open_event(box, durably.Event("order/placed", sent)) == event
    assert json.loads(check_event(durably.Event("n", {"other": 1}), "event 0", box)) == {"other": 1}
    unsealed = durably.Encryption(KEY, event_field=None)
    assert json.loads(check_event(event, "event 0", unsealed)) == event.data


def test_step_events_and_invoke_data_are_sealed_as_the_client_seals_them() -> None:
    box = durably.Encryption(KEY)
    request = send_request("notify", durably.Event("n", {"encrypted": "secret"}), box)
    [(_, data_json)] = request.events
    assert b"secret" not in data_json and box.open_event_data(json.loads(data_json)) == {"encrypted": "secret"}
    invoke = invoke_request("call", "app", "child", {"encrypted": ["secret"]}, None, box)
    assert invoke.invoke is not None and b"secret" not in invoke.invoke.data_json
    with pytest.raises(ValueError, match=r"data \$\.encrypted is a set"):
        invoke_request("call", "app", "child", {"encrypted": {1}}, None, box)


def test_an_on_failure_handler_gets_the_failed_runs_error_and_event_opened() -> None:
    box = durably.Encryption(KEY)
    failed = durably.Event(
        "durably/function.failed",
        {
            "run_id": "r",
            "error": {"name": "ValueError", "message": box.seal_text("no funds on 4242"), "stack": ""},
            "event": {"name": "order/placed", "data": box.seal_event_data({"encrypted": {"card": "4242"}})},
        },
    )
    opened = open_event(box, failed)
    assert opened.data["error"]["message"] == "no funds on 4242"
    assert opened.data["event"]["data"] == {"encrypted": {"card": "4242"}}


def test_runs_read_by_a_client_and_a_watch_are_opened() -> None:
    box = durably.Encryption(KEY)
    failure = common_pb2.Failure(name="ValueError", message=box.seal_text("no funds on 4242"), stack="")
    run = api_pb2.Run(
        id="r",
        output_json=box.seal(b'{"paid":"4242"}'),
        steps=[
            api_pb2.Step(id="a", name="charge", output_json=box.seal(b'"4242"')),
            api_pb2.Step(id="b", name="refund", status=api_pb2.STEP_STATUS_FAILED, error=failure),
        ],
    )
    watched = WatchedRun("r", None, box).update(api_pb2.WatchRunResponse(run=run, first_step=0))
    for opened in (_convert.run_from_pb(run, box), watched):
        assert opened is not None
        assert opened.output == {"paid": "4242"}
        assert opened.steps[0].output == "4242"
        assert opened.steps[1].error is not None and opened.steps[1].error.message == "no funds on 4242"
    assert _convert.run_from_pb(run).output[MARKER] == "v1"
