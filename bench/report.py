"""The suite's output: a Markdown table (stdout), the JSON results file and an SVG plot, by hand.

The tables are Markdown so that they read well in a terminal and paste as they are into README.md.
The plot is per-step cost against steps per run (W2), on a log axis, with the machine's floor.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.floors import Floors
from bench.harness import THREAD_KINDS
from bench.micro import MicroResult
from bench.model import Result

STATUS_WIDTH = 70
QUIET_CORES = 0.1


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if value < 10 else f"{value:,.1f}"


def _mb(value: int | None) -> str:
    return "-" if value is None else f"{value / 1e6:,.0f}"


def _bytes(value: int | None) -> str:
    if value is None:
        return "-"
    if value < 10_000:
        return f"{value:,} B"
    if value < 10_000_000:
        return f"{value / 1e3:,.0f} kB"
    return f"{value / 1e6:,.1f} MB"


def _cpu(daemon: float | None, worker: float | None) -> str:
    if daemon is None and worker is None:
        return "-"
    return f"{_num(daemon)} / {_num(worker)}"


def _short(text: str, width: int = STATUS_WIDTH) -> str:
    text = " ".join(text.split()).replace("|", "/")
    return text if len(text) <= width else text[: width - 1] + "…"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        padded = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if r else ("-" * (w + 2)) for w, r in zip(widths, right, strict=True))
    return "\n".join([line(header), rule + "|", *(line(r) for r in rows)])


def results_table(results: Sequence[Result]) -> str:
    header = [
        "id",
        "workload",
        "status",
        "reps",
        "runs/s",
        "steps/s",
        "ms/step",
        "÷ floor",
        "p50 ms",
        "p99 ms",
        "executions",
        "bytes to / from workers",
        "daemon RSS MB",
        "worker RSS MB",
        "CPU % daemon/worker",
        "others' CPU",
    ]
    rows = []
    for r in results:
        rows.append(
            [
                r.key,
                r.workload,
                _short(r.status),
                str(r.reps) if r.reps else "-",
                _num(r.runs_per_s, 1 if (r.runs_per_s or 0) < 100 else 0),
                _num(r.steps_per_s),
                _ms(r.per_step_ms),
                _num(r.floor_ratio, 2),
                _ms(r.p50_ms),
                _ms(r.p99_ms),
                _num(r.executions),
                f"{_bytes(r.memo_bytes)} / {_bytes(r.result_bytes)}",
                _mb(r.daemon_rss),
                _mb(r.worker_rss),
                _cpu(r.daemon_cpu_pct, r.worker_cpu_pct),
                "-" if r.other_cores is None or not r.reps else f"{r.other_cores:.2f}",
            ]
        )
    right = [False, False, False] + [True] * (len(header) - 3)
    return _table(header, rows, right)


def threads_table(results: Sequence[Result]) -> str | None:
    """The daemon's CPU per step by kind of thread: the writer and the readers share the GIL with the
    event loop, so their cost is the loop's latency too."""
    kinds = list(THREAD_KINDS)
    shown = [r for r in results if r.daemon_thread_us_per_step]
    if not shown:
        return None
    rows = []
    for r in shown:
        per = r.daemon_thread_us_per_step
        rows.append([r.key, *(_num(per.get(kind), 1) for kind in kinds), _num(sum(per.values()), 1)])
    return _table(["id", *kinds, "all threads"], rows, [False] + [True] * (len(kinds) + 1))


def targets_table(results: Sequence[Result]) -> str:
    rows = [[r.key, c.target, c.measured, c.verdict] for r in results for c in r.checks]
    return _table(["id", "target", "measured", "verdict"], rows, [False, False, False, False])


def floors_table(floors: Floors) -> str:
    grpc_rate = f"{floors.grpc_round_trips_per_s:,.0f} round trips/s"
    sqlite_rate = f"{floors.sqlite_commits_per_s:,.0f} commits/s"
    rows = [
        ["gRPC bidirectional stream, 2 processes", grpc_rate, _ms(floors.round_trip_ms)],
        ["SQLite WAL synchronous=FULL, 1 INSERT/commit", sqlite_rate, _ms(floors.commit_ms)],
        ["one step's floor (round trip + commit)", f"{floors.steps_per_s:,.0f} steps/s", _ms(floors.step_ms)],
    ]
    return _table(["floor", "rate", "ms each"], rows, [False, True, True])


def micro_table(micro: Sequence[MicroResult]) -> str:
    rows = [
        [
            m.name,
            m.what,
            _num(m.rust_ops_per_s) if m.rust_ops_per_s is not None else m.note or "-",
            _num(m.python_ops_per_s),
            "-" if m.ratio is None else f"{m.ratio:.2f}×",
        ]
        for m in micro
    ]
    return _table(
        ["Rust core call", "what one op is", "Rust ops/s", "Python ops/s", "Rust ÷ Python"],
        rows,
        [False, False, True, True, True],
    )


def w2_points(results: Sequence[Result], prefix: str = "W2-") -> list[tuple[int, float]]:
    """(steps per run, ms per step) of the W2 rows (``prefix`` "W2c-": those with checkpointing)."""
    points = []
    for r in results:
        if r.key.startswith(prefix) and r.per_step_ms is not None:
            points.append((int(r.key.split("-")[1]), r.per_step_ms))
    return sorted(points)


def w2_cpu_points(results: Sequence[Result]) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """CPU ms per step of the daemon and of the worker, against steps per run (W2)."""
    daemon, worker = [], []
    for r in results:
        if r.key.startswith("W2-") and r.per_step_ms is not None:
            size = int(r.key.split("-")[1])
            if r.daemon_cpu_pct is not None:
                daemon.append((size, r.per_step_ms * r.daemon_cpu_pct / 100))
            if r.worker_cpu_pct is not None:
                worker.append((size, r.per_step_ms * r.worker_cpu_pct / 100))
    return sorted(daemon), sorted(worker)


def ascii_plot(results: Sequence[Result], floors: Floors, width: int = 50) -> str:
    """Per-step cost against steps per run as text bars (the SVG is the real plot)."""
    series = [(label, w2_points(results, prefix)) for label, prefix in (("W2 ", "W2-"), ("W2c", "W2c-"))]
    costs = [cost for _, points in series for _, cost in points]
    if not costs:
        return ""
    top = max(max(costs), floors.step_ms * 1.5)
    lines = ["per-step cost (ms) against steps per run, W2 and W2c (checkpointing=True); '|' = 1.5 × floor"]
    mark = round(width * floors.step_ms * 1.5 / top)
    for label, points in series:
        for size, cost in points:
            bar = list("#" * max(1, round(width * cost / top)) + " " * width)[: width + 1]
            if bar[mark] == " ":
                bar[mark] = "|"
            lines.append(f"{label} {size:>6,} steps {''.join(bar)} {cost:.3f}")
    return "\n".join(lines)


def notes(results: Sequence[Result]) -> str:
    lines = []
    for r in results:
        if r.latency:
            lines.append(f"- {r.key}: latency = {r.latency}")
        if len(r.status) > STATUS_WIDTH:
            lines.append(f"- {r.key}: {' '.join(r.status.split())}")
        lines.extend(f"- {r.key}: {note}" for note in r.notes)
    return "\n".join(lines)


def render(
    results: Sequence[Result],
    floors: Floors,
    micro: Sequence[MicroResult],
    problems: Sequence[str],
    other_cores: float,
) -> str:
    quiet = "a quiet machine" if other_cores < QUIET_CORES else "a BUSY machine: figures are pessimistic"
    parts = [
        f"Other processes kept {other_cores:.2f} cores busy on average during the run ({quiet}); "
        "the 'others' CPU' column gives it per workload.",
        "### Floors (measured in this run)",
        floors_table(floors),
        "### Workloads (medians over the repetitions; '÷ floor' = ms/step ÷ one step's floor)",
        results_table(results),
    ]
    threads = threads_table(results)
    if threads:
        parts += ["### The daemon's CPU per step by thread (µs, all repetitions)", threads]
    parts += [
        "### Targets",
        targets_table(results),
    ]
    plot = ascii_plot(results, floors)
    if plot:
        parts.append(f"```\n{plot}\n```")
    if micro:
        parts += ["### Rust core against a pure-Python reference (called from Python)", micro_table(micro)]
        if problems:
            parts.append("Rust and Python DISAGREE on: " + "; ".join(problems))
    text = notes(results)
    if text:
        parts += ["### Notes", text]
    return "\n\n".join(parts) + "\n"


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# ---- SVG -----------------------------------------------------------------------------------------


def svg_plot(results: Sequence[Result], floors: Floors) -> str | None:
    """Per-step cost against steps per run (log x), W2 and W2c, with the floor and the targets' lines."""
    points = w2_points(results)
    checkpointed = w2_points(results, "W2c-")
    if not points:
        return None
    width, height = 680, 420
    left, right, top, bottom = 70, 200, 40, 60
    plot_w, plot_h = width - left - right, height - top - bottom
    sizes = [s for s, _ in points]
    x_min, x_max = math.log10(min(sizes)), math.log10(max(sizes))
    if x_max == x_min:
        x_max = x_min + 1
    y_max = max(max(c for _, c in points + checkpointed), floors.step_ms * 1.5) * 1.15

    def x(size: float) -> float:
        return left + plot_w * (math.log10(size) - x_min) / (x_max - x_min)

    def y(cost: float) -> float:
        return top + plot_h * (1 - cost / y_max)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="22" font-size="14" font-weight="bold">'
        "durably: per-step cost against steps per run (W2)</text>",
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="black"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="black"/>',
    ]
    for size in sizes:
        out.append(
            f'<line x1="{x(size):.1f}" y1="{top + plot_h}" x2="{x(size):.1f}" y2="{top + plot_h + 5}" stroke="black"/>'
        )
        out.append(f'<text x="{x(size):.1f}" y="{top + plot_h + 20}" text-anchor="middle">{size:,}</text>')
    out.append(f'<text x="{left + plot_w / 2}" y="{height - 15}" text-anchor="middle">steps per run (log scale)</text>')
    step = _nice_step(y_max / 5)
    tick = 0.0
    while tick <= y_max:
        out.append(f'<line x1="{left - 5}" y1="{y(tick):.1f}" x2="{left + plot_w}" y2="{y(tick):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 8}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick:g}</text>')
        tick += step
    out.append(
        f'<text x="18" y="{top + plot_h / 2}" text-anchor="middle" transform="rotate(-90 18 {top + plot_h / 2})">'
        "ms per step</text>"
    )
    lines = [
        (floors.step_ms, "#2a7", "floor: round trip + commit"),
        (floors.step_ms * 1.5, "#e80", "target: 1.5 × floor"),
    ]
    small = dict(points).get(10)
    if small is not None:
        lines.append((small * 1.5, "#a3c", "target: 1.5 × 10-step cost"))
    for value, color, label in lines:
        out.append(
            f'<line x1="{left}" y1="{y(value):.1f}" x2="{left + plot_w}" y2="{y(value):.1f}" '
            f'stroke="{color}" stroke-dasharray="6 4"/>'
        )
        out.append(f'<text x="{left + plot_w + 6}" y="{y(value) + 4:.1f}" fill="{color}">{label}</text>')
    daemon_cpu, worker_cpu = w2_cpu_points(results)
    series = [
        (points, "#15c", "2", "", "wall time per step"),
        (checkpointed, "#0a8", "2", "", "wall time per step, checkpointing=True"),
        (worker_cpu, "#c33", "1.5", ' stroke-dasharray="2 3"', "worker CPU per step"),
        (daemon_cpu, "#555", "1.5", ' stroke-dasharray="2 3"', "daemon CPU per step"),
    ]
    for n, (line, color, stroke, dash, label) in enumerate(series):
        if not line:
            continue
        path = " ".join(f"{'M' if i == 0 else 'L'}{x(s):.1f},{y(c):.1f}" for i, (s, c) in enumerate(line))
        out.append(f'<path d="{path}" fill="none" stroke="{color}" stroke-width="{stroke}"{dash}/>')
        legend_y = top + 8 + 16 * n
        out.append(
            f'<line x1="{left + 12}" y1="{legend_y}" x2="{left + 36}" y2="{legend_y}" '
            f'stroke="{color}" stroke-width="{stroke}"{dash}/>'
        )
        out.append(f'<text x="{left + 42}" y="{legend_y + 4}" fill="{color}">{label}</text>')
    for dots, color in ((points, "#15c"), (checkpointed, "#0a8")):
        for s, c in dots:
            out.append(f'<circle cx="{x(s):.1f}" cy="{y(c):.1f}" r="4" fill="{color}"/>')
            out.append(f'<text x="{x(s):.1f}" y="{y(c) - 9:.1f}" text-anchor="middle" fill="{color}">{c:.2f}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _nice_step(raw: float) -> float:
    if raw <= 0:
        return 1.0
    exponent = math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if raw <= factor * 10**exponent:
            return float(factor * 10**exponent)
    return float(10 ** (exponent + 1))
