"""``python -m bench.native_floor`` builds and measures: the native ping-pong (bench/native, tonic) answers
the floor's own grpc.aio loop byte for byte, serves a tonic client, and commits every message when asked.
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
    done = subprocess.run(
        [sys.executable, "-m", "bench.native_floor", "--round-trips", "300", "--rounds", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=840,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and "µs" not in line]
    servers = [row.split(" | ")[0].removeprefix("| ") for row in rows]
    assert servers == [
        "grpc.aio echo (the floor's server)",
        "tonic echo",
        "tonic, each message committed before the answer",
    ], done.stdout
    for row in rows:
        assert re.fullmatch(rf"\| [^|]+( \| {FIGURE}){{4}} \|", row), row
    assert re.search(rf"rusqlite {FIGURE} µs, Python sqlite3 {FIGURE} µs", done.stdout), done.stdout
