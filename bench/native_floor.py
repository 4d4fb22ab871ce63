"""``python -m bench.native_floor``: what a native step path would buy here, before anyone builds one.

W2's target (≤ 1.5 × one round trip + one commit per step) is missed because a step crosses Python's
grpc.aio and our Python on both ends (bench/README.md, "What limits"). This measures the alternative
instead of assuming it, with ``bench/native`` (a Rust program built here by cargo, on tonic and rusqlite):

* the floor's ping-pong (same stream, same loop, 64-byte payload) with each end in turn native, and a
  native server that commits every message before it answers, in the daemon's durability setting;
* W2 and W2c runs of the bench's real SDK worker against durably's daemon and against a native stand-in
  for it that does nothing but the protocol, the commit and the answer: the least a native daemon end
  would cost; and W2c runs of durably's daemon with a native worker stand-in whose handler costs nothing:
  what the daemon's end costs by itself;
* the same runs of durably's daemon with its worker stream served by the gateway probe
  (``bench.gateway_daemon``, bench/native/gateway: tonic in the daemon's process, every message handed
  to the unchanged Python engine), with the SDK's worker as it is and with its stream carried by the
  probe's tonic client too (``bench.gateway_worker``): what moving only the transport below Python buys.

Every measurement alternates with the others over several rounds, so the machine's drift lands on all.
An investigation tool, like ``bench.profile``: not part of ``python -m bench`` (it needs cargo and
builds tonic and pyo3, about two minutes the first time).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.floors import commits, ping_pong, pingpong_server
from bench.gateway_daemon import MODULE_DIR
from bench.harness import (
    PYTHON,
    ROOT,
    TOKEN,
    BenchError,
    Cluster,
    Daemon,
    Process,
    Worker,
    cpu_seconds,
    wait_until,
)
from bench.progress import say
from bench.stats import median
from bench.workloads.w2_long_run import VARIANTS, W2C, Variant, one_run

CRATE = ROOT / "bench" / "native"
BINARY = CRATE / "target" / "release" / "native-pingpong"
GATEWAY_CRATE = CRATE / "gateway"
GATEWAY_LIBRARY = CRATE / "target" / "release" / "libgateway_probe.so"
PING = b"\x0a\x40" + b"x" * 64
"""The floor's 64 bytes as the native side's ``Ping`` message (field 1, length 64); grpc.aio echoes any bytes."""


def build(workdir: Path) -> None:
    """cargo build, with grpcio-tools' protoc standing in for a system one (prost needs one)."""
    protoc = workdir / "protoc"
    protoc.write_text(f'#!/bin/sh\nexec "{PYTHON}" -m grpc_tools.protoc "$@"\n', encoding="utf-8")
    protoc.chmod(0o755)
    say("native: cargo build --release (tonic, rusqlite; the gateway probe: tonic, pyo3)")
    env = {**os.environ, "PROTOC": str(protoc), "PYO3_PYTHON": PYTHON}
    for crate in (CRATE, GATEWAY_CRATE):
        manifest = str(crate / "Cargo.toml")
        command = ["cargo", "build", "--release", "--quiet", "--manifest-path", manifest, "--target-dir"]
        subprocess.run([*command, str(CRATE / "target")], env=env, check=True)
    (workdir / "gateway").mkdir()
    shutil.copyfile(GATEWAY_LIBRARY, workdir / "gateway" / "gateway_probe.abi3.so")
    os.environ[MODULE_DIR] = str(workdir / "gateway")  # for bench.gateway_daemon, in the daemons started here


def native_figure(*argv: str) -> float:
    """Microseconds per operation, as the native program prints them."""
    return float(subprocess.run([str(BINARY), *argv], capture_output=True, text=True, check=True).stdout)


FLOOR_SERVER = "grpc.aio echo (the floor's server)"
DURABLY = "durably's daemon, SDK worker"
STAND_IN = "native stand-in daemon (commit and answer only), SDK worker"
NATIVE_WORKER = "durably's daemon, native worker stand-in (no handler)"
GATEWAY = "durably's daemon, worker stream through a tonic gateway, SDK worker"
GATEWAY_NATIVE_WORKER = "durably's daemon, worker stream through a tonic gateway, native worker stand-in"
GATEWAY_BOTH = "durably's daemon and SDK worker, both ends of the stream through the tonic gateway probe"


def measure(
    workdir: Path, round_trips: int, rounds: int, w2_steps: dict[str, int], w2_runs: int
) -> dict[str, list[float]]:
    servers: dict[str, list[str]] = {
        FLOOR_SERVER: [PYTHON, "-m", "bench.workers.pingpong"],
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
        for variant in VARIANTS:
            if not (steps := w2_steps[variant.prefix]):
                continue
            ends = [
                (DURABLY, durably_w2),
                (STAND_IN, native_w2),
                (GATEWAY, through_gateway("sdk")),
                (GATEWAY_BOTH, through_gateway("sdk-gateway")),
            ]
            if variant is W2C:
                ends += [(NATIVE_WORKER, native_worker_w2c), (GATEWAY_NATIVE_WORKER, through_gateway("native"))]
            for name, measure_w2 in ends:
                per_step, daemon_cpu, worker_cpu = measure_w2(workdir / f"round-{round_}", variant, steps, w2_runs)
                key = f"{variant.prefix}-{steps} | {name}"
                record(f"{key} | per step", per_step)
                record(f"{key} | daemon CPU", daemon_cpu)
                record(f"{key} | worker CPU", worker_cpu)
        say(f"native: round {round_} of {rounds} done")
    return figures


MODELS = {"W2": "replay", "W2c": "checkpointing"}
"""bench/native's name for each W2 variant's model (``serve-steps MODEL``)."""


def w2_on(group: Cluster, variant: Variant, steps: int, runs: int) -> tuple[float, float, float]:
    """W2 runs on a fresh daemon and its worker: µs per step (median over ``runs``), daemon and worker CPU
    µs per step."""
    try:
        group.start([variant.function])
        one_run(group, variant, steps, timeout=120)  # warm-up
        before = group.cpu()
        reps = [one_run(group, variant, steps, timeout=120) for _ in range(runs)]
        after = group.cpu()
    finally:
        group.stop()
    done = steps * runs
    per_step = median([rep.seconds * 1e6 / steps for rep in reps])
    return per_step, (after.daemon - before.daemon) * 1e6 / done, (after.workers - before.workers) * 1e6 / done


def durably_w2(workdir: Path, variant: Variant, steps: int, runs: int) -> tuple[float, float, float]:
    """durably's daemon and the bench's SDK worker, as ``python -m bench`` runs them."""
    return w2_on(Cluster(workdir, f"durably-{variant.prefix}"), variant, steps, runs)


def native_w2(workdir: Path, variant: Variant, steps: int, runs: int) -> tuple[float, float, float]:
    """The same runs, the same SDK worker, against ``serve-steps``: the native daemon end's stand-in. It times
    a run from its first Execute to its final result; durably's runs are timed from SendEvents to WaitForRun's
    answer, so their creation and first dispatch (about a millisecond a run) count against durably."""
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / f"native-{variant.prefix}.db"
    argv = [str(BINARY), "serve-steps", MODELS[variant.prefix], str(db), str(runs), str(steps)]
    stand_in = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert stand_in.stdin is not None and stand_in.stdout is not None
    worker = None
    try:

        def line() -> str:
            assert stand_in.stdout is not None
            if not (text := stand_in.stdout.readline()):
                raise BenchError(f"the native stand-in exited (code {stand_in.wait()})")
            return text.strip()

        address = line().rsplit(" ", 1)[-1]
        worker = Worker(workdir, "functions", address, f"worker-native-{variant.prefix}")
        worker.spawn()
        if line() != "warm":
            raise BenchError("the native stand-in did not finish its warm-up run")
        before = cpu_seconds(stand_in.pid) or 0.0, cpu_seconds(worker.pid) or 0.0
        stand_in.stdin.write("\n")
        stand_in.stdin.flush()
        micros = [float(figure) for figure in line().split()]
        after = cpu_seconds(stand_in.pid) or 0.0, cpu_seconds(worker.pid) or 0.0
    finally:
        stand_in.stdin.close()
        try:
            stand_in.wait(timeout=30)
        except subprocess.TimeoutExpired:
            stand_in.kill()
            stand_in.wait()
        if worker is not None:
            worker.stop()
    done = steps * runs
    return median(micros), (after[0] - before[0]) * 1e6 / done, (after[1] - before[1]) * 1e6 / done


class NativeWorkerCluster(Cluster):
    """durably's daemon with ``work``, the native worker stand-in, instead of the SDK's worker."""

    def _worker(self, name: str, env: dict[str, str] | None) -> Process:
        return Process(name, [str(BINARY), "work", self.daemon.address, TOKEN], self.workdir, env)


def native_worker_w2c(workdir: Path, variant: Variant, steps: int, runs: int) -> tuple[float, float, float]:
    """durably's daemon with a native worker stand-in whose handler costs nothing, on W2c: what the daemon's
    end costs per step by itself. Timed as durably's runs are (send to WaitForRun's answer)."""
    assert variant is W2C, "the native worker runs W2c only"
    return w2_on(NativeWorkerCluster(workdir, "native-worker"), variant, steps, runs)


class GatewayDaemon(Daemon):
    """durably's daemon through ``bench.gateway_daemon``: its worker stream also served by the tonic gateway
    probe (the module ``build`` made, found through the environment it set), whose address is :attr:`gateway`."""

    def __init__(self, workdir: Path, db: Path) -> None:
        super().__init__(workdir, db, module="bench.gateway_daemon")
        self.gateway = ""

    def start(self, timeout: float = 30.0) -> None:
        super().start(timeout)

        def ready() -> str | None:
            found = re.search(r"^gateway: listening on (\S+)$", self.stdout_path.read_text(encoding="utf-8"), re.M)
            return found[1] if found else None

        self.gateway = wait_until(ready, timeout=timeout, what="the gateway's address")


class GatewayCluster(Cluster):
    """durably's daemon with a worker connected to its gateway probe: the SDK's worker (``sdk``), the same
    with its stream carried by the probe's tonic client (``sdk-gateway``), or the native stand-in."""

    def __init__(self, workdir: Path, name: str, worker: str = "sdk") -> None:
        super().__init__(workdir, name)
        self.daemon: GatewayDaemon = GatewayDaemon(self.workdir, self.workdir / "durably.db")
        self.worker = worker

    def _worker(self, name: str, env: dict[str, str] | None) -> Process:
        if self.worker == "native":
            return Process(name, [str(BINARY), "work", self.daemon.gateway, TOKEN], self.workdir, env)
        if self.worker == "sdk-gateway":
            env = {"DURABLY_ADDRESS": self.daemon.gateway, "DURABLY_TOKEN": TOKEN, **(env or {})}
            return Process(name, [PYTHON, "-m", "bench.gateway_worker"], self.workdir, env)
        return Worker(self.workdir, self.worker_module, self.daemon.gateway, name, env)


MeasureW2 = Callable[[Path, Variant, int, int], tuple[float, float, float]]


def through_gateway(worker: str) -> MeasureW2:
    """W2 runs of durably's daemon, unchanged, with ``worker`` (see :class:`GatewayCluster`) on the gateway
    probe's port: gRPC's transport in Rust on the daemon's end (and on the worker's with ``sdk-gateway``),
    the Python of the engine and of the SDK as they are. Timed as durably's runs are. The native worker
    stand-in runs W2c only."""

    def measure_w2(workdir: Path, variant: Variant, steps: int, runs: int) -> tuple[float, float, float]:
        return w2_on(GatewayCluster(workdir, f"gateway-{worker}-{variant.prefix}", worker), variant, steps, runs)

    return measure_w2


def table(figures: dict[str, list[float]]) -> str:
    def cell(key: str) -> str:
        values = figures[key]
        return f"{median(values):.0f} ({min(values):.0f}–{max(values):.0f})"

    def row(name: str, columns: tuple[str, ...]) -> str:
        return "| " + " | ".join([name, *(cell(f"{name} | {column}") for column in columns)]) + " |"

    lines = [
        "| server | grpc.aio client µs/round trip | tonic client µs/round trip | server CPU µs | client CPU µs |",
        "|---|--:|--:|--:|--:|",
    ]
    servers = dict.fromkeys(key.split(" | ")[0] for key in figures if key.endswith(" | tonic client"))
    lines += [row(name, ("grpc.aio client", "tonic client", "server CPU", "client CPU")) for name in servers]
    floor = median(figures[f"{FLOOR_SERVER} | grpc.aio client"]) + median(figures["commit alone | python"])
    lines += [
        "",
        f"One commit alone (WAL, synchronous=FULL): rusqlite {cell('commit alone | tonic')} µs, Python sqlite3 "
        f"{cell('commit alone | python')} µs. One step's floor: {floor:.0f} µs (grpc.aio round trip + Python "
        "commit). Medians (min–max) over the rounds.",
    ]
    runs = dict.fromkeys(key.rsplit(" | ", 1)[0] for key in figures if key.startswith("W2"))
    if runs:
        lines += [
            "",
            "| W2 run | daemon, worker | µs per step | ÷ floor | daemon CPU µs/step | worker CPU µs/step |",
            "|---|---|--:|--:|--:|--:|",
        ]
        for key in runs:
            cells = [cell(f"{key} | {column}") for column in ("per step", "daemon CPU", "worker CPU")]
            ratio = median(figures[f"{key} | per step"]) / floor
            lines.append(f"| {' | '.join(key.split(' | '))} | {cells[0]} | {ratio:.2f} | {cells[1]} | {cells[2]} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.native_floor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--round-trips", type=int, default=5_000, help="per server, client and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--w2c-steps", type=int, default=1_000, help="steps of a W2c run (0: no W2c)")
    parser.add_argument("--w2-steps", type=int, default=100, help="steps of a W2 run (0: no W2)")
    parser.add_argument("--w2-runs", type=int, default=3, help="measured runs per W2 variant, daemon end and round")
    args = parser.parse_args(argv)
    w2_steps = {"W2": args.w2_steps, "W2c": args.w2c_steps}
    with tempfile.TemporaryDirectory(prefix="durably-native-") as folder:
        build(Path(folder))
        print(table(measure(Path(folder), args.round_trips, args.rounds, w2_steps, args.w2_runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
