"""What a workload reports: its figures (medians over repetitions), its targets, and its status.

A figure that could not be measured is None, never a guess. ``status`` is ``ok``, or says why there
are no figures: ``unsupported: <error>``, ``timeout: ...``, ``failed: ...``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

OK = "ok"


@dataclass
class Check:
    """One target of the issue and whether this run met it (None: could not be evaluated)."""

    target: str
    measured: str
    met: bool | None

    @property
    def verdict(self) -> str:
        return {True: "met", False: "MISSED", None: "n/a"}[self.met]


@dataclass
class Result:
    key: str
    """Short id, e.g. ``W2-1000``."""
    workload: str
    """What runs, e.g. ``one long run: 1,000 sequential steps``."""
    status: str = OK
    reps: int = 0
    seconds: float | None = None
    """Median wall time of one repetition (the whole batch of runs for W1/W5/W6)."""
    steps: int | None = None
    """Steps per repetition."""
    runs: int | None = None
    """Runs per repetition."""
    steps_per_s: float | None = None
    runs_per_s: float | None = None
    per_step_ms: float | None = None
    """Wall time per step (``seconds / steps``); for many concurrent runs, the amortized cost."""
    p50_ms: float | None = None
    p99_ms: float | None = None
    """Step latency percentiles over every measured step (what ``latency`` says they measure)."""
    latency: str = ""
    executions: int | None = None
    """Handler executions per repetition (GetMetrics executions_dispatched delta, median)."""
    memo_bytes: int | None = None
    """Memo payload bytes the daemon sent to workers per repetition (memo_bytes_sent delta, median)."""
    result_bytes: int | None = None
    """Result payload bytes workers sent to the daemon per repetition (result_bytes_received delta, median)."""
    commits: int | None = None
    daemon_rss: int | None = None
    """Peak RSS (VmHWM) of the daemon over the measured repetitions, bytes."""
    worker_rss: int | None = None
    daemon_rss_base: int | None = None
    """Daemon RSS right after warm-up, when the peak window was opened."""
    worker_rss_base: int | None = None
    daemon_cpu_pct: float | None = None
    """CPU the daemon used while the repetitions ran, in % of one core; near 100: it is the bottleneck."""
    worker_cpu_pct: float | None = None
    daemon_thread_us_per_step: dict[str, float] = field(default_factory=dict)
    """The daemon's CPU per step by kind of thread (event loop, writer, readers, gRPC and other), summed
    over the repetitions: which thread a step's cost lands on."""
    floor_ratio: float | None = None
    """``per_step_ms`` divided by the floor of one step (one gRPC round trip + one SQLite commit)."""
    other_cores: float | None = None
    """Cores other processes kept busy while this workload ran (bench.cpu); near 0 on a quiet machine."""
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    """Workload-specific figures (JSON only)."""
    samples: list[dict[str, Any]] = field(default_factory=list)
    """One entry per repetition, raw."""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["checks"] = [{**asdict(c), "verdict": c.verdict} for c in self.checks]
        return data

    @property
    def ok(self) -> bool:
        return self.status == OK
