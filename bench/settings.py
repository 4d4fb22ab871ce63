"""Sizes, repetitions and time bounds of a full run and of ``--quick`` (a smoke run for CI)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    reps: int
    """Measured repetitions of each workload (after one warm-up); figures are medians over them."""
    floor_reps: int
    floor_round_trips: int
    floor_commits: int
    floor_seconds: float
    """Each floor repetition stops after this many seconds even if its count is not reached."""
    w1_runs: int
    w2_sizes: tuple[int, ...]
    w2_max_reps: int
    w2_rep_steps: int
    """W2 repeats short runs more, to tame noise: up to ``w2_max_reps`` times, about this many steps per size."""
    w3_sizes: tuple[int, ...]
    w5_runs: int
    w6_runs: int
    run_timeout: float
    """Longest wait for one run (or one batch of runs) before the workload is reported as timed out."""
    micro_seconds: float
    """Time budget of one micro-benchmark repetition (each also stops at its op count)."""
    micro_reps: int
    capacity: int = 64
    """Executions one worker accepts at once (the SDK's default)."""


FULL = Profile(
    name="full",
    reps=5,
    floor_reps=3,
    floor_round_trips=20_000,
    floor_commits=5_000,
    floor_seconds=3.0,
    w1_runs=2000,
    w2_sizes=(10, 30, 100, 200, 300, 1000),
    w2_max_reps=15,
    w2_rep_steps=3000,
    w3_sizes=(200, 1000),
    w5_runs=10_000,
    w6_runs=10_000,
    run_timeout=120.0,
    micro_seconds=0.5,
    micro_reps=5,
)

QUICK = Profile(
    name="quick",
    reps=1,
    floor_reps=1,
    floor_round_trips=3_000,
    floor_commits=1_000,
    floor_seconds=1.0,
    w1_runs=300,
    w2_sizes=(10, 100, 1000),
    w2_max_reps=3,
    w2_rep_steps=300,
    w3_sizes=(200,),
    w5_runs=1_000,
    w6_runs=1_000,
    run_timeout=30.0,
    micro_seconds=0.1,
    micro_reps=1,
)
