"""W5, waits: 10,000 runs parked in ``step.wait_for_event``, then 10,000 matching events.

Each run waits for ``bench/w5-match`` whose ``data.k`` equals its own event's ``data.k``. Memory per
parked run is, in the first measured repetition, the daemon's RSS with every run parked (measured
once the daemon is idle, before the driver lists the runs) minus its RSS after warm-up, divided by
the number of runs. The wake-up lag of a run is the time from the
send of its matching event (its ``data.sent``; events go out in batches of 1,000) to the body of the
step after the wait.
"""

from __future__ import annotations

import time

from bench.harness import Api, Cluster, RunView, wait_until
from bench.model import Result
from bench.workloads.common import Env, Rep, failed_runs, wait_runs_ended, with_cpu
from bench.workloads.parked import daemon_rss, measure

KEY = "W5"
FUNCTION = "w5-wait"
START = "bench/w5-start"
MATCH = "bench/w5-match"
BATCH = 1000


def _lags_ms(runs: list[RunView]) -> list[float]:
    """Each completed run returns ``{"lag": seconds}``."""
    return [float(run.output["lag"]) * 1000 for run in runs if isinstance(run.output, dict) and "lag" in run.output]


def _idle(api: Api) -> bool:
    """True when the daemon committed nothing for 0.3 s."""
    before = api.metrics().commits
    time.sleep(0.3)
    return api.metrics().commits == before


def _rep(group: Cluster, count: int, tag: str, timeout: float, base: int | None) -> tuple[Rep, float | None]:
    """One repetition; ``base`` is the daemon's RSS before the first measured repetition."""
    api = group.api
    keys = [f"{tag}-{i}" for i in range(count)]
    dispatched = api.metrics().executions_dispatched
    run_ids = api.send(START, [{"k": k} for k in keys])
    # Every run's first execution sent, then the daemon idle (no commit for 0.3 s): measure RSS then,
    # before confirming with ListRuns, whose 10 pages of runs would add the driver's garbage to it.
    wait_until(
        lambda: api.metrics().executions_dispatched - dispatched >= count,
        timeout=timeout,
        what=f"the first executions of {count:,} runs",
        interval=0.05,
    )
    wait_until(lambda: _idle(api), timeout=timeout, what="the daemon to settle", interval=0.0)
    parked = daemon_rss(group)
    wait_until(
        lambda: len(api.list_runs(FUNCTION, "waiting", cap=count)) >= count,
        timeout=timeout,
        what=f"{count:,} runs parked in wait_for_event",
        interval=0.25,
    )
    per_run = None if base is None or parked is None else (parked - base) / count
    before = api.metrics()
    cpu_start = group.cpu()
    started = time.perf_counter()
    for first in range(0, count, BATCH):
        sent = time.time()
        api.send(MATCH, [{"k": k, "sent": sent} for k in keys[first : first + BATCH]], batch=BATCH)
    delta = wait_runs_ended(group, before, count, timeout, interval=0.05)
    seconds = time.perf_counter() - started
    cpu_end = group.cpu()
    failed_runs(group, delta, run_ids, FUNCTION)
    lags = _lags_ms(api.list_runs(FUNCTION, "completed", cap=count))
    rep = Rep(seconds, count, count, delta, lags, {"bytes_per_parked_run": per_run})
    return with_cpu(rep, group, cpu_start, cpu_end), per_run


def run(env: Env) -> list[Result]:
    count = env.profile.w5_runs
    workload = f"waits: {count:,} runs parked in wait_for_event, then {count:,} matching events"

    def rep(group: Cluster, runs: int, tag: str, base: int | None) -> tuple[Rep, float | None]:
        return _rep(group, runs, tag, env.profile.run_timeout, base)

    latency = "matching event sent → step after the wait"
    return [measure(env, Result(KEY, workload), FUNCTION, count, rep, "waiting", latency)]
