"""``durably.Encryption``: a run's data sealed in the SDK, so that the executor, its database file and
its logs only ever hold ciphertext of it.

Sealed where it is made (the worker, the client) and opened only where it is used (the worker
replaying a run, the client reading one): step results, the handler's output, the messages and
stacks of errors raised by user code, and one field of event data (``event_field``). The rest of an
event stays readable because the executor evaluates triggers, ``match``/``if_`` expressions and
concurrency keys over it; names, ids, times and error names stay readable because it schedules by
them.

A JSON value is sealed with AES-256-GCM (a fresh 96-bit nonce each time) into JSON the executor
stores like any other, ``{"__durably_encrypted__":"v1","key":"<key id>","data":"<base64>"}``; a text
into ``durably-encrypted:v1:<key id>:<base64>``. The key id (8 bytes of the key's SHA-256, in hex)
says which key opens a value, so keys rotate without a pause: the new key becomes ``key``, the old
one goes to ``fallback_keys`` until no unfinished run holds values it sealed. What is not sealed
(stored before encryption was turned on; what the executor makes itself: a sleep's result, the ids of
sent events) passes through unchanged.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from durably._json import encode
from durably.errors import DecryptionError

if TYPE_CHECKING:
    from durably._types import ErrorInfo, Event

MARKER = "__durably_encrypted__"
"""The key that marks a sealed JSON value (so a user value must not be a dict with this key)."""
_VERSION = "v1"
_JSON_PREFIX = b'{"' + MARKER.encode() + b'":"' + _VERSION.encode() + b'","key":"'
_JSON_MIDDLE = b'","data":"'
_TEXT_PREFIX = "durably-encrypted:" + _VERSION + ":"
_NONCE_BYTES = 12
_KEY_BYTES = 32
_AAD_JSON = b"durably/json/v1"
_AAD_TEXT = b"durably/text/v1"
"""Associated data: a sealed text cannot be passed off as a sealed JSON value, nor the reverse."""
FUNCTION_FAILED = "durably/function.failed"


def _key_bytes(key: str | bytes, what: str) -> bytes:
    raw: bytes | None = None
    if isinstance(key, bytes):
        raw = key
    elif isinstance(key, str):
        text = key.strip()
        try:
            raw = base64.urlsafe_b64decode(text.replace("+", "-").replace("/", "_") + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            raw = None
    else:
        raise TypeError(f"Encryption: {what} must be bytes or a base64 str, got {type(key).__name__}")
    if raw is None or len(raw) != _KEY_BYTES:
        got = "not base64" if raw is None else f"{len(raw)} bytes"
        raise ValueError(
            f"Encryption: {what} must be {_KEY_BYTES} bytes (AES-256), or those bytes in base64 "
            f"(Encryption.generate_key() makes one); got {got}"
        )
    return raw


def _key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:16]


class Encryption:
    """Seals what durably stores of a run's data with AES-256-GCM; give it to ``durably.Client(...,
    encryption=...)`` (the client's workers use it too). Needs the ``cryptography`` package
    (``pip install 'durably[encryption]'``).

    ``key``: 32 random bytes, or those in base64 (:meth:`generate_key`); everything is sealed with it.
    ``fallback_keys``: older keys, only to open what they sealed (key rotation).
    ``event_field``: the field of event data that is sealed (``data["encrypted"]`` by default) when an
    event is sent from a client or a step, or is the data of ``step.invoke``, and opened when a
    handler gets it (``ctx.event``, ``step.wait_for_event``); None seals no event data. The other
    fields stay readable to the executor, which matches events by them.

    Every worker and client that reads a run's data needs the key that sealed it: a client without
    it sees sealed values as they are stored, and a worker raises :class:`durably.DecryptionError` in
    the handler (retried as any handler error, so a worker given the key can finish the run).
    """

    def __init__(
        self,
        key: str | bytes,
        *,
        fallback_keys: Sequence[str | bytes] = (),
        event_field: str | None = "encrypted",
    ) -> None:
        try:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        except ImportError:  # pragma: no cover - depends on the installation
            raise ImportError(
                "durably.Encryption needs the 'cryptography' package: pip install 'durably[encryption]'"
            ) from None
        if isinstance(fallback_keys, str | bytes):
            raise TypeError("Encryption(fallback_keys=...) takes a list of keys, not one key")
        if event_field is not None and (not isinstance(event_field, str) or not event_field):
            raise ValueError(f"Encryption(event_field=...) must be a non-empty str or None, got {event_field!r}")
        current = _key_bytes(key, "key")
        self.key_id = _key_id(current)
        """The id written next to every value this seals."""
        self.event_field = event_field
        self._sealer = AESGCM(current)
        self._openers: dict[str, AESGCM] = {self.key_id: self._sealer}
        for position, fallback in enumerate(fallback_keys):
            raw = _key_bytes(fallback, f"fallback_keys[{position}]")
            self._openers.setdefault(_key_id(raw), AESGCM(raw))

    def __repr__(self) -> str:
        return (
            f"durably.Encryption(key_id={self.key_id!r}, keys={len(self._openers)}, event_field={self.event_field!r})"
        )

    @classmethod
    def from_env(cls) -> Encryption | None:
        """The ``Encryption`` the environment describes, None if ``$DURABLY_ENCRYPTION_KEY`` is unset:
        ``$DURABLY_ENCRYPTION_FALLBACK_KEYS`` (comma-separated) and ``$DURABLY_ENCRYPTION_EVENT_FIELD``
        (empty: seal no event field) as the arguments of those names. The ``durably`` client commands
        use it."""
        key = os.environ.get("DURABLY_ENCRYPTION_KEY")
        if not key:
            return None
        fallback = [k for k in os.environ.get("DURABLY_ENCRYPTION_FALLBACK_KEYS", "").split(",") if k.strip()]
        field = os.environ.get("DURABLY_ENCRYPTION_EVENT_FIELD", "encrypted")
        return cls(key, fallback_keys=fallback, event_field=field or None)

    @staticmethod
    def generate_key() -> str:
        """A new random key, in base64: keep it as a secret (e.g. in an environment variable)."""
        return base64.urlsafe_b64encode(os.urandom(_KEY_BYTES)).decode()

    # --- JSON values ------------------------------------------------------------------------------

    def seal(self, data: bytes) -> bytes:
        """The JSON text ``data`` sealed, as JSON text."""
        nonce = os.urandom(_NONCE_BYTES)
        box = base64.b64encode(nonce + self._sealer.encrypt(nonce, data, _AAD_JSON))
        return b"".join((_JSON_PREFIX, self.key_id.encode(), _JSON_MIDDLE, box, b'"}'))

    def open(self, data: bytes) -> bytes:
        """The JSON text sealed in ``data``; ``data`` itself if it is not sealed."""
        if data.startswith(_JSON_PREFIX):  # as seal() writes it: sliced, a big value is not parsed
            start = len(_JSON_PREFIX)
            middle = data.find(_JSON_MIDDLE, start, start + 64)
            if middle > 0 and data.endswith(b'"}'):
                box = memoryview(data)[middle + len(_JSON_MIDDLE) : -2]
                return self._open_box(data[start:middle].decode(), box, _AAD_JSON)
        if not data.lstrip().startswith(b"{") or MARKER.encode() not in data:
            return data
        value = orjson.loads(data)  # sealed, then written out again by other JSON code?
        return self._open_envelope(value) if is_sealed(value) else data

    def _open_envelope(self, envelope: Mapping[str, Any]) -> bytes:
        return self._open_box(str(envelope.get("key")), str(envelope.get("data")), _AAD_JSON)

    def _open_box(self, kid: str, box: str | memoryview, aad: bytes) -> bytes:
        opener = self._openers.get(kid)
        if opener is None:
            raise DecryptionError(
                f"a value was sealed with key {kid}, which this Encryption does not hold (it holds "
                f"{', '.join(self._openers)}): add that key to fallback_keys"
            )
        try:
            raw = binascii.a2b_base64(box, strict_mode=True)
            return opener.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], aad)
        except Exception as exc:  # InvalidTag, bad base64, too short: all mean it cannot be trusted
            raise DecryptionError(
                f"a value sealed with key {kid} could not be opened ({type(exc).__name__}): it was altered "
                "in the store, or sealed by another key with the same id"
            ) from None

    # --- texts (error messages and stacks) --------------------------------------------------------

    def seal_text(self, text: str) -> str:
        """``text`` sealed, as text (an empty text stays empty)."""
        if not text:
            return text
        nonce = os.urandom(_NONCE_BYTES)
        box = base64.b64encode(nonce + self._sealer.encrypt(nonce, text.encode(), _AAD_TEXT)).decode()
        return f"{_TEXT_PREFIX}{self.key_id}:{box}"

    def open_text(self, text: str) -> str:
        """The text sealed in ``text``; ``text`` itself if it is not sealed."""
        if not text.startswith(_TEXT_PREFIX):
            return text
        kid, _, box = text[len(_TEXT_PREFIX) :].partition(":")
        return self._open_box(kid, box, _AAD_TEXT).decode()

    # --- event data -------------------------------------------------------------------------------

    def seal_event_data(self, data: dict[str, Any]) -> dict[str, Any]:
        """``data`` with its ``event_field`` sealed (a new dict; ``data`` itself if there is nothing to
        seal). Raises :class:`durably._json.JsonValueError` for a field JSON cannot represent."""
        field = self.event_field
        if field is None or field not in data or is_sealed(data[field]):
            return data
        return {**data, field: orjson.loads(self.seal(encode(data[field])))}

    def open_event_data(self, data: dict[str, Any]) -> dict[str, Any]:
        """``data`` with its ``event_field`` opened (a new dict; ``data`` itself if it is not sealed)."""
        field = self.event_field
        if field is None or not is_sealed(data.get(field)):
            return data
        return {**data, field: orjson.loads(self._open_envelope(data[field]))}


def is_sealed(value: object) -> bool:
    """Whether a decoded JSON value is a sealed one."""
    return isinstance(value, dict) and value.get(MARKER) == _VERSION and "key" in value and "data" in value


def sealed_event_json(encryption: Encryption | None, data: dict[str, Any], data_json: bytes) -> bytes:
    """The JSON of event data to send: ``data_json`` (``data`` encoded, which checked it), or the data
    encoded again with its ``event_field`` sealed."""
    if encryption is None:
        return data_json
    sealed = encryption.seal_event_data(data)
    return data_json if sealed is data else encode(sealed)


def seal(encryption: Encryption | None, data: bytes) -> bytes:
    return data if encryption is None else encryption.seal(data)


def open_json(encryption: Encryption | None, data: bytes) -> bytes:
    return data if encryption is None else encryption.open(data)


def seal_error(encryption: Encryption | None, error: ErrorInfo) -> ErrorInfo:
    """An error raised by user code, its message and stack sealed (they may quote its data)."""
    if encryption is None:
        return error
    return dataclasses.replace(
        error, message=encryption.seal_text(error.message), stack=encryption.seal_text(error.stack)
    )


def open_error(encryption: Encryption | None, error: ErrorInfo) -> ErrorInfo:
    if encryption is None:
        return error
    return dataclasses.replace(
        error, message=encryption.open_text(error.message), stack=encryption.open_text(error.stack)
    )


def open_event(encryption: Encryption | None, event: Event) -> Event:
    """An event as a handler gets it: its ``event_field`` opened; for the ``durably/function.failed``
    event of an ``on_failure`` handler, also the failed run's error and its event's field."""
    if encryption is None:
        return event
    data = encryption.open_event_data(event.data)
    if event.name == FUNCTION_FAILED:
        error, cause = data.get("error"), data.get("event")
        if isinstance(error, dict):
            texts = {
                key: encryption.open_text(text)
                for key in ("message", "stack")
                if isinstance(text := error.get(key), str)
            }
            data = {**data, "error": {**error, **texts}}
        if isinstance(cause, dict) and isinstance(cause.get("data"), dict):
            data = {**data, "event": {**cause, "data": encryption.open_event_data(cause["data"])}}
    return event if data is event.data else dataclasses.replace(event, data=data)
