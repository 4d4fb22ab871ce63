"""The machine's own floors, measured in the same run as the workloads.

* gRPC: round trips per second of a bare grpcio bidirectional stream between two processes (this one
  and ``bench/workers/pingpong.py``), one small message each way, on grpc.aio like durably. Each step
  of a durable run needs at least one such round trip (Execute out, result back).
* SQLite: commits per second in the daemon's durability setting (WAL, ``synchronous=FULL``, one small
  INSERT per ``BEGIN IMMEDIATE`` ... ``COMMIT``), on a temp file in the folder where the workloads'
  databases live (same disk). Each step needs its result committed before the run moves on.

The floor of one sequential step is one round trip plus one commit; workloads are reported as ratios
to it.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from bench.harness import PYTHON, Process, wait_until
from bench.progress import say
from bench.settings import Profile
from bench.stats import median
from bench.workers.pingpong import METHOD

_READY = re.compile(r"^pingpong: listening on (?P<address>\S+)$")
_PAYLOAD = b"x" * 64


@dataclass
class Floors:
    grpc_round_trips_per_s: float
    sqlite_commits_per_s: float
    samples: dict[str, list[float]] = field(default_factory=dict)
    other_cores: float = 0.0
    """Cores other processes kept busy while the floors were measured (see bench.cpu)."""

    @property
    def round_trip_ms(self) -> float:
        return 1000 / self.grpc_round_trips_per_s

    @property
    def commit_ms(self) -> float:
        return 1000 / self.sqlite_commits_per_s

    @property
    def step_ms(self) -> float:
        """One round trip plus one commit: the least a sequential durable step can cost here."""
        return self.round_trip_ms + self.commit_ms

    @property
    def steps_per_s(self) -> float:
        return 1000 / self.step_ms

    def to_json(self) -> dict[str, Any]:
        return {
            "grpc_round_trips_per_s": self.grpc_round_trips_per_s,
            "grpc_round_trip_ms": self.round_trip_ms,
            "sqlite_commits_per_s": self.sqlite_commits_per_s,
            "sqlite_commit_ms": self.commit_ms,
            "step_floor_ms": self.step_ms,
            "step_floor_per_s": self.steps_per_s,
            "samples": self.samples,
            "other_processes_cpu_cores": self.other_cores,
        }


async def ping_pong(address: str, count: int, seconds: float, payload: bytes = _PAYLOAD) -> float:
    """Round trips per second over one stream: write, read the echo, repeat (bounded in count and time)."""
    async with grpc.aio.insecure_channel(address) as channel:
        call: Any = channel.stream_stream(METHOD)()
        for _ in range(200):  # warm-up: connection, stream, allocator
            await call.write(payload)
            await call.read()
        done = 0
        started = time.perf_counter()
        deadline = started + seconds
        while done < count and time.perf_counter() < deadline:
            await call.write(payload)
            if await call.read() != payload:
                raise RuntimeError("the ping-pong server answered something else")
            done += 1
        elapsed = time.perf_counter() - started
        await call.done_writing()
        return done / elapsed


@contextmanager
def pingpong_server(name: str, argv: list[str], workdir: Path) -> Iterator[tuple[Process, str]]:
    """A ping-pong server process (it prints ``pingpong: listening on ADDRESS``) and its address."""
    server = Process(name, argv, workdir)
    server.spawn()
    try:

        def ready() -> str | None:
            for line in server.stdout_path.read_text(encoding="utf-8").split("\n")[:-1]:
                if match := _READY.match(line):
                    return match["address"]
            server.check_alive()
            return None

        yield server, wait_until(ready, timeout=30, what=f"the {name} server")
    finally:
        server.stop()


def grpc_floor(workdir: Path, profile: Profile) -> list[float]:
    with pingpong_server("pingpong", [PYTHON, "-m", "bench.workers.pingpong"], workdir) as (_, address):
        return [
            asyncio.run(ping_pong(address, profile.floor_round_trips, profile.floor_seconds))
            for _ in range(profile.floor_reps)
        ]


def commits(path: Path, count: int, seconds: float) -> float:
    path.unlink(missing_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0] != "wal":
            raise RuntimeError(f"{path}: could not switch to WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB NOT NULL)")
        for _ in range(50):  # warm-up
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t (v) VALUES (?)", (_PAYLOAD,))
            conn.execute("COMMIT")
        done = 0
        started = time.perf_counter()
        deadline = started + seconds
        while done < count and time.perf_counter() < deadline:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t (v) VALUES (?)", (_PAYLOAD,))
            conn.execute("COMMIT")
            done += 1
        return done / (time.perf_counter() - started)
    finally:
        conn.close()


def sqlite_floor(workdir: Path, profile: Profile) -> list[float]:
    path = workdir / "floor.db"
    return [commits(path, profile.floor_commits, profile.floor_seconds) for _ in range(profile.floor_reps)]


def measure(workdir: Path, profile: Profile) -> Floors:
    floor_dir = workdir / "floors"
    floor_dir.mkdir(parents=True, exist_ok=True)
    say("floors: gRPC bidirectional ping-pong between two processes")
    rtts = grpc_floor(floor_dir, profile)
    say(f"floors: {median(rtts):,.0f} round trips/s; SQLite commits (WAL, synchronous=FULL)")
    commits = sqlite_floor(floor_dir, profile)
    say(f"floors: {median(commits):,.0f} commits/s")
    return Floors(median(rtts), median(commits), {"grpc_round_trips_per_s": rtts, "sqlite_commits_per_s": commits})
