"""W6, sleeps: 10,000 runs each sleeping 1 s (``step.sleep("nap", "1s")``, the handler's first step).

The wake-up lag of a run is ``woke - (started + 1 s)``: ``woke`` is when the step after the sleep ran,
``started`` the daemon's stamp of the run's first lease. The SDK computes the deadline as 1 s after the
handler reaches the sleep, which is after that lease, so the figure over-states the lag by the lease's
trip to the handler (a millisecond or so), never under-states it.

Memory per sleeping run is the daemon's peak RSS over the first measured repetition minus its RSS
after warm-up, divided by the number of runs (an upper bound: the peak also holds what processing
10,000 runs at once takes, and not every run need be asleep at the peak).
"""

from __future__ import annotations

import time

from bench.harness import Cluster, RunView, peak_rss_bytes, reset_peak_rss
from bench.model import Result
from bench.workloads.common import Env, Rep, failed_runs, wait_runs_ended, with_cpu
from bench.workloads.parked import measure

KEY = "W6"
FUNCTION = "w6-sleep"
EVENT = "bench/w6"


def _rep(group: Cluster, count: int, tag: str, timeout: float, base: int | None) -> tuple[Rep, float | None]:
    """One repetition; ``base`` is the daemon's RSS before the first measured repetition."""
    api = group.api
    reset_peak_rss(group.daemon.pid)
    before = api.metrics()
    cpu_start = group.cpu()
    started = time.perf_counter()
    run_ids = api.send(EVENT, [{"batch": tag, "i": i} for i in range(count)])
    delta = wait_runs_ended(group, before, count, timeout, interval=0.05)
    seconds = time.perf_counter() - started
    cpu_end = group.cpu()
    peak = peak_rss_bytes(group.daemon.pid)
    failed_runs(group, delta, run_ids, FUNCTION)
    per_run = None if base is None or peak is None else (peak - base) / count
    lags = _lags_ms(api.list_runs(FUNCTION, "completed", cap=count))
    rep = Rep(seconds, count, count, delta, lags, {"bytes_per_parked_run": per_run})
    return with_cpu(rep, group, cpu_start, cpu_end), per_run


def _lags_ms(runs: list[RunView]) -> list[float]:
    """Each completed run returns ``{"woke": seconds}``."""
    return [
        (float(run.output["woke"]) - run.started_ms / 1000 - 1.0) * 1000
        for run in runs
        if isinstance(run.output, dict) and "woke" in run.output and run.started_ms
    ]


def run(env: Env) -> list[Result]:
    count = env.profile.w6_runs
    workload = f"sleeps: {count:,} runs sleeping 1 s"

    def rep(group: Cluster, runs: int, tag: str, base: int | None) -> tuple[Rep, float | None]:
        return _rep(group, runs, tag, env.profile.run_timeout, base)

    latency = "1 s deadline (run start + 1 s) → step after the sleep"
    return [measure(env, Result(KEY, workload), FUNCTION, count, rep, "sleeping", latency)]
