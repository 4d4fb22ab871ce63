"""What W5 (waits) and W6 (sleeps) share: targets, lags, memory per parked run."""

from __future__ import annotations

from collections.abc import Callable

from bench.harness import Cluster, cluster, rss_bytes
from bench.model import Check, Result
from bench.progress import say
from bench.workloads.common import Env, Rep, guarded, summarize

LAG_P99_MS = 100.0
BYTES_PER_PARKED_RUN = 1024


def targets(what: str) -> list[str]:
    return [
        f"≤ {BYTES_PER_PARKED_RUN} B of daemon RSS per {what} run beyond the baseline",
        f"wake-up lag p99 ≤ {LAG_P99_MS:g} ms",
    ]


def daemon_rss(group: Cluster) -> int | None:
    return rss_bytes(group.daemon.pid)


def add_checks(result: Result, what: str, per_run_bytes: float | None, lag_target: bool) -> None:
    memory_target, lag = targets(what)
    result.checks.append(
        Check(
            memory_target,
            "-" if per_run_bytes is None else f"{per_run_bytes:,.0f} B per run",
            None if per_run_bytes is None else per_run_bytes <= BYTES_PER_PARKED_RUN,
        )
    )
    if not lag_target:
        return
    p99 = result.p99_ms if result.ok else None
    result.checks.append(
        Check(lag, "-" if p99 is None else f"p99 {p99:.1f} ms", None if p99 is None else p99 <= LAG_P99_MS)
    )
    per_rep = [sample["latency_p99_ms"] for sample in result.samples if sample.get("latency_p99_ms") is not None]
    if len(per_rep) > 1:  # the pooled p99 swings with the worst repetition: the spread says how much
        spread = " / ".join(f"{value:.1f}" for value in per_rep)
        result.notes.append(f"lag p99 per repetition {spread} ms; the p99 above pools every repetition's runs")


ParkedRep = Callable[[Cluster, int, str, int | None], tuple[Rep, float | None]]
"""One repetition: ``(group, runs, tag, base RSS or None for the warm-up) -> (figures, bytes per run)``."""


def measure(
    env: Env,
    result: Result,
    function: str,
    count: int,
    rep: ParkedRep,
    what: str,
    latency: str,
    *,
    lag_target: bool = True,
) -> Result:
    """What W5 and W6 run around their repetitions: a daemon, a 100-run warm-up, the measured
    repetitions, the summary, and the memory figure of the first repetition (later ones reuse memory
    that earlier ones, and the driver's ListRuns of their results, left in the daemon's heap; every
    repetition's figure is in the samples). ``lag_target``: whether the lag target applies (not to a
    burst, whose lag is its length)."""
    per_run: list[float] = []

    def body() -> None:
        with cluster(env.workdir, result.key.lower(), [function]) as group:
            rep(group, 100, "warm-up", None)
            base = group.reset_peaks()
            reps = []
            for n in range(env.profile.reps):
                measured, parked = rep(group, count, f"rep-{n}", base.daemon_base)
                reps.append(measured)
                if parked is not None:
                    per_run.append(parked)
                say(f"{result.key}: rep {n + 1}: {count:,} {what} runs woke in {measured.seconds:.2f} s")
            summarize(result, reps, group.peaks(base), env.floors, latency)

    guarded(result, body)
    per_run_bytes = per_run[0] if per_run else None
    result.extra["bytes_per_parked_run"] = per_run_bytes
    add_checks(result, what, per_run_bytes, lag_target)
    return result
