"""W1, many small runs: 2,000 runs of 3 sequential trivial steps, all submitted at once.

One SendEvents call carries every event (the daemon commits them and their runs in one transaction);
the clock runs from that call until GetMetrics says every run has ended, so steps/s is end to end and
durable (each step's result committed before the run moved on). Step latency is the gap between
consecutive step bodies of one run (with every run in flight at once, it includes queueing), read
afterwards from a sample of runs. ``W1c`` is the same with ``checkpointing=True`` (one execution per
run instead of three).
"""

from __future__ import annotations

import time

from bench.harness import Cluster, cluster
from bench.model import Check, Result
from bench.progress import say
from bench.workloads.common import (
    Env,
    Rep,
    ensure_completed,
    failed_runs,
    gaps_ms,
    guarded,
    summarize,
    wait_runs_ended,
    with_cpu,
)

VARIANTS = (("W1", "w1-three-steps", "bench/w1", ""), ("W1c", "w1-checkpointing", "bench/w1c", ", checkpointing=True"))
"""(key, function, event, label suffix)"""
STEPS_PER_RUN = 3
TARGET_STEPS_PER_S = 3000
LATENCY_SAMPLE = 200
WARM_UP_RUNS = 100


def _batch(group: Cluster, function: str, event: str, count: int, tag: str, timeout: float) -> Rep:
    api = group.api
    before = api.metrics()
    cpu_start = group.cpu()
    sent_at = time.time()
    started = time.perf_counter()
    run_ids = api.send(event, [{"batch": tag, "i": i} for i in range(count)], batch=count)
    sent = time.perf_counter() - started
    delta = wait_runs_ended(group, before, count, timeout)
    seconds = time.perf_counter() - started
    cpu_end = group.cpu()
    failed_runs(group, delta, run_ids, function)
    stride = max(1, len(run_ids) // LATENCY_SAMPLE)
    latencies: list[float] = []
    first_step: list[float] = []
    for run_id in run_ids[::stride][:LATENCY_SAMPLE]:
        run = ensure_completed(api.get_run(run_id))
        latencies.extend(gaps_ms(run.step_outputs))
        first_step.append((float(run.step_outputs[0]) - sent_at) * 1000)
    extra = {"send_seconds": sent, "first_step_after_send_ms_median": sorted(first_step)[len(first_step) // 2]}
    return with_cpu(Rep(seconds, count * STEPS_PER_RUN, count, delta, latencies, extra), group, cpu_start, cpu_end)


def run(env: Env) -> list[Result]:
    return [_measure(env, *variant) for variant in VARIANTS]


def _measure(env: Env, key: str, function: str, event: str, suffix: str) -> Result:
    profile = env.profile
    count = profile.w1_runs
    result = Result(key, f"many small runs: {count:,} runs × {STEPS_PER_RUN} sequential steps{suffix}")

    def body() -> None:
        with cluster(env.workdir, key.lower(), [function], env={"BENCH_CAPACITY": str(profile.capacity)}) as group:
            say(f"{key}: warm-up ({WARM_UP_RUNS} runs)")
            _batch(group, function, event, WARM_UP_RUNS, "warm-up", profile.run_timeout)
            base = group.reset_peaks()
            reps = []
            for rep in range(profile.reps):
                measured = _batch(group, function, event, count, f"rep-{rep}", profile.run_timeout)
                say(f"{key}: rep {rep + 1}/{profile.reps}: {measured.steps / measured.seconds:,.0f} steps/s")
                reps.append(measured)
            summarize(result, reps, group.peaks(base), env.floors, "gap between consecutive step bodies of a run")

    guarded(result, body)
    result.notes.append(f"one worker process, capacity {profile.capacity} executions at once; trivial async steps")
    measured = "-" if result.steps_per_s is None else f"{result.steps_per_s:,.0f} steps/s"
    met = None if result.steps_per_s is None else result.steps_per_s >= TARGET_STEPS_PER_S
    result.checks.append(Check(f"≥ {TARGET_STEPS_PER_S:,} steps/s end to end, durable", measured, met))
    return result
