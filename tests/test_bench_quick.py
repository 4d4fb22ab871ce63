"""The benchmark suite's smoke run (``python -m bench --quick``), as CI runs it: every workload must
complete with the expected output on real daemon and worker processes, and the Rust core must agree
with its Python reference. Figures are not checked here: they are a report (bench/README.md)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_bench_quick_runs_every_workload(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads(out.read_text(encoding="utf-8"))
    statuses = {r["key"]: r["status"] for r in results["results"]}
    expected = {"W1", "W1c", "W2-10", "W2c-10", "W3-200-opt", "W4", "W4c", "W5", "W5s", "W6"}
    assert expected <= statuses.keys(), statuses
    assert all(status == "ok" for status in statuses.values()), statuses
    # The daemon's CPU by thread finds its named threads (the writer commits every W1 step, and runs).
    by_thread = {r["key"]: r["daemon_thread_us_per_step"] for r in results["results"]}
    assert {"event loop", "writer"} <= by_thread["W1"].keys(), by_thread["W1"]
    assert results["micro"] and not results["micro_disagreements"], results["micro_disagreements"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_critical_path_probe_chains_every_stage_of_a_checkpointed_step() -> None:
    """``python -m bench.critical_path`` stamps private functions of the daemon and the SDK: a rename or a
    new path between them leaves a stage empty or the steps unchained, and this fails."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.critical_path", "--steps", "40", "--runs", "1", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and not line.startswith("| stage ")]
    stages = [row for row in rows if not row.startswith(("| sum of", "| one step"))]
    assert len(stages) == 11, done.stdout
    for row in stages:
        assert re.fullmatch(r"\| (worker:|daemon:|the) [^|]+ \| \d+\.\d \| \d+–\d+ \|", row), row
    chained = re.search(r"^([\d,]+) of ([\d,]+) steps chained", done.stdout, re.MULTILINE)
    assert chained, done.stdout
    assert int(chained[1].replace(",", "")) >= 35 and int(chained[2].replace(",", "")) == 40, done.stdout


def test_a_parked_workloads_report_gives_its_lag_p99_per_repetition() -> None:
    """The pooled p99 follows the worst repetition; the notes show the spread (``--quick`` runs one, so
    this drives the report's function on figures of three)."""
    script = (
        "from bench.model import Result\n"
        "from bench.workloads.parked import add_checks\n"
        "r = Result('W6', 'sleeps')\n"
        "r.p99_ms = 120.0\n"
        "r.samples = [{'latency_p99_ms': v} for v in (50.0, 60.3, 120.0)]\n"
        "add_checks(r, 'sleeping', 900.0, lag_target=True)\n"
        "print(r.notes)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "lag p99 per repetition 50.0 / 60.3 / 120.0 ms" in done.stdout, done.stdout
