"""``python -m bench.critical_path``: where the time of one checkpointed step goes, stage by stage.

A sampling profiler says where CPU goes, not which waits a step is made of. This probe stamps the moments
each step of W2c runs (one run of N sequential steps, ``checkpointing=True``) passes in the real daemon and
the real SDK worker, with ``CLOCK_MONOTONIC`` (one clock for every process of the machine), and chains them
step by step: the worker queues a checkpoint, grpc.aio writes it, the daemon reads it, merges it, commits it
(statements, then COMMIT), queues the answer, the worker reads it and its handler resumes and runs the next
step. It prints the median of each stage over every step, and the floors measured in the same run.

A probe, not a way to run durably: ``python -m bench.critical_path serve ...`` is durably's daemon and
``python -m bench.critical_path worker`` the bench's worker, each with the stamps wrapped around private
functions of the daemon and the SDK (a rename fails the smoke test, tests/test_bench_quick.py). A stamp
costs ~1 us (one ``write``), ~10 per step. ``$BENCH_STAMPS`` names the file each process appends to.
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import functools
import inspect
import itertools
import os
import runpy
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import floors, settings
from bench.harness import PYTHON, TOKEN, Cluster, Daemon, Process
from bench.progress import say
from bench.stats import median, percentile
from bench.workloads.w2_long_run import W2C, one_run

STAMPS = "BENCH_STAMPS"

STAGES: list[tuple[str, str]] = [
    ("sent", "worker: the checkpoint queued, until grpc.aio's write of it begins"),
    ("write started", "worker: grpc.aio's write, until it reports the message sent"),
    ("written", "the bytes to the daemon, its gRPC read, until the servicer has the message"),
    ("read", "daemon: the report decoded, its task, the executor, until the checkpoint is merged"),
    ("merging", "daemon: the run's lock, the merge and its checks, until BEGIN"),
    ("BEGIN", "daemon: BEGIN IMMEDIATE and the statements, until COMMIT"),
    ("COMMIT", "daemon: COMMIT (the WAL's fsync), until the writer hands out the outcome"),
    ("COMMIT done", "daemon: the outcome, until the worker's stream takes the answer from its outbox"),
    ("answer taken", "the answer's gRPC write, the bytes to the worker, its read, until the worker has it"),
    ("answered", "worker: the answer, until the handler resumes"),
    ("resumed", "worker: the handler runs the next step and builds its checkpoint"),
]
"""Each stage by the stamp it starts at; it ends at the next one (the last at the next step's "sent")."""


# ---- the stamps, in the daemon's and the worker's processes ----------------------------------------


class _Stamps:
    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)

    def __call__(self, name: str) -> None:
        os.write(self._fd, f"{time.monotonic_ns()} {name}\n".encode())


def _around(owner: Any, attr: str, before: str | None, after: str | None, stamp: _Stamps) -> None:
    """Stamp `before` as `owner.attr` is called and `after` once it has returned (awaited, if a coroutine)."""
    inner = getattr(owner, attr)
    if inspect.iscoroutinefunction(inner):

        @functools.wraps(inner)
        async def wrapped_async(*args: Any, **kwargs: Any) -> Any:
            if before:
                stamp(before)
            try:
                return await inner(*args, **kwargs)
            finally:
                if after:
                    stamp(after)

        setattr(owner, attr, wrapped_async)
        return

    @functools.wraps(inner)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if before:
            stamp(before)
        try:
            return inner(*args, **kwargs)
        finally:
            if after:
                stamp(after)

    setattr(owner, attr, wrapped)


def _stamp_daemon(stamp: _Stamps) -> None:
    import sqlite3

    from durably_server.api.worker_service import WorkerService
    from durably_server.engine.executor import Executor
    from durably_server.store.writer import Writer

    take = WorkerService._take

    def _take(self: WorkerService, worker: Any, message: Any, *, batched: bool) -> None:
        if message.WhichOneof("message") == "result":
            stamp("read")
        take(self, worker, message, batched=batched)

    WorkerService._take = _take  # type: ignore[method-assign]
    _around(Executor, "_checkpoint", "merging", None, stamp)
    _around(Writer, "_settle", "COMMIT done", None, stamp)
    _around(WorkerService, "_out", "answer taken", None, stamp)

    class Stamped(sqlite3.Connection):
        """The writer's connection, stamping its BEGIN and COMMIT."""

        def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
            if sql in ("BEGIN IMMEDIATE", "COMMIT"):
                stamp(sql.split()[0])
            return super().execute(sql, *args)

    connect = sqlite3.connect

    def stamped_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        return connect(*args, **kwargs, factory=Stamped)

    # Every connection of the daemon: only the writer's BEGINs and COMMITs are stamped.
    sqlite3.connect = stamped_connect  # type: ignore[assignment]


def _stamp_worker(stamp: _Stamps) -> None:
    from durably import _worker
    from grpc.aio import _call

    _around(_worker._Session, "checkpoint", "sent", "resumed", stamp)
    _around(_worker._Session, "answered", "answered", None, stamp)
    write = _call._StreamRequestMixin._write

    async def _write(self: Any, request: Any) -> None:
        if request.WhichOneof("message") == "heartbeat":
            await write(self, request)
            return
        stamp("write started")
        await write(self, request)
        stamp("written")

    _call._StreamRequestMixin._write = _write


def _child(role: str) -> None:
    stamp = _Stamps(os.environ[STAMPS] + f".{role}")
    if role == "daemon":
        _stamp_daemon(stamp)
        from durably_server import cli

        cli.main(sys.argv[1:])
    else:
        _stamp_worker(stamp)
        runpy.run_module("bench.workers.functions", run_name="__main__")


# ---- the driver ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Chained:
    stages: dict[str, list[float]]
    """Stage -> its length in us, one per chained step."""
    steps: list[float]
    """Each chained step's length in us (from one "sent" to the next)."""
    stamped: int
    """Steps stamped (checkpoints sent); those whose stamps did not chain (heartbeats, the run's start
    and end) are left out."""


def chain(stamps: dict[str, list[int]]) -> Chained:
    """Follow each "sent" through the first of each next stamp after it, to the next "sent"."""
    names = [name for name, _ in STAGES]
    stages: dict[str, list[float]] = {name: [] for name in names}
    steps: list[float] = []
    sent = stamps.get("sent", [])
    for start, end in itertools.pairwise(sent):
        moments = [start]
        for name in names[1:]:
            times = stamps.get(name, [])
            # grpc.aio may tell the worker its write is done after the daemon has the message (a busy
            # machine): the daemon's read is looked for from the write's start, and the write ends there.
            at = bisect.bisect_left(times, moments[-2] if name == "read" else moments[-1])
            if at == len(times) or times[at] > end:
                break
            if name == "read":
                moments[-1] = min(moments[-1], times[at])
            moments.append(times[at])
        else:
            moments.append(end)
            for name, begin, finish in zip(names, moments, moments[1:], strict=False):
                stages[name].append((finish - begin) / 1000)
            steps.append((end - start) / 1000)
    return Chained(stages, steps, len(sent))


def read_stamps(prefix: Path) -> dict[str, list[int]]:
    stamps: dict[str, list[int]] = {}
    for role in ("daemon", "worker"):
        for line in Path(f"{prefix}.{role}").read_text().splitlines():
            at, name = line.split(" ", 1)
            stamps.setdefault(name, []).append(int(at))
    return {name: sorted(times) for name, times in stamps.items()}


class StampedCluster(Cluster):
    """durably's daemon and the bench's worker, each through this module, stamping into files under `prefix`."""

    def __init__(self, workdir: Path, prefix: Path) -> None:
        super().__init__(workdir, "critical-path")
        self.daemon = Daemon(self.workdir, self.workdir / "durably.db", module="bench.critical_path")
        self.daemon.env[STAMPS] = str(prefix)

    def _worker(self, name: str, env: dict[str, str] | None) -> Process:
        stamped = {STAMPS: self.daemon.env[STAMPS], "DURABLY_ADDRESS": self.daemon.address, "DURABLY_TOKEN": TOKEN}
        return Process(name, [PYTHON, "-m", "bench.critical_path", "worker"], self.workdir, {**stamped, **(env or {})})


def measure(workdir: Path, steps: int, runs: int) -> Chained:
    prefix = workdir / "stamps"
    group = StampedCluster(workdir, prefix)
    try:
        group.start([W2C.function])
        one_run(group, W2C, min(steps, 100), timeout=120)  # warm-up
        for role in ("daemon", "worker"):
            Path(f"{prefix}.{role}").write_bytes(b"")  # the warm-up's stamps go
        for n in range(runs):
            say(f"critical path: run {n + 1} of {runs}, {steps} steps")
            one_run(group, W2C, steps, timeout=max(120, steps / 100))
    finally:
        group.stop()
    return chain(read_stamps(prefix))


def table(chained: Chained, floor: floors.Floors) -> str:
    rows = ["| stage | median µs | p10–p90 µs |", "|---|--:|--:|"]
    total = 0.0
    for name, what in STAGES:
        values = chained.stages[name]
        total += median(values)
        rows.append(f"| {what} | {median(values):.1f} | {percentile(values, 10):.0f}–{percentile(values, 90):.0f} |")
    step = median(chained.steps)
    floor_us = floor.step_ms * 1000
    rows.append(f"| sum of the stages' medians | {total:.1f} | |")
    rows.append(
        f"| one step (median) | {step:.1f} | {percentile(chained.steps, 10):.0f}–{percentile(chained.steps, 90):.0f} |"
    )
    return "\n".join(
        [
            *rows,
            "",
            f"{len(chained.steps):,} of {chained.stamped:,} steps chained. Floors in the same run: round trip "
            f"{floor.round_trip_ms * 1000:.0f} µs, commit {floor.commit_ms * 1000:.0f} µs, one step's floor "
            f"{floor_us:.0f} µs: the step is {step / floor_us:.2f} × the floor.",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        _child("daemon")
        return 0
    if argv[:1] == ["worker"]:
        _child("worker")
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.critical_path", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1_000, help="steps of each W2c run")
    parser.add_argument("--runs", type=int, default=3, help="measured runs, after one warm-up")
    parser.add_argument("--quick", action="store_true", help="the floors as `python -m bench --quick` takes them")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="durably-critical-path-") as folder:
        workdir = Path(folder)
        floor = floors.measure(workdir, settings.QUICK if args.quick else settings.FULL)
        print(table(measure(workdir, args.steps, args.runs), floor))
    return 0


if __name__ == "__main__":
    sys.exit(main())
