"""``python -m bench.native_floor``: what a native step path would cost here, before anyone builds one.

W2's target (≤ 1.5 × one round trip + one commit per checkpointed step) is missed because a step crosses
Python's grpc.aio and our Python on both ends (bench/README.md, "What limits"). This measures the
alternative instead of assuming it: the floor's ping-pong (same stream, same loop, 64-byte payload)
with each end in turn on tonic (``bench/native``, a Rust program built here by cargo), and a native
server that commits every message before it answers, in the daemon's durability setting: the shape
of a checkpointed step (result in, commit, answer out) with no Python on the daemon's side.

Servers and clients alternate over several rounds so that the machine's drift lands on all of them.
An investigation tool, like ``bench.profile``: not part of ``python -m bench`` (it needs cargo and
builds tonic, about a minute and a half the first time).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.floors import commits, ping_pong, pingpong_server
from bench.harness import PYTHON, ROOT, cpu_seconds
from bench.progress import say
from bench.stats import median

CRATE = ROOT / "bench" / "native"
BINARY = CRATE / "target" / "release" / "native-pingpong"
PING = b"\x0a\x40" + b"x" * 64
"""The floor's 64 bytes as the native side's ``Ping`` message (field 1, length 64); grpc.aio echoes any bytes."""


def build(workdir: Path) -> None:
    """cargo build, with grpcio-tools' protoc standing in for a system one (prost needs one)."""
    protoc = workdir / "protoc"
    protoc.write_text(f'#!/bin/sh\nexec "{PYTHON}" -m grpc_tools.protoc "$@"\n', encoding="utf-8")
    protoc.chmod(0o755)
    say("native: cargo build --release (tonic, rusqlite)")
    subprocess.run(
        ["cargo", "build", "--release", "--quiet", "--manifest-path", str(CRATE / "Cargo.toml")],
        env={**os.environ, "PROTOC": str(protoc)},
        check=True,
    )


def native_figure(*argv: str) -> float:
    """Microseconds per operation, as the native program prints them."""
    return float(subprocess.run([str(BINARY), *argv], capture_output=True, text=True, check=True).stdout)


def measure(workdir: Path, round_trips: int, rounds: int) -> dict[str, list[float]]:
    servers: dict[str, list[str]] = {
        "grpc.aio echo (the floor's server)": [PYTHON, "-m", "bench.workers.pingpong"],
        "tonic echo": [str(BINARY), "serve"],
        "tonic, each message committed before the answer": [str(BINARY), "serve-commit", str(workdir / "steps.db")],
    }
    figures: dict[str, list[float]] = {}

    def record(key: str, value: float) -> None:
        figures.setdefault(key, []).append(value)

    for round_ in range(1, rounds + 1):
        for name, argv in servers.items():
            with pingpong_server("native", argv, workdir) as (server, address):
                cpu_before, own_before = cpu_seconds(server.pid) or 0.0, time.process_time()
                per_s = asyncio.run(ping_pong(address, round_trips, seconds=600, payload=PING))
                cpu_after, own_after = cpu_seconds(server.pid) or 0.0, time.process_time()
                done = round_trips + 200  # with the warm-up, as the CPU counters saw it
                record(f"{name} | grpc.aio client", 1e6 / per_s)
                record(f"{name} | server CPU", (cpu_after - cpu_before) * 1e6 / done)
                record(f"{name} | client CPU", (own_after - own_before) * 1e6 / done)
                record(f"{name} | tonic client", native_figure("client", address, str(round_trips)))
        record("commit alone | tonic", native_figure("commits", str(workdir / "alone.db"), str(round_trips)))
        record("commit alone | python", 1e6 / commits(workdir / "floor.db", round_trips, seconds=600))
        say(f"native: round {round_} of {rounds} done")
    return figures


def table(figures: dict[str, list[float]]) -> str:
    def cell(key: str) -> str:
        values = figures[key]
        return f"{median(values):.0f} ({min(values):.0f}–{max(values):.0f})"

    lines = [
        "| server | grpc.aio client µs/round trip | tonic client µs/round trip | server CPU µs | client CPU µs |",
        "|---|--:|--:|--:|--:|",
    ]
    names = dict.fromkeys(key.split(" | ")[0] for key in figures if not key.startswith("commit alone"))
    for name in names:
        columns = ("grpc.aio client", "tonic client", "server CPU", "client CPU")
        cells = [cell(f"{name} | {column}") for column in columns]
        lines.append("| " + " | ".join([name, *cells]) + " |")
    lines.append("")
    lines.append(
        f"One commit alone (WAL, synchronous=FULL): rusqlite {cell('commit alone | tonic')} µs, "
        f"Python sqlite3 {cell('commit alone | python')} µs. Medians (min–max) over the rounds."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.native_floor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--round-trips", type=int, default=5_000, help="per server, client and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="durably-native-") as folder:
        build(Path(folder))
        print(table(measure(Path(folder), args.round_trips, args.rounds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
