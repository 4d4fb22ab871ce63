"""W4, big state: one run of 8 sequential steps of 3.9 MB each (31.2 MB, just under the 32 MiB limit).

The clock runs from SendEvents until GetMetrics counts the run as ended (polled every 5 ms; the daemon
counts it after the final commit). The driver then reads the run with ListRuns, which carries its
output but not its steps: GetRun or WaitForRun would make the daemon load and serialize the 31 MB of
step results for the driver, which is a client's read, not the run, and would inflate the daemon's
peak RSS. Peak RSS is the daemon's VmHWM over the measured runs (warm-up excluded), compared with the
run's state. ``W4c`` is the same with ``checkpointing=True`` (one execution: no replay decodes the
earlier big results again).
"""

from __future__ import annotations

import time

from bench.harness import Cluster, RunFailed, cluster
from bench.model import Check, Result
from bench.progress import say
from bench.workers.functions import BIG_STEP_BYTES, BIG_STEPS
from bench.workloads.common import Env, Rep, guarded, summarize, wait_runs_ended, with_cpu

VARIANTS = (("W4", "w4-big-state", "bench/w4", ""), ("W4c", "w4-checkpointing", "bench/w4c", ", checkpointing=True"))
"""(key, function, event, label suffix)"""
TARGET_SECONDS = 0.25
RSS_FACTOR = 4
STATE_BYTES = BIG_STEPS * BIG_STEP_BYTES


def one_run(group: Cluster, function: str, event: str, timeout: float) -> Rep:
    api = group.api
    before = api.metrics()
    cpu_start = group.cpu()
    started = time.perf_counter()
    [run_id] = api.send(event, [{}])
    delta = wait_runs_ended(group, before, 1, timeout, interval=0.005)
    seconds = time.perf_counter() - started
    cpu_end = group.cpu()
    if delta.runs_completed != 1:
        raise RunFailed(f"run {run_id} did not complete: {api.get_run(run_id).error}")
    [run] = api.list_runs(function, "completed", cap=1)
    if run.id != run_id or run.output != {"chars": STATE_BYTES - 2 * BIG_STEPS}:
        raise RunFailed(f"run {run_id}: the newest completed run is {run.id} with output {run.output!r}")
    return with_cpu(Rep(seconds, BIG_STEPS, 1, delta), group, cpu_start, cpu_end)


def run(env: Env) -> list[Result]:
    return [_measure(env, *variant) for variant in VARIANTS]


def _measure(env: Env, key: str, function: str, event: str, suffix: str) -> Result:
    profile = env.profile
    result = Result(key, f"big state: {BIG_STEPS} steps × {BIG_STEP_BYTES / 1e6:.1f} MB{suffix}")

    def body() -> None:
        with cluster(env.workdir, key.lower(), [function]) as group:
            one_run(group, function, event, profile.run_timeout)  # warm-up
            base = group.reset_peaks()
            reps = [one_run(group, function, event, profile.run_timeout) for _ in range(profile.reps)]
            summarize(result, reps, group.peaks(base), env.floors)
            result.extra["idle_daemon_rss"] = group.idle_daemon_rss
            say(f"{key}: {result.seconds:.3f} s per run (median of {len(reps)})")

    guarded(result, body)
    result.extra["state_bytes"] = STATE_BYTES
    result.notes.append(
        "time ends when the daemon has committed the run's end (GetMetrics, polled every 5 ms); "
        "the driver never asks for the 31 MB of step results, so they are not in the time nor the RSS"
    )
    seconds = result.seconds if result.ok else None
    result.checks.append(
        Check(
            f"run in ≤ {TARGET_SECONDS} s",
            "-" if seconds is None else f"{seconds:.3f} s",
            None if seconds is None else seconds <= TARGET_SECONDS,
        )
    )
    limit = RSS_FACTOR * STATE_BYTES
    rss = result.daemon_rss if result.ok else None
    idle = result.extra.get("idle_daemon_rss")
    measured = "-" if rss is None else f"{rss / 1e6:.0f} MB = {rss / STATE_BYTES:.1f}× state"
    if rss is not None and isinstance(idle, int):
        grown = rss - idle
        measured += f" (idle daemon {idle / 1e6:.0f} MB; +{grown / 1e6:.0f} MB = {grown / STATE_BYTES:.1f}× state)"
    result.checks.append(
        Check(
            f"peak daemon RSS ≤ {RSS_FACTOR}× the run's state ({limit / 1e6:.0f} MB)",
            measured,
            None if rss is None else rss <= limit,
        )
    )
    return result
