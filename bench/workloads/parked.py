"""What W5 (waits) and W6 (sleeps) share: targets, lags, memory per parked run."""

from __future__ import annotations

from bench.harness import Cluster, RunView, rss_bytes
from bench.model import Check, Result

LAG_P99_MS = 100.0
BYTES_PER_PARKED_RUN = 1024


def targets(what: str) -> list[str]:
    return [
        f"≤ {BYTES_PER_PARKED_RUN} B of daemon RSS per {what} run beyond the baseline",
        f"wake-up lag p99 ≤ {LAG_P99_MS:g} ms",
    ]


def lags_ms(runs: list[RunView]) -> list[float]:
    """Each completed run returns ``{"lag": seconds}``."""
    return [float(run.output["lag"]) * 1000 for run in runs if isinstance(run.output, dict) and "lag" in run.output]


def daemon_rss(group: Cluster) -> int | None:
    return rss_bytes(group.daemon.pid)


def add_checks(result: Result, what: str, per_run_bytes: float | None) -> None:
    memory_target, lag_target = targets(what)
    result.checks.append(
        Check(
            memory_target,
            "-" if per_run_bytes is None else f"{per_run_bytes:,.0f} B per run",
            None if per_run_bytes is None else per_run_bytes <= BYTES_PER_PARKED_RUN,
        )
    )
    p99 = result.p99_ms if result.ok else None
    result.checks.append(
        Check(lag_target, "-" if p99 is None else f"p99 {p99:.1f} ms", None if p99 is None else p99 <= LAG_P99_MS)
    )
