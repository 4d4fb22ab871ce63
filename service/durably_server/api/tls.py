"""TLS for the daemon's port (``--tls-cert``/``--tls-key``), and client certificates (mTLS,
``--tls-client-ca``).

Without TLS, a ``durably serve`` token and every payload cross the network in clear text. The files
are read and checked when the daemon starts (with Python's own TLS library, which reads the same PEM
as gRPC): gRPC itself would accept a key that does not match its certificate and fail every
handshake later, the daemon up but unreachable.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc


class TlsError(ValueError):
    """A certificate, key or CA file is missing, unreadable, not PEM, or the key is not the certificate's."""


@dataclass(frozen=True, slots=True)
class ServerTls:
    cert_chain: bytes
    private_key: bytes
    client_ca: bytes | None = None
    """When set, a caller must present a certificate signed by this CA (mTLS), or the handshake fails."""

    @property
    def requires_client_cert(self) -> bool:
        return self.client_ca is not None

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.private_key, self.cert_chain)],
            root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None,
        )


def load_server_tls(cert: Path, key: Path, client_ca: Path | None = None) -> ServerTls:
    """Read and check the daemon's certificate chain, its key, and the CA of client certificates."""
    tls = ServerTls(_read(cert), _read(key), None if client_ca is None else _read(client_ca))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key, password=_no_password)
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"{cert} and {key} are not a PEM certificate chain and its private key ({exc})") from None
    if tls.client_ca is not None:
        try:
            context.load_verify_locations(cadata=tls.client_ca.decode("ascii", "replace"))
        except (ValueError, ssl.SSLError) as exc:
            raise TlsError(f"{client_ca} holds no PEM CA certificate ({exc})") from None
    return tls


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise TlsError(f"{path}: no such file") from None
    except OSError as exc:
        raise TlsError(f"cannot read {path}: {exc.strerror}") from None


def _no_password() -> str:
    """Asked only for an encrypted key (else Python would prompt on the terminal): gRPC cannot use one."""
    raise TlsError("the private key is encrypted; give the daemon an unencrypted key (readable by it alone)")
