"""``python -m bench [--quick] [--only W1,W2,micro]``: run the suite, print the tables, write the results.

Progress goes to stderr; the tables (Markdown) to stdout; the JSON to ``bench/results/latest.json``
(``--out``) and the plot next to it (``per_step_cost.svg``). Nothing here needs more than the
project's own dependencies.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import cpu, machine, micro, report
from bench import floors as floor_bench
from bench.harness import ROOT
from bench.model import Result
from bench.progress import say
from bench.settings import FULL, QUICK
from bench.workloads import WORKLOADS
from bench.workloads.common import Env

RESULTS = ROOT / "bench" / "results"
PARTS = [*WORKLOADS, "micro"]
BUSY_WARNING = 0.1
"""Cores other processes may keep busy before a figure is flagged as taken on a busy machine."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description="the durably benchmark suite")
    parser.add_argument("--quick", action="store_true", help="a smoke run: small sizes, one repetition (< 2 min)")
    parser.add_argument(
        "--only",
        default=",".join(PARTS),
        help=f"comma-separated parts to run (default all: {','.join(PARTS)}); the floors always run",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.json", help="JSON results file")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (databases, process logs)")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="first wait up to this long for other processes to leave the CPU idle (a shared machine)",
    )
    return parser


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _wait_quiet(limit: float) -> None:
    """Wait until other processes keep less than BUSY_WARNING cores busy over 3 s (at most ``limit`` s)."""
    deadline = time.monotonic() + limit
    while True:
        before = cpu.sample()
        time.sleep(3)
        busy = cpu.other_cores(before, cpu.sample())
        if busy < BUSY_WARNING:
            say(f"machine quiet (other processes: {busy:.2f} cores)")
            return
        if time.monotonic() >= deadline:
            say(f"machine still busy after {limit:g} s (other processes: {busy:.2f} cores); running anyway")
            return
        say(f"waiting for a quiet machine (other processes: {busy:.2f} cores)")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so every daemon and worker this run started is stopped on the way out.
    signal.signal(signal.SIGTERM, _terminate)
    wanted = [part.strip() for part in args.only.split(",") if part.strip()]
    unknown = [part for part in wanted if part not in PARTS]
    if unknown:
        print(f"python -m bench: unknown part(s) {unknown}; choose among {PARTS}", file=sys.stderr)
        return 2
    profile = QUICK if args.quick else FULL
    started = time.monotonic()
    date = datetime.now(UTC).isoformat(timespec="seconds")
    workdir = Path(tempfile.mkdtemp(prefix="durably-bench-"))
    info = machine.describe(workdir)
    if args.wait_quiet > 0:
        _wait_quiet(args.wait_quiet)
    say(f"durably bench ({profile.name}); work folder {workdir}")
    say(machine.summary(info))
    try:
        suite_start = cpu.sample()
        floors = floor_bench.measure(workdir, profile)
        floors.other_cores = cpu.other_cores(suite_start, cpu.sample())
        env = Env(workdir, profile, floors)
        results: list[Result] = []
        for key, run in WORKLOADS.items():
            if key in wanted:
                say(f"{key}: start")
                before = cpu.sample()
                produced = run(env)
                busy = cpu.other_cores(before, cpu.sample())
                for result in produced:
                    result.other_cores = busy
                if busy > BUSY_WARNING:
                    say(f"{key}: WARNING: other processes kept {busy:.2f} cores busy meanwhile")
                results.extend(produced)
        other_cores = cpu.other_cores(suite_start, cpu.sample())
        micro_results: list[micro.MicroResult] = []
        problems: list[str] = []
        if "micro" in wanted:
            micro_results, problems = micro.run(profile)
    finally:
        if args.keep:
            say(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    seconds = time.monotonic() - started
    command = (
        "python -m bench" + (" --quick" if args.quick else "") + ("" if wanted == PARTS else f" --only {args.only}")
    )
    payload: dict[str, Any] = {
        "suite": "durably bench",
        "profile": profile.name,
        "command": command,
        "date": date,
        "seconds": seconds,
        "machine": info,
        "settings": asdict(profile),
        "other_processes_cpu_cores": other_cores,
        "floors": floors.to_json(),
        "results": [r.to_json() for r in results],
        "micro": [m.to_json() for m in micro_results],
        "micro_disagreements": problems,
    }
    report.write_json(args.out, payload)
    svg = report.svg_plot(results, floors)
    plot_path = args.out.with_name("per_step_cost.svg")
    if svg is not None:
        plot_path.write_text(svg, encoding="utf-8")
    print(f"## durably bench — `{command}` — {date}\n")
    print(machine.summary(info) + "\n")
    print(report.render(results, floors, micro_results, problems, other_cores))
    say(f"done in {seconds:.0f} s; results in {args.out}" + (f", plot in {plot_path}" if svg else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
