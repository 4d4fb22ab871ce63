"""How much CPU other processes took while the suite ran: on a 2-core machine, anyone else's work
(a test suite, a build) shows up directly in the figures, so every result records it.

Other processes' CPU over an interval = all CPU time the kernel counted as busy (/proc/stat) minus the
CPU time of this process and of its reaped children (getrusage). Sample only when every child of the
stretch has been reaped (workload boundaries), or their CPU would count as someone else's.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CpuSample:
    wall: float
    busy: float
    """Seconds of CPU time the whole machine spent busy (all cores), since boot."""
    ours: float
    """Seconds of CPU time of this process and its reaped children."""


def _busy_seconds() -> float:
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = stat.readline().split()
    except OSError:
        return float("nan")
    # user nice system idle iowait irq softirq steal (guest time is already inside user/nice)
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def sample() -> CpuSample:
    mine = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    ours = mine.ru_utime + mine.ru_stime + children.ru_utime + children.ru_stime
    return CpuSample(time.monotonic(), _busy_seconds(), ours)


def other_cores(before: CpuSample, after: CpuSample) -> float:
    """Average number of cores other processes kept busy between the two samples (≥ 0)."""
    wall = after.wall - before.wall
    if wall <= 0:
        return 0.0
    other = (after.busy - before.busy) - (after.ours - before.ours)
    return max(0.0, other / wall)
