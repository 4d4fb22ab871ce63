"""What the workloads share: their environment, one measured repetition, and the summary of several."""

from __future__ import annotations

import itertools
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from bench.floors import Floors
from bench.harness import BenchError, BenchTimeout, Cluster, CpuMark, Metrics, Peaks, RunFailed, RunView
from bench.model import Result
from bench.progress import say
from bench.settings import Profile
from bench.stats import median, percentile

ENDED = ("completed", "failed", "cancelled")


@dataclass(frozen=True)
class Env:
    workdir: Path
    profile: Profile
    floors: Floors


@dataclass
class Rep:
    """One measured repetition."""

    seconds: float
    steps: int
    runs: int
    metrics: Metrics
    latencies_ms: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    daemon_cpu: float | None = None
    """CPU seconds the daemon used during the repetition (all threads)."""
    worker_cpu: float | None = None
    daemon_threads_cpu: dict[str, float] = field(default_factory=dict)
    """CPU seconds the daemon used during the repetition, by kind of thread (bench.harness.THREAD_GROUPS)."""

    def to_json(self) -> dict[str, Any]:
        lat = self.latencies_ms
        return {
            "seconds": self.seconds,
            "steps": self.steps,
            "runs": self.runs,
            "metrics": {name: getattr(self.metrics, name) for name in Metrics.__dataclass_fields__},
            "latency_count": len(lat),
            "latency_p50_ms": percentile(lat, 50) if lat else None,
            "latency_p99_ms": percentile(lat, 99) if lat else None,
            "daemon_cpu_seconds": self.daemon_cpu,
            "worker_cpu_seconds": self.worker_cpu,
            "daemon_threads_cpu_seconds": self.daemon_threads_cpu,
            **self.extra,
        }


def with_cpu(rep: Rep, group: Cluster, start: CpuMark, end: CpuMark) -> Rep:
    """``rep`` with the CPU seconds the daemon and the workers used between two ``group.cpu()`` marks."""
    rep.daemon_cpu = end.daemon - start.daemon
    rep.worker_cpu = end.workers - start.workers
    rep.daemon_threads_cpu = {
        kind: seconds - start.daemon_threads.get(kind, 0.0) for kind, seconds in end.daemon_threads.items()
    }
    return rep


def gaps_ms(timestamps: Sequence[Any]) -> list[float]:
    """Milliseconds between consecutive step bodies of one run (each step returned ``time.time()``)."""
    values = [float(t) for t in timestamps]
    return [(b - a) * 1000 for a, b in itertools.pairwise(values)]


def ensure_completed(run: RunView) -> RunView:
    if run.status != "completed":
        raise RunFailed(f"run {run.id} ended {run.status}: {run.error or 'no error recorded'}")
    return run


def wait_runs_ended(group: Cluster, before: Metrics, count: int, timeout: float, interval: float = 0.01) -> Metrics:
    """Poll GetMetrics until ``count`` more runs have ended than at ``before``; the delta at that moment.

    Polling every ``interval`` s costs the daemon one tiny unary call each time (well under 1 % of a
    core); it bounds the end time's error to ``interval``.
    """
    deadline = time.monotonic() + timeout
    checked = time.monotonic()
    while True:
        delta = group.api.metrics() - before
        if delta.runs_ended >= count:
            return delta
        now = time.monotonic()
        if now >= deadline:
            raise BenchTimeout(f"only {delta.runs_ended:,} of {count:,} runs ended within {timeout:g} s")
        if now - checked > 1.0:
            group.check_alive()
            checked = now
        time.sleep(interval)


def failed_runs(group: Cluster, delta: Metrics, run_ids: Sequence[str], function_id: str) -> None:
    """Raise RunFailed with the first failure's error when any run of the batch failed."""
    if delta.runs_failed == 0:
        return
    for run_id in run_ids:
        run = group.api.get_run(run_id)
        if run.status != "completed":
            raise RunFailed(f"{delta.runs_failed} of {len(run_ids)} {function_id} runs failed; e.g. {run.error}")
    raise RunFailed(f"{delta.runs_failed} runs failed")


def guarded(result: Result, body: Callable[[], None], *, failure_prefix: str = "failed") -> None:
    """Run ``body``; a timeout, a failed run or a dead process becomes the result's status, not a crash."""
    try:
        body()
    except BenchTimeout as exc:
        result.status = f"timeout: {exc}"
    except RunFailed as exc:
        result.status = f"{failure_prefix}: {exc}"
    except BenchError as exc:
        result.status = f"failed: {exc}"
    except grpc.RpcError as exc:  # the daemon died or refused a call: report it, go on with the suite
        result.status = f"failed: {exc.code().name}: {exc.details()}"
    except Exception as exc:  # a bug here must not cost the other workloads' results
        say(f"{result.key}: unexpected error:\n{traceback.format_exc()}")
        result.status = f"failed: {type(exc).__name__}: {exc}"


def summarize(result: Result, reps: Sequence[Rep], peaks: Peaks | None, floors: Floors, latency: str = "") -> None:
    """Fill ``result``'s figures with medians over ``reps``."""
    if not reps:
        return
    result.reps = len(reps)
    result.samples = [rep.to_json() for rep in reps]
    seconds = median([rep.seconds for rep in reps])
    steps = reps[0].steps
    runs = reps[0].runs
    result.seconds = seconds
    result.steps = steps
    result.runs = runs
    result.steps_per_s = median([rep.steps / rep.seconds for rep in reps]) if steps else None
    result.runs_per_s = median([rep.runs / rep.seconds for rep in reps])
    result.per_step_ms = median([rep.seconds * 1000 / rep.steps for rep in reps]) if steps else None
    pooled = [value for rep in reps for value in rep.latencies_ms]
    if pooled:
        result.p50_ms = percentile(pooled, 50)
        result.p99_ms = percentile(pooled, 99)
        result.latency = latency
    result.executions = int(median([rep.metrics.executions_dispatched for rep in reps]))
    result.memo_bytes = int(median([rep.metrics.memo_bytes_sent for rep in reps]))
    result.result_bytes = int(median([rep.metrics.result_bytes_received for rep in reps]))
    result.commits = int(median([rep.metrics.commits for rep in reps]))
    if peaks is not None:
        result.daemon_rss = peaks.daemon
        result.worker_rss = peaks.worker
        result.daemon_rss_base = peaks.daemon_base
        result.worker_rss_base = peaks.worker_base
    if result.per_step_ms is not None:
        result.floor_ratio = result.per_step_ms / floors.step_ms
    # Summed over the repetitions, not a median: CPU time is counted in 10 ms ticks, coarse for short runs.
    wall = sum(rep.seconds for rep in reps)
    if all(rep.daemon_cpu is not None for rep in reps):
        result.daemon_cpu_pct = 100 * sum(rep.daemon_cpu or 0.0 for rep in reps) / wall
    if all(rep.worker_cpu is not None for rep in reps):
        result.worker_cpu_pct = 100 * sum(rep.worker_cpu or 0.0 for rep in reps) / wall
    all_steps = sum(rep.steps for rep in reps)
    if all_steps:
        kinds = sorted({kind for rep in reps for kind in rep.daemon_threads_cpu})
        result.daemon_thread_us_per_step = {
            kind: 1e6 * sum(rep.daemon_threads_cpu.get(kind, 0.0) for rep in reps) / all_steps for kind in kinds
        }
