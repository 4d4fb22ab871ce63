"""The `durably` command: run the daemon, and look at it from a terminal."""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from durably import Run, RunStep, SyncClient

    from durably_server.api.tls import ServerTls

DEV_DB = Path(".durably/dev.db")
DEV_LISTEN = "127.0.0.1:7070"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="durably", description="durable step functions: the executor daemon")
    sub = parser.add_subparsers(dest="command", required=True)

    daemon = argparse.ArgumentParser(add_help=False)
    daemon.add_argument(
        "--retry-base", type=_duration, default=1000, help="backoff before the first retry (default 1s; doubles)"
    )
    daemon.add_argument("--retry-max", type=_duration, default=3_600_000, help="longest backoff (default 1h)")
    daemon.add_argument(
        "--heartbeat", type=_duration, default=5000, help="how often workers must heartbeat (default 5s)"
    )
    daemon.add_argument(
        "--worker-timeout",
        type=_duration,
        default=15_000,
        help="a worker silent this long loses its executions to other workers (default 15s)",
    )
    daemon.add_argument(
        "--token-file",
        type=Path,
        default=None,
        help="file holding the token every worker and client must send (serve: default $DURABLY_TOKEN)",
    )
    daemon.add_argument("--tls-cert", type=Path, default=None, help="serve TLS with this PEM certificate (chain)")
    daemon.add_argument("--tls-key", type=Path, default=None, help="the PEM private key of --tls-cert")
    daemon.add_argument(
        "--tls-client-ca",
        type=Path,
        default=None,
        help="require client certificates signed by this PEM CA (mTLS; serve then needs no token)",
    )

    dev = sub.add_parser(
        "dev",
        parents=[daemon],
        help="start the daemon for local development (SQLite file, loopback, no token unless --token-file)",
    )
    dev.add_argument("--db", type=Path, default=DEV_DB, help=f"SQLite file (default {DEV_DB})")
    dev.add_argument("--listen", default=DEV_LISTEN, help=f"HOST:PORT to serve on (default {DEV_LISTEN})")

    serve = sub.add_parser(
        "serve", parents=[daemon], help="start the daemon with explicit settings (a token or mTLS is required)"
    )
    serve.add_argument("--db", type=Path, required=True, help="SQLite file")
    serve.add_argument("--listen", required=True, help="HOST:PORT to serve on")

    address = argparse.ArgumentParser(add_help=False)
    address.add_argument(
        "--address",
        default=os.environ.get("DURABLY_ADDRESS", DEV_LISTEN),
        help="daemon address (default $DURABLY_ADDRESS or 127.0.0.1:7070; the token, if any, is $DURABLY_TOKEN;"
        " TLS: $DURABLY_TLS_CA, $DURABLY_TLS_CERT, $DURABLY_TLS_KEY)",
    )
    send = sub.add_parser("send", parents=[address], help="send an event")
    send.add_argument("name", help="event name, e.g. order/placed")
    send.add_argument("--data", default="{}", help="event data as a JSON object")
    send.add_argument("--id", default=None, help="deduplication id")

    runs = sub.add_parser("runs", parents=[address], help="list runs, newest first")
    runs.add_argument("--function", default=None, help="only runs of this function id")
    runs.add_argument("--status", default=None, help="only runs with this status")
    runs.add_argument("--limit", type=int, default=20)

    run = sub.add_parser("run", parents=[address], help="show one run and its step timeline")
    run.add_argument("run_id")
    run.add_argument(
        "--follow", "-f", action="store_true", help="show each step and status as it happens, until the run ends"
    )
    return parser


def _duration(text: str) -> int:
    from durably_server.durations import parse_ms

    try:
        return parse_ms(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _time(value: datetime | None) -> str:
    return value.isoformat(timespec="milliseconds") if value else "-"


def _client(args: argparse.Namespace) -> SyncClient:
    """The client commands' client: the environment's token, TLS files and encryption keys."""
    import durably

    return durably.SyncClient(app_id="cli", address=args.address, encryption=durably.Encryption.from_env())


def _send(args: argparse.Namespace) -> int:
    import durably

    try:
        data = json.loads(args.data)
    except ValueError as exc:
        print(f"durably: --data is not JSON: {exc}", file=sys.stderr)
        return 2
    with _client(args) as client:
        ids = client.send(durably.Event(name=args.name, data=data, id=args.id))
        print(ids[0])
        for run in client.list_runs(event_id=ids[0]):
            print(f"  run {run.id} {run.function_id} {run.status}")
    return 0


def _runs(args: argparse.Namespace) -> int:
    with _client(args) as client:
        for run in client.list_runs(function_id=args.function, status=args.status, limit=args.limit):
            print(f"{run.id}  {run.status:<10} {run.function_id:<30} {_time(run.created_at)}")
    return 0


def _run(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.follow:
            return _follow(client, args.run_id)
        run = client.get_run(args.run_id)  # an unknown id: main prints the RunNotFoundError
        _show_start(run)
        print(f"status    {run.status}\nended     {_time(run.ended_at)}")
        for step in run.steps:
            _show_step(step)
        _show_end(run)
    return 0


def _follow(client: SyncClient, run_id: str) -> int:
    """Print the run as `durably run` does, but each step and status as it happens (WatchRun)."""
    shown, last = 0, None
    try:
        for run in client.watch_run(run_id):
            if last is None:
                _show_start(run)
            if last is None or run.status != last.status:
                print(f"status    {run.status}", flush=True)
            for step in run.steps[shown:]:
                _show_step(step)
            shown, last = len(run.steps), run
    except KeyboardInterrupt:
        return 130
    if last is not None:
        print(f"ended     {_time(last.ended_at)}")
        _show_end(last)
    return 0


def _show_start(run: Run) -> None:
    print(f"run       {run.id}\nfunction  {run.app_id}/{run.function_id}\nevent     {run.event_id}")
    print(f"created   {_time(run.created_at)}", flush=True)


def _show_step(step: RunStep) -> None:
    took = (step.ended_at - step.started_at).total_seconds() * 1000 if step.ended_at and step.started_at else 0
    shown = json.dumps(step.output) if step.error is None else f"{step.error.name}: {step.error.message}"
    print(f"  {step.name}[{step.index}]  {step.status:<9} x{step.attempts} {took:7.1f} ms  {shown[:80]}", flush=True)


def _show_end(run: Run) -> None:
    if run.error is not None:
        print(f"error     {run.error.name}: {run.error.message}")
    elif run.status == "completed":
        print(f"output    {json.dumps(run.output)}")


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.command in ("dev", "serve"):
        from durably_server.engine.retry import RetryPolicy
        from durably_server.server import Settings, run

        retry = RetryPolicy(base_ms=args.retry_base, max_ms=max(args.retry_base, args.retry_max))
        if args.worker_timeout <= args.heartbeat:
            print("durably: --worker-timeout must be longer than --heartbeat", file=sys.stderr)
            raise SystemExit(2)
        tls = _tls(args)
        token = _token(args, mtls=tls is not None and tls.requires_client_cert)
        settings = Settings(args.db, args.listen, retry, args.heartbeat, args.worker_timeout, token, tls)
        raise SystemExit(run(settings))
    import durably

    handlers = {"send": _send, "runs": _runs, "run": _run}
    try:
        raise SystemExit(handlers[args.command](args))
    except durably.DurablyError as exc:
        print(f"durably: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def _tls(args: argparse.Namespace) -> ServerTls | None:
    """TLS settings from ``--tls-cert``, ``--tls-key`` and ``--tls-client-ca``, read and checked now."""
    from durably_server.api.tls import TlsError, load_server_tls

    if args.tls_cert is None and args.tls_key is None:
        if args.tls_client_ca is not None:
            _fail("--tls-client-ca needs --tls-cert and --tls-key (client certificates are checked over TLS)")
        return None
    if args.tls_cert is None or args.tls_key is None:
        _fail("--tls-cert and --tls-key go together")
    try:
        return load_server_tls(args.tls_cert, args.tls_key, args.tls_client_ca)
    except TlsError as exc:
        _fail(f"TLS: {exc}")


def _token(args: argparse.Namespace, *, mtls: bool = False) -> str | None:
    """The token the daemon will require: ``--token-file``, else (serve only) ``$DURABLY_TOKEN``.
    ``serve`` refuses to start without one unless it requires client certificates (``mtls``); ``dev``
    (loopback, local work) runs open unless given a file."""
    from durably_server.api.auth import check_token

    if args.token_file is not None:
        try:
            text = args.token_file.read_text(encoding="utf-8")
        except (OSError, UnicodeError) as exc:
            _fail(f"cannot read --token-file: {exc}")
        source = str(args.token_file)
    elif args.command == "serve" and os.environ.get("DURABLY_TOKEN"):
        text, source = os.environ["DURABLY_TOKEN"], "$DURABLY_TOKEN"
    elif args.command == "serve" and not mtls:
        _fail(
            "durably serve needs a token that workers and clients must send: set $DURABLY_TOKEN or pass "
            "--token-file PATH, or require client certificates with --tls-client-ca (`durably dev` serves "
            "loopback without either)"
        )
    else:
        return None
    try:
        return check_token(text.strip())
    except ValueError as exc:
        _fail(f"the token in {source} {exc}")


def _fail(message: str) -> NoReturn:
    print(f"durably: {message}", file=sys.stderr)
    raise SystemExit(2)
