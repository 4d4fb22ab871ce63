"""How a call proves it may talk to a daemon started by ``durably serve``: gRPC metadata
``authorization: Bearer <token>`` on every call, the token the daemon was given. Clients in any
language send the same header (proto/durably/protocol/v1/api.proto says so); this module is that
convention for the Python SDK and the daemon, so the two cannot drift apart."""

from __future__ import annotations

METADATA_KEY = "authorization"
SCHEME = "Bearer "


def auth_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """The metadata every call carries: the token, or nothing for a daemon that needs none (``durably dev``)."""
    return ((METADATA_KEY, SCHEME + token),) if token else ()
