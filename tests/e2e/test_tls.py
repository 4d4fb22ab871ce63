"""TLS on the daemon's port (`--tls-cert`/`--tls-key`) and client certificates (`--tls-client-ca`):
workers, clients and the CLI that trust the daemon's CA run as usual; plain-text callers, and callers
without a client certificate where one is required, never reach a method; bad files stop the daemon
before it opens its store. Certificates come from the `openssl` command, made fresh for the module."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import durably
import pytest
from durably.errors import UnavailableError

from .harness import CRASH, Daemon, Harness, environ_without, free_port, metrics, open_client, run_cli, run_to_end

TOKEN = "test-token-0123456789abcdef"


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_cert: Path  # for the name `elsewhere` only
    other_key: Path  # a valid key that is not the server certificate's
    rogue_cert: Path  # a client certificate from another CA
    rogue_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _signed(name: str, subject: str, extensions: str, cwd: Path, ca: str = "ca") -> None:
    """`name`.pem and `name`.key: a P-256 certificate signed by the CA `ca`.pem (the module's by default)."""
    (cwd / f"{name}.ext").write_text(extensions + "\n", encoding="utf-8")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
             f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=cwd)  # fmt: skip
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-days", "2", "-out", f"{name}.pem", "-extfile", f"{name}.ext", cwd=cwd)  # fmt: skip


def _ca(name: str, cwd: Path) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN=durably test {name}",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
             cwd=cwd)  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    cwd = tmp_path_factory.mktemp("pki")
    _ca("ca", cwd)
    _ca("rogue-ca", cwd)
    _signed("server", "/CN=localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost", cwd)
    _signed("client", "/CN=durably test worker", "extendedKeyUsage=clientAuth", cwd)
    _signed("other", "/CN=someone else", "subjectAltName=DNS:elsewhere", cwd)
    _signed("rogue", "/CN=durably test worker", "extendedKeyUsage=clientAuth", cwd, ca="rogue-ca")
    names = ("ca.pem", "server.pem", "server.key", "client.pem", "client.key", "other.pem", "other.key")
    return Pki(*(cwd / name for name in (*names, "rogue.pem", "rogue.key")))


@pytest.fixture
def daemon_args(pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, ...]:
    """The harness's daemon serves TLS and requires TOKEN; this test's SDK clients, workers and CLI
    trust its CA ($DURABLY_TLS_CA) and send the token."""
    monkeypatch.setenv("DURABLY_TOKEN", TOKEN)
    monkeypatch.setenv("DURABLY_TLS_CA", str(pki.ca))
    path = tmp_path / "token"
    path.write_text(TOKEN, encoding="utf-8")
    return ("--token-file", str(path), "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key))


async def test_workers_and_clients_that_trust_the_ca_run_as_usual(harness: Harness) -> None:
    assert "durably: serving TLS (no client certificates)" in harness.daemon.stdout()
    harness.start_worker(CRASH)  # $DURABLY_TLS_CA: the worker's stream is TLS too
    async with open_client(harness.address) as client:
        run = await run_to_end(client, "demo/echo", {"n": 1})
    assert run.status == "completed" and run.output == {"echo": {"n": 1}}, run


async def test_plain_text_callers_never_reach_a_method(harness: Harness) -> None:
    plain = durably.Client("app", address=harness.address, tls=False)
    try:
        with pytest.raises(UnavailableError):
            await plain.send(durably.Event(name="demo/echo", data={}))
        # Reads wait out an executor that restarts, so the refusal comes at the end of the wait: with
        # the reason (it said only "the executor could not be reached").
        with pytest.raises(TimeoutError, match="TLS") as waited:
            await plain.wait_for_run("no-such-run", timeout=2)
        assert "serving TLS closes plain-text connections" in str(waited.value), waited.value
        with pytest.raises(TimeoutError, match="TLS"):
            async for _ in plain.watch_run("no-such-run", timeout=2):
                pass
    finally:
        await plain.close()
    with durably.SyncClient("app", address=harness.address, tls=False) as sync_plain:
        with pytest.raises(TimeoutError, match="TLS"):
            sync_plain.wait_for_run("no-such-run", timeout=2)
    assert metrics(harness.address).events_received == 0
    assert harness.daemon.alive(), harness.daemon.report()


def test_the_cli_reads_the_ca_from_the_environment(harness: Harness) -> None:
    send = ("send", "demo/nobody", "--id", "cli-1", "--address", harness.address)
    sent = run_cli(*send)
    assert sent.returncode == 0 and sent.stdout.startswith("cli-1"), sent
    refused = run_cli(*send, env=environ_without("DURABLY_TLS_CA"))
    assert refused.returncode == 1 and refused.stderr.startswith("durably: cannot reach"), refused
    assert "$DURABLY_TLS_CA" in refused.stderr, refused.stderr  # the likely cause, said
    assert metrics(harness.address).events_received == 1


@pytest.fixture
def mtls_daemon(pki: Pki, tmp_path: Path) -> Iterator[Daemon]:
    """`durably serve` with client certificates required and no token at all."""
    tls = ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key), "--tls-client-ca", str(pki.ca)]
    daemon = Daemon(tmp_path, db=tmp_path / "mtls.db", port=free_port(), name="mtls", extra_args=tls)
    daemon.argv[daemon.argv.index("dev")] = "serve"
    for name in ("DURABLY_TOKEN", "DURABLY_TLS_CA", "DURABLY_TLS_CERT", "DURABLY_TLS_KEY"):
        daemon.env.pop(name, None)
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()


def test_with_client_certificates_required_serve_needs_no_token(mtls_daemon: Daemon, pki: Pki) -> None:
    assert "client certificates required" in mtls_daemon.stdout()
    with_cert = durably.TLSConfig.from_files(ca=pki.ca, cert=pki.client_cert, key=pki.client_key)
    with durably.SyncClient("app", address=mtls_daemon.address, tls=with_cert) as client:
        [event_id] = client.send(durably.Event(name="demo/none", data={}, id="mtls-1"))
        assert event_id == "mtls-1"
    without = durably.TLSConfig.from_files(ca=pki.ca)
    rogue = durably.TLSConfig.from_files(ca=pki.ca, cert=pki.rogue_cert, key=pki.rogue_key)
    for refused in (without, rogue):  # no client certificate; one from a CA the daemon does not trust
        with durably.SyncClient("app", address=mtls_daemon.address, tls=refused) as client:
            with pytest.raises(UnavailableError):
                client.send(durably.Event(name="demo/none", data={}, id="mtls-2"))
    with durably.SyncClient("app", address=mtls_daemon.address, tls=with_cert) as client:
        assert [r.event_id for r in client.list_runs(event_id="mtls-2")] == []
        assert client.list_functions() == []
    assert mtls_daemon.alive(), mtls_daemon.report()


def test_domain_names_the_certificate_a_daemon_reached_by_address_shows(pki: Pki, tmp_path: Path) -> None:
    """The "other" certificate names only `elsewhere`: reached at 127.0.0.1, it is accepted only for
    `domain="elsewhere"`, so the name is checked and `domain` is what it is checked against."""
    tls = ["--tls-cert", str(pki.other_cert), "--tls-key", str(pki.other_key)]
    daemon = Daemon(tmp_path, db=tmp_path / "other.db", port=free_port(), name="other", extra_args=tls)
    try:
        daemon.start()
        named = durably.TLSConfig.from_files(ca=pki.ca, domain="elsewhere")
        with durably.SyncClient("app", address=daemon.address, tls=named) as client:
            assert client.list_runs() == []
        unnamed = durably.TLSConfig.from_files(ca=pki.ca)
        with durably.SyncClient("app", address=daemon.address, tls=unnamed) as client:
            with pytest.raises(UnavailableError):
                client.list_runs()
    finally:
        daemon.stop()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ("--tls-cert {server_cert}", "--tls-cert and --tls-key go together"),
        ("--tls-client-ca {ca}", "--tls-client-ca needs --tls-cert and --tls-key"),
        ("--tls-cert {server_cert} --tls-key {other_key}", "are not a PEM certificate chain and its private key"),
        ("--tls-cert {server_cert} --tls-key {ca}", "are not a PEM certificate chain"),
        ("--tls-cert {server_cert} --tls-key missing.key", "missing.key: no such file"),
        ("--tls-cert {server_cert} --tls-key {server_key} --tls-client-ca {server_key}", "holds no PEM CA certificate"),
    ],
)
def test_bad_tls_files_stop_the_daemon_before_it_opens_its_store(
    pki: Pki, tmp_path: Path, flags: str, message: str
) -> None:
    serve = ("serve", "--db", str(tmp_path / "d.db"), "--listen", "127.0.0.1:0", *flags.format(**asdict(pki)).split())
    refused = run_cli(*serve, env={**os.environ, "DURABLY_TOKEN": TOKEN}, cwd=tmp_path)
    assert refused.returncode == 2, refused
    assert refused.stderr.startswith("durably: ") and message in refused.stderr, refused.stderr
    assert not (tmp_path / "d.db").exists(), "the daemon opened its store before refusing to start"
