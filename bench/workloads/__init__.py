"""The workloads, in the order the suite runs them. Each ``run(env)`` returns its results."""

from __future__ import annotations

from collections.abc import Callable

from bench.model import Result
from bench.workloads import w1_many_runs, w2_long_run, w3_fan_out, w4_big_state, w5_waits, w6_sleeps
from bench.workloads.common import Env

WORKLOADS: dict[str, Callable[[Env], list[Result]]] = {
    "W1": w1_many_runs.run,
    "W2": w2_long_run.run,
    "W3": w3_fan_out.run,
    "W4": w4_big_state.run,
    "W5": w5_waits.run,
    "W6": w6_sleeps.run,
}
