"""W2, one long run: N sequential trivial steps, for N = 10 ... 1,000, to show how per-step cost grows.

Each size gets a fresh daemon, a warm-up run, then several measured runs one after another (short runs
are repeated more, to tame noise). The clock runs from SendEvents until WaitForRun answers that the run
completed. The re-execution model replays the handler once per step, so a naive engine costs O(N) per
step (O(N^2) per run) in replay and in state shipped; the executions and bytes columns show which.
Every size runs twice: as the article's model (``W2-N``) and with ``checkpointing=True`` (``W2c-N``:
one execution, each step committed before the handler goes on, no replay).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from bench.harness import Cluster, RunFailed, cluster
from bench.model import Check, Result
from bench.progress import say
from bench.workloads.common import Env, Rep, ensure_completed, gaps_ms, guarded, summarize, with_cpu


@dataclass(frozen=True)
class Variant:
    prefix: str
    function: str
    event: str
    what: str


VARIANTS = (
    Variant("W2", "w2-sequential", "bench/w2", "one long run: {size:,} sequential steps"),
    Variant("W2c", "w2-checkpointing", "bench/w2c", "one long run: {size:,} sequential steps, checkpointing=True"),
)
W2C = VARIANTS[1]
FLAT_FACTOR = 1.5
"""The 1,000-step run's per-step cost may be at most this times the 10-step run's."""
FLOOR_FACTOR = 1.5
"""Per-step cost at most this times (one floor round trip + one floor commit)."""


def one_run(group: Cluster, variant: Variant, size: int, timeout: float) -> Rep:
    api = group.api
    before = api.metrics()
    cpu_start = group.cpu()
    started = time.perf_counter()
    [run_id] = api.send(variant.event, [{"n": size}])
    run = ensure_completed(api.wait_for_run(run_id, timeout))
    seconds = time.perf_counter() - started
    cpu_end = group.cpu()
    delta = api.metrics() - before
    if len(run.step_outputs) != size:
        raise RunFailed(f"run {run_id} recorded {len(run.step_outputs)} steps, expected {size}")
    return with_cpu(Rep(seconds, size, 1, delta, gaps_ms(run.step_outputs)), group, cpu_start, cpu_end)


def _measure(env: Env, variant: Variant, size: int) -> Result:
    profile = env.profile
    result = Result(f"{variant.prefix}-{size}", variant.what.format(size=size))
    reps_wanted = max(profile.reps, min(profile.w2_max_reps, profile.w2_rep_steps // size))

    def body() -> None:
        with cluster(env.workdir, f"{variant.prefix.lower()}-{size}", [variant.function]) as group:
            one_run(group, variant, size, profile.run_timeout)  # warm-up
            base = group.reset_peaks()
            reps = [one_run(group, variant, size, profile.run_timeout) for _ in range(reps_wanted)]
            summarize(result, reps, group.peaks(base), env.floors, "gap between consecutive step bodies")
            say(f"{result.key}: {result.per_step_ms:.3f} ms per step (median of {len(reps)})")

    guarded(result, body)
    return result


def run(env: Env) -> list[Result]:
    return [result for variant in VARIANTS for result in _checked(env, variant)]


def _checked(env: Env, variant: Variant) -> list[Result]:
    results = [_measure(env, variant, size) for size in env.profile.w2_sizes]
    floor = env.floors.step_ms
    by_size = {int(r.key.split("-")[1]): r for r in results}
    small, large = by_size.get(10), by_size.get(1000)
    for result in results:
        cost = result.per_step_ms
        measured = "-" if cost is None else f"{cost:.3f} ms/step = {cost / floor:.2f} × floor ({floor:.3f} ms)"
        met = None if cost is None else cost <= FLOOR_FACTOR * floor
        result.checks.append(Check(f"≤ {FLOOR_FACTOR} × (floor round trip + floor commit) per step", measured, met))
    if large is not None:
        if small is not None and small.per_step_ms is not None and large.per_step_ms is not None:
            ratio = large.per_step_ms / small.per_step_ms
            measured = f"{large.per_step_ms:.3f} / {small.per_step_ms:.3f} ms = {ratio:.2f}×"
            flat = Check(
                f"per-step cost flat: 1,000 steps ≤ {FLAT_FACTOR}× the 10-step run's", measured, ratio <= FLAT_FACTOR
            )
        else:
            flat = Check(f"per-step cost flat: 1,000 steps ≤ {FLAT_FACTOR}× the 10-step run's", "-", None)
        large.checks.insert(0, flat)
    return results
