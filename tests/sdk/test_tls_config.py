"""``durably.TLSConfig`` and ``tls=`` of the clients: what a mistake raises, what the environment gives."""

from __future__ import annotations

from pathlib import Path

import durably
import pytest


def test_a_client_certificate_needs_its_key_and_the_other_way_round() -> None:
    with pytest.raises(ValueError, match="client_cert and client_private_key go together"):
        durably.TLSConfig(client_cert=b"-----BEGIN CERTIFICATE-----")
    with pytest.raises(ValueError, match="go together"):
        durably.TLSConfig(client_private_key=b"-----BEGIN PRIVATE KEY-----")


def test_pem_fields_are_bytes_and_the_domain_a_name() -> None:
    with pytest.raises(TypeError, match="server_root_ca_cert"):
        durably.TLSConfig(server_root_ca_cert="ca.pem")  # type: ignore[arg-type]  # a path is not the PEM
    with pytest.raises(ValueError, match="domain"):
        durably.TLSConfig(domain="")


def test_the_environment_names_the_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DURABLY_TLS_CA", "DURABLY_TLS_CERT", "DURABLY_TLS_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert durably.TLSConfig.from_env() is None
    assert durably.Client("app")._tls is None  # plain text, as `durably dev` serves
    (tmp_path / "ca.pem").write_bytes(b"CA PEM")
    monkeypatch.setenv("DURABLY_TLS_CA", str(tmp_path / "ca.pem"))
    assert durably.TLSConfig.from_env() == durably.TLSConfig(server_root_ca_cert=b"CA PEM")
    assert durably.SyncClient("app")._tls == durably.TLSConfig(server_root_ca_cert=b"CA PEM")
    assert durably.Client("app", tls=False)._tls is None
    monkeypatch.setenv("DURABLY_TLS_CERT", str(tmp_path / "missing.pem"))
    with pytest.raises(FileNotFoundError, match=r"missing\.pem"):
        durably.TLSConfig.from_env()


def test_tls_true_trusts_the_system_roots_and_anything_else_is_refused() -> None:
    assert durably.Client("app", tls=True)._tls == durably.TLSConfig()
    with pytest.raises(TypeError, match="tls= must be"):
        durably.Client("app", tls="yes")  # type: ignore[arg-type]
