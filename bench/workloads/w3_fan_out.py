"""W3, fan-out: one ``asyncio.gather`` of N steps, then the sum of their results, with and without
``optimize_parallelism=True``.

Parallel steps (planned steps dispatched as their own executions) are being built while this suite is
written; whatever the build in the tree does is measured as it is. A run that fails is reported as
``unsupported: <its error>``, one that does not end in time as ``timeout``; never a made-up figure.
The executions column tells whether the steps really ran in parallel: a build without parallel
planning runs a gather one step per execution (N + 1 executions, O(N^2) replay).
"""

from __future__ import annotations

import time

from bench.harness import Cluster, RunFailed, cluster
from bench.model import Check, Result
from bench.progress import say
from bench.workloads.common import Env, Rep, ensure_completed, guarded, summarize, with_cpu

FUNCTIONS = {False: ("w3-gather", "bench/w3"), True: ("w3-gather-optimized", "bench/w3-optimized")}
TARGET_SECONDS = {200: 0.1, 1000: 0.5}
"""With optimize_parallelism: a gather of this many steps plus the aggregate within this many seconds."""
WARM_UP_SIZE = 10


def key(size: int, optimized: bool) -> str:
    return f"W3-{size}{'-opt' if optimized else ''}"


def one_run(group: Cluster, event: str, size: int, timeout: float) -> Rep:
    api = group.api
    before = api.metrics()
    cpu_start = group.cpu()
    started = time.perf_counter()
    [run_id] = api.send(event, [{"n": size}])
    run = ensure_completed(api.wait_for_run(run_id, timeout))
    seconds = time.perf_counter() - started
    cpu_end = group.cpu()
    delta = api.metrics() - before
    expected = {"parts": size, "sum": size * (size - 1) // 2}
    if run.output != expected:
        raise RunFailed(f"run {run_id} returned {run.output!r}, expected {expected!r}")
    return with_cpu(Rep(seconds, size, 1, delta), group, cpu_start, cpu_end)


def _measure(env: Env, size: int, optimized: bool) -> Result:
    profile = env.profile
    function, event = FUNCTIONS[optimized]
    option = "with optimize_parallelism" if optimized else "default"
    result = Result(key(size, optimized), f"fan-out: gather of {size:,} steps + aggregate, {option}")

    def body() -> None:
        with cluster(env.workdir, f"w3-{size}-{'opt' if optimized else 'default'}", [function]) as group:
            one_run(group, event, WARM_UP_SIZE, profile.run_timeout)
            base = group.reset_peaks()
            reps = []
            for _ in range(profile.reps):
                reps.append(one_run(group, event, size, profile.run_timeout))
            summarize(result, reps, group.peaks(base), env.floors)
            say(f"W3: gather of {size} ({option}): {result.seconds:.3f} s (median of {len(reps)})")

    guarded(result, body, failure_prefix="unsupported")
    if result.executions is not None and result.executions >= size:
        result.notes.append(
            f"{result.executions:,} executions for {size:,} steps: the steps ran one per execution "
            "(no parallel dispatch in this build)"
        )
    target = TARGET_SECONDS.get(size)
    if optimized and target is not None:
        measured = "-" if result.seconds is None or not result.ok else f"{result.seconds:.3f} s"
        met = None if result.seconds is None or not result.ok else result.seconds <= target
        result.checks.append(Check(f"≤ {target:g} s with optimize_parallelism", measured, met))
    return result


def run(env: Env) -> list[Result]:
    return [_measure(env, size, optimized) for size in env.profile.w3_sizes for optimized in (False, True)]
