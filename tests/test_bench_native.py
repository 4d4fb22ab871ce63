"""``python -m bench.native_floor`` builds and measures: the native ping-pong (bench/native, tonic) answers
the floor's own grpc.aio loop byte for byte and serves a tonic client; the native stand-in daemon runs the
bench's real SDK worker through W2 and W2c runs (it checks every run's output and committed steps itself),
the native worker stand-in serves durably's daemon through W2c runs, and the workers serve durably's daemon
through the tonic gateway probe, the SDK's also through its client (bench/gateway_daemon.py,
bench/gateway_worker.py; the driver checks those runs).
An investigation tool, kept working by this smoke run; its figures are a report (bench/README.md)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIGURE = r"\d+ \(\d+–\d+\)"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_native_floor_builds_and_measures_every_pairing() -> None:
    argv = ["--round-trips", "300", "--rounds", "1", "--w2c-steps", "50", "--w2-steps", "10", "--w2-runs", "1"]
    done = subprocess.run(
        [sys.executable, "-m", "bench.native_floor", *argv], cwd=ROOT, capture_output=True, text=True, timeout=840
    )
    assert done.returncode == 0, done.stderr[-4000:]
    rows = [line.split(" | ") for line in done.stdout.splitlines() if re.match(r"\| [^-]", line) and "µs" not in line]
    assert [row[0].removeprefix("| ") for row in rows if len(row) == 5] == [
        "grpc.aio echo (the floor's server)",
        "tonic echo",
        "tonic, each message committed before the answer",
    ], done.stdout
    sdk, stand_in, gateway, both, native, gateway_native = (
        "durably's daemon, SDK worker",
        "native stand-in daemon (commit and answer only), SDK worker",
        "durably's daemon, worker stream through a tonic gateway, SDK worker",
        "durably's daemon and SDK worker, both ends of the stream through the tonic gateway probe",
        "durably's daemon, native worker stand-in (no handler)",
        "durably's daemon, worker stream through a tonic gateway, native worker stand-in",
    )
    assert [(row[0], row[1]) for row in rows if len(row) == 6] == [
        ("| W2-10", sdk),
        ("| W2-10", stand_in),
        ("| W2-10", gateway),
        ("| W2-10", both),
        ("| W2c-50", sdk),
        ("| W2c-50", stand_in),
        ("| W2c-50", gateway),
        ("| W2c-50", both),
        ("| W2c-50", native),
        ("| W2c-50", gateway_native),
    ], done.stdout
    for row in rows:
        figures = [row[2:3], row[4:]] if len(row) == 6 else [row[1:]]
        for cell in (cell.removesuffix(" |") for part in figures for cell in part):
            assert re.fullmatch(FIGURE, cell), (cell, row)
    assert re.search(rf"rusqlite {FIGURE} µs, Python sqlite3 {FIGURE} µs", done.stdout), done.stdout
