"""``python -m bench.profile W2 [--quick]``: run workloads with py-spy sampling the daemon and workers.

For finding what limits a workload; the suite itself never needs py-spy (``pip install py-spy`` into
the virtualenv first). Each cluster's processes are sampled (250 Hz, non-blocking) from the moment the
workers are connected until the cluster stops (warm-up included). Raw stacks go to
``bench/results/profiles/``; the top frames by own time and by inclusive time are printed per process.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections import Counter
from pathlib import Path

from bench.harness import PYSPY_DIR, PYSPY_GIL, PYTHON, ROOT

OUT = ROOT / "bench" / "results" / "profiles"
_PLUMBING = (
    "(<frozen runpy>)",
    "(asyncio/runners.py)",
    "(asyncio/base_events.py)",
    "(asyncio/events.py)",
    "(threading.py)",
    "<module> (",
    "main (durably_server/cli.py)",
    "run (durably_server/server.py)",
)
"""Frames every sample passes through; left out of the inclusive list so that it shows real work."""


def _frame(frame: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (file.py)``: lines of one function count together."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({'/'.join(Path(path).parts[-2:])})" if path else name


def top(path: Path, count: int = 15) -> str:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, samples = line.rpartition(" ")
        if not stack or not samples.isdigit():
            continue
        n = int(samples)
        frames = [_frame(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            if not any(part in frame for part in _PLUMBING):
                inclusive[frame] += n
    if not total:
        return f"{path.name}: no samples"
    lines = [f"{path.name}: {total} samples at 250 Hz", "  own time:"]
    lines += [f"    {100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(count)]
    lines.append("  inclusive time:")
    lines += [f"    {100 * n / total:5.1f}%  {frame}" for frame, n in inclusive.most_common(count)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("only", help="parts to run, as for python -m bench --only (e.g. W2 or W1,W4)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--gil", action="store_true", help="sample only the thread holding the GIL")
    args = parser.parse_args(argv)
    if shutil.which("py-spy") is None and not Path(PYTHON).with_name("py-spy").exists():
        print("python -m bench.profile needs py-spy: .venv/bin/pip install py-spy", file=sys.stderr)
        return 2
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    os.environ[PYSPY_DIR] = str(OUT)
    os.environ[PYSPY_GIL] = "1" if args.gil else "0"
    from bench.__main__ import main as bench_main

    bench_args = ["--only", args.only, "--out", str(OUT / "results.json")] + (["--quick"] if args.quick else [])
    code = bench_main(bench_args)
    summary = "\n\n".join(top(path) for path in sorted(OUT.glob("*.txt")))
    (OUT / "summary.txt").write_text(summary + "\n", encoding="utf-8")
    print(summary)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
