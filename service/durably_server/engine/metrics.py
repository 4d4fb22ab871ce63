"""Counters of what the engine did since start-up, served by GetMetrics.

Benchmarks and tests judge the engine by these (handler executions, bytes shipped to
and from workers), so they count at the point where the thing happens, not where it is asked for.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Metrics:
    events_received: int = 0
    runs_created: int = 0
    executions_dispatched: int = 0
    memos_sent: int = 0
    memo_bytes_sent: int = 0
    steps_recorded: int = 0
    runs_completed: int = 0
    runs_failed: int = 0
    result_bytes_received: int = 0
