"""W5, waits: 10,000 runs parked in ``step.wait_for_event``, then 10,000 matching events, sent two ways.

Each run waits for ``bench/w5-match`` whose ``data.k`` equals its own event's ``data.k``. The wake-up
lag of a run is the time from the send of its matching event (its ``data.sent``) to the body of the
step after the wait.

* ``W5``, a burst: the driver sends the 10,000 events as fast as the daemon accepts them, 1,000 per
  send. This gives the time to wake them all and the wake rate. Its lag is reported but has no target:
  in a burst the last run waits for the 9,999 woken before it, so its p99 is the burst's length (the
  throughput), whatever each wake costs.
* ``W5s``, a steady stream: the same 10,000 events at a constant rate, half the burst's wake rate
  measured just before in the same run (``STEADY_SHARE``), 10 per send. The lag target is checked
  here: how long a run waits for its event when the daemon is not saturated.

Memory per parked run is, in the first measured repetition of each, the daemon's RSS with every run
parked (measured once the daemon is idle, before the driver lists the runs) minus its RSS after
warm-up, divided by the number of runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bench.harness import Api, Cluster, RunView, wait_until
from bench.model import Result
from bench.stats import median
from bench.workloads.common import Env, Rep, failed_runs, wait_runs_ended, with_cpu
from bench.workloads.parked import daemon_rss, measure

KEY = "W5"
STEADY_KEY = "W5s"
FUNCTION = "w5-wait"
START = "bench/w5-start"
MATCH = "bench/w5-match"
BURST_BATCH = 1000
STEADY_BATCH = 10
STEADY_SHARE = 0.5
"""The steady stream's rate as a share of the burst's wake rate: a daemon at half load."""
STEADY_FALLBACK_RATE = 1000.0
"""Events per second of the steady stream when the burst did not give a rate (it failed or timed out)."""

Sender = Callable[[Api, list[str]], None]


def _burst(api: Api, keys: list[str]) -> None:
    for first in range(0, len(keys), BURST_BATCH):
        sent = time.time()
        api.send(MATCH, [{"k": k, "sent": sent} for k in keys[first : first + BURST_BATCH]], batch=BURST_BATCH)


def _steady(rate: float) -> Sender:
    """Send ``STEADY_BATCH`` events every ``STEADY_BATCH / rate`` s, on a fixed schedule (a late send
    does not make the next one early: the offered rate never exceeds ``rate``)."""
    interval = STEADY_BATCH / rate

    def send(api: Api, keys: list[str]) -> None:
        due = time.perf_counter()
        for first in range(0, len(keys), STEADY_BATCH):
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            due = max(due, time.perf_counter()) + interval
            sent = time.time()
            api.send(MATCH, [{"k": k, "sent": sent} for k in keys[first : first + STEADY_BATCH]], batch=STEADY_BATCH)

    return send


def _lags_ms(runs: list[RunView]) -> list[float]:
    """Each completed run returns ``{"lag": seconds}``."""
    return [float(run.output["lag"]) * 1000 for run in runs if isinstance(run.output, dict) and "lag" in run.output]


def _idle(api: Api) -> bool:
    """True when the daemon committed nothing for 0.3 s."""
    before = api.metrics().commits
    time.sleep(0.3)
    return api.metrics().commits == before


def _rep(
    group: Cluster, count: int, tag: str, timeout: float, base: int | None, send: Sender
) -> tuple[Rep, float | None]:
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
    send(api, keys)
    sent = time.perf_counter() - started
    delta = wait_runs_ended(group, before, count, timeout, interval=0.05)
    seconds = time.perf_counter() - started
    cpu_end = group.cpu()
    failed_runs(group, delta, run_ids, FUNCTION)
    lags = _lags_ms(api.list_runs(FUNCTION, "completed", cap=count))
    rep = Rep(seconds, count, count, delta, lags, {"bytes_per_parked_run": per_run, "events_sent_per_s": count / sent})
    return with_cpu(rep, group, cpu_start, cpu_end), per_run


def run(env: Env) -> list[Result]:
    count = env.profile.w5_runs
    timeout = env.profile.run_timeout
    latency = "matching event sent → step after the wait"

    def reps(send: Sender) -> Callable[[Cluster, int, str, int | None], tuple[Rep, float | None]]:
        return lambda group, runs, tag, base: _rep(group, runs, tag, timeout, base, send)

    parked = f"{count:,} runs parked in wait_for_event, then {count:,} matching events"
    burst = Result(KEY, f"waits: {parked} at once")
    measure(env, burst, FUNCTION, count, reps(_burst), "waiting", latency, lag_target=False)
    burst.notes.append(f"no lag target: in a burst the p99 is the burst's length (throughput); {STEADY_KEY} checks it")
    rate = STEADY_SHARE * burst.runs_per_s if burst.runs_per_s else STEADY_FALLBACK_RATE
    steady = Result(STEADY_KEY, f"waits: {parked} offered at {rate:,.0f}/s")
    steady.extra["events_offered_per_s"] = rate
    measure(env, steady, FUNCTION, count, reps(_steady(rate)), "waiting", latency)
    if steady.samples:
        achieved = median([sample["events_sent_per_s"] for sample in steady.samples])
        steady.workload += f", sent at {achieved:,.0f}/s"
    return [burst, steady]
