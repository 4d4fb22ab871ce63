"""``durably.TLSConfig``: how clients and workers reach a daemon that serves TLS (``durably serve
--tls-cert``), and prove who they are when it requires client certificates (mTLS).

Without TLS a ``durably serve`` token travels in clear text, readable by anyone on the network path;
with it, the token and every payload are encrypted and the daemon's identity is checked. The
environment can configure it for code that does not (the CLI, a worker started by a supervisor), as
``$DURABLY_ADDRESS`` and ``$DURABLY_TOKEN`` do: ``$DURABLY_TLS_CA``, ``$DURABLY_TLS_CERT`` and
``$DURABLY_TLS_KEY`` name PEM files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import grpc

ENV_CA = "DURABLY_TLS_CA"
ENV_CERT = "DURABLY_TLS_CERT"
ENV_KEY = "DURABLY_TLS_KEY"


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """TLS to the daemon; every field optional, all PEM-encoded bytes.

    * ``server_root_ca_cert``: the certificate authority that signed the daemon's certificate (a
      private CA, a self-signed certificate); None trusts the system's roots.
    * ``client_cert`` and ``client_private_key``: this side's certificate and key, for a daemon that
      requires client certificates (``durably serve --tls-client-ca``); both or neither.
    * ``domain``: the name to check the daemon's certificate against, when it is not the host of the
      address (e.g. a certificate for ``durably.internal`` reached at ``10.0.0.5:7070``).
    """

    server_root_ca_cert: bytes | None = None
    client_cert: bytes | None = None
    client_private_key: bytes | None = None
    domain: str | None = None

    def __post_init__(self) -> None:
        for name in ("server_root_ca_cert", "client_cert", "client_private_key"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bytes):
                raise TypeError(f"TLSConfig({name}=...) must be PEM bytes or None, got {type(value).__name__}")
        if (self.client_cert is None) != (self.client_private_key is None):
            raise ValueError("TLSConfig: client_cert and client_private_key go together (give both or neither)")
        if self.domain is not None and (not isinstance(self.domain, str) or not self.domain):
            raise ValueError(f"TLSConfig(domain=...) must be a non-empty host name, got {self.domain!r}")

    @classmethod
    def from_files(
        cls,
        ca: str | Path | None = None,
        cert: str | Path | None = None,
        key: str | Path | None = None,
        domain: str | None = None,
    ) -> TLSConfig:
        """The same, read from PEM files (an unreadable file raises ``OSError`` naming it)."""
        return cls(_read(ca), _read(cert), _read(key), domain)

    @classmethod
    def from_env(cls) -> TLSConfig | None:
        """From ``$DURABLY_TLS_CA`` / ``$DURABLY_TLS_CERT`` / ``$DURABLY_TLS_KEY`` (file paths); None
        when none of them is set (plain text, as ``durably dev`` serves)."""
        ca, cert, key = (os.environ.get(name) or None for name in (ENV_CA, ENV_CERT, ENV_KEY))
        if ca is None and cert is None and key is None:
            return None
        return cls.from_files(ca, cert, key)

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(self.server_root_ca_cert, self.client_private_key, self.client_cert)


def resolve_tls(tls: bool | TLSConfig | None) -> TLSConfig | None:
    """``Client(tls=...)``: a config as given, True for the system's roots, False for plain text, None
    for what the environment says (``TLSConfig.from_env``)."""
    if isinstance(tls, TLSConfig):
        return tls
    if tls is True:
        return TLSConfig()
    if tls is False:
        return None
    if tls is None:
        return TLSConfig.from_env()
    raise TypeError(f"tls= must be a bool, a durably.TLSConfig or None, got {tls!r}")


def _read(path: str | Path | None) -> bytes | None:
    return None if path is None else Path(path).read_bytes()
