"""Every SQL statement the daemon runs: reads and the small write operations it commits.

Write operations are plain functions of a connection, run inside the writer's
transaction (see `writer.py`); the engine composes them, the store never decides.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from durably_server.model import (
    Event,
    Failure,
    FunctionSpec,
    QueueItem,
    RunRecord,
    RunStatus,
    StepRecord,
    StepStatus,
)

_RUN_COLUMNS = "id, app_id, function_id, event_id, status, output, error, created_ms, started_ms, ended_ms"


# ---- writes -------------------------------------------------------------------------------


def upsert_functions(conn: sqlite3.Connection, specs: Sequence[FunctionSpec], now: int) -> None:
    conn.executemany(
        "INSERT INTO functions (app_id, id, config, updated_ms) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (app_id, id) DO UPDATE SET config = excluded.config, updated_ms = excluded.updated_ms",
        [(s.app_id, s.id, s.to_json(), now) for s in specs],
    )


def insert_event(conn: sqlite3.Connection, event: Event, now: int) -> bool:
    """Insert `event`; False when its id was already stored (a duplicate send)."""
    cur = conn.execute(
        "INSERT OR IGNORE INTO events (id, name, data, ts_ms, received_ms) VALUES (?, ?, ?, ?, ?)",
        (event.id, event.name, event.data_json, event.ts_ms, now),
    )
    return cur.rowcount == 1


def insert_run(conn: sqlite3.Connection, run: RunRecord, parent: tuple[str, str] | None = None) -> QueueItem:
    """Insert a queued run together with its first execution (`parent`: the invoking run and step)."""
    parent_run, parent_step = parent or (None, None)
    conn.execute(
        "INSERT INTO runs (id, app_id, function_id, event_id, status, created_ms, parent_run_id, parent_step)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (run.id, run.app_id, run.function_id, run.event_id, run.status.value, run.created_ms, parent_run, parent_step),
    )
    item = enqueue(conn, run.id, run.app_id, run.function_id, 0, run.created_ms)
    assert item is not None
    return item


def enqueue(
    conn: sqlite3.Connection,
    run_id: str,
    app_id: str,
    function_id: str,
    attempt: int,
    available_ms: int,
    target: str = "",
) -> QueueItem | None:
    """Queue an execution of a run that has not ended; None (nothing queued) once it has."""
    cur = conn.execute(
        "INSERT INTO queue (run_id, attempt, available_ms, target) SELECT ?, ?, ?, ? FROM runs"
        " WHERE id = ? AND status NOT IN ('completed', 'failed', 'cancelled')",
        (run_id, attempt, available_ms, target, run_id),
    )
    if cur.rowcount != 1 or cur.lastrowid is None:
        return None
    return QueueItem(cur.lastrowid, run_id, app_id, function_id, attempt, available_ms, target)


def enqueue_discovery(
    conn: sqlite3.Connection, run_id: str, app_id: str, function_id: str, now: int
) -> QueueItem | None:
    """Queue a discovery unless the run has one queued or running (its row stays until it reports).

    At most one discovery per run at a time: two could both run the same new step inline.
    """
    if conn.execute("SELECT 1 FROM queue WHERE run_id = ? AND target = ''", (run_id,)).fetchone():
        return None
    return enqueue(conn, run_id, app_id, function_id, 0, now)


def has_pending(conn: sqlite3.Connection, run_id: str) -> bool:
    """Whether the run still waits for planned steps or for steps the executor completes."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM timers WHERE run_id = ?)"
        " OR EXISTS (SELECT 1 FROM queue WHERE run_id = ? AND target != '')",
        (run_id, run_id),
    ).fetchone()
    return bool(row[0])


def dequeue(conn: sqlite3.Connection, item_ids: Sequence[int]) -> None:
    """Remove these queued executions (ids of no row, as a wake-up's negative one, are skipped)."""
    rows = [(item_id,) for item_id in item_ids if item_id > 0]
    if rows:
        conn.executemany("DELETE FROM queue WHERE id = ?", rows)


_START = "MIN(:now, COALESCE((SELECT MIN(started_ms) FROM steps WHERE run_id = :run), :now))"
"""A run's start given that it started by `:now`: no later than its first step either. A start mark is
not awaited, so one lost in a crash (or still waiting to be stored again after a failed commit) is
marked anew only at the run's next lease; its steps still say when it was running."""


def mark_started(conn: sqlite3.Connection, run_id: str, now: int) -> None:
    """A run started at `now`: running if it was queued, and `now` its start unless it has an earlier one
    (a mark stored late, after its commit failed, still corrects the end time a finished run took as its
    start; see `_START`)."""
    conn.execute(
        f"UPDATE runs SET started_ms = MIN(COALESCE(started_ms, :now), {_START}),"
        " status = CASE status WHEN 'queued' THEN 'running' ELSE status END WHERE id = :run",
        {"now": now, "run": run_id},
    )


def insert_steps(conn: sqlite3.Connection, run_id: str, steps: Iterable[StepRecord]) -> None:
    """Record step outcomes of one run after those it already has (`seq` keeps the order)."""
    first_seq = conn.execute("SELECT COALESCE(MAX(seq), -1) + 1 FROM steps WHERE run_id = ?", (run_id,)).fetchone()[0]
    conn.executemany(
        "INSERT INTO steps (run_id, id, seq, name, idx, status, output, error, attempts, started_ms, ended_ms)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                s.run_id,
                s.id,
                first_seq + n,
                s.name,
                s.index,
                s.status.value,
                s.output_json,
                s.error.to_json() if s.error else None,
                s.attempts,
                s.started_ms,
                s.ended_ms,
            )
            for n, s in enumerate(steps)
        ],
    )


def finish_run(
    conn: sqlite3.Connection,
    run_id: str,
    status: RunStatus,
    now: int,
    output_json: bytes | None = None,
    error: Failure | None = None,
) -> tuple[str, str] | bool:
    """Move a run that has not ended to its final status and drop the work it still had queued: the
    invoking run and step it reports to, True if none, False if the run had ended already."""
    row = conn.execute(
        "UPDATE runs SET status = :status, output = :output, error = :error, ended_ms = :now,"
        f" started_ms = COALESCE(started_ms, {_START})"
        " WHERE id = :run AND status NOT IN ('completed', 'failed', 'cancelled') RETURNING parent_run_id, parent_step",
        {
            "status": status.value,
            "output": output_json,
            "error": error.to_json() if error else None,
            "now": now,
            "run": run_id,
        },
    ).fetchone()
    if row is None:
        return False
    for table in ("queue", "timers", "waits"):
        conn.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))
    return (row[0], row[1]) if row[0] else True


def set_status(conn: sqlite3.Connection, run_id: str, status: RunStatus) -> None:
    """Show a run as running, sleeping or waiting (never touches a run that has ended)."""
    conn.execute(
        "UPDATE runs SET status = ? WHERE id = ? AND status NOT IN ('completed', 'failed', 'cancelled')",
        (status.value, run_id),
    )


@dataclass(frozen=True, slots=True)
class Timer:
    run_id: str
    step_id: str
    name: str
    index: int
    kind: str
    due_ms: int


def insert_timer(conn: sqlite3.Connection, timer: Timer) -> int:
    """Store `timer`; returns its row id, all the daemon keeps of it in memory until it is due."""
    cur = conn.execute(
        "INSERT INTO timers (run_id, step_id, name, idx, kind, due_ms) VALUES (?, ?, ?, ?, ?, ?)",
        (timer.run_id, timer.step_id, timer.name, timer.index, timer.kind, timer.due_ms),
    )
    assert cur.lastrowid is not None
    return cur.lastrowid


def timer_by_id(conn: sqlite3.Connection, timer_id: int) -> Timer | None:
    """The timer with this row id; None once its step was completed otherwise (a match, a child's end)."""
    row = conn.execute(
        "SELECT run_id, step_id, name, idx, kind, due_ms FROM timers WHERE id = ?", (timer_id,)
    ).fetchone()
    return None if row is None else Timer(*row)


def take_timer(conn: sqlite3.Connection, run_id: str, step_id: str) -> Timer | None:
    """Remove and return the timer of a step: whoever takes it completes the step, once."""
    row = conn.execute(
        "SELECT run_id, step_id, name, idx, kind, due_ms FROM timers WHERE run_id = ? AND step_id = ?",
        (run_id, step_id),
    ).fetchone()
    if row is None:
        return None
    drop_timer(conn, run_id, step_id)
    conn.execute("DELETE FROM waits WHERE run_id = ? AND step_id = ?", (run_id, step_id))
    return Timer(*row)


def lone_sleeps(conn: sqlite3.Connection, timer_ids: Sequence[int], kind: str) -> list[tuple[int, str, str, Timer]]:
    """Of these timers, those of `kind` (the sleeps) whose run is asleep on nothing else: no other timer, no
    wait, no queued execution. As (timer id, app id, function id, timer)."""
    rows = conn.execute(
        # CROSS JOIN keeps this order (the ids, then their timers): the planner would otherwise walk
        # every sleeping run by the status index.
        "SELECT t.id, r.app_id, r.function_id, t.run_id, t.step_id, t.name, t.idx, t.kind, t.due_ms"
        " FROM json_each(?) j CROSS JOIN timers t ON t.id = j.value CROSS JOIN runs r ON r.id = t.run_id"
        " WHERE t.kind = ?"
        " AND r.status = 'sleeping'"
        " AND NOT EXISTS (SELECT 1 FROM timers o WHERE o.run_id = t.run_id AND o.id != t.id)"
        " AND NOT EXISTS (SELECT 1 FROM waits w WHERE w.run_id = t.run_id)"
        " AND NOT EXISTS (SELECT 1 FROM queue q WHERE q.run_id = t.run_id)",
        (_json_list(timer_ids), kind),
    )
    return [(row[0], row[1], row[2], Timer(*row[3:])) for row in rows]


def drop_timer(conn: sqlite3.Connection, run_id: str, step_id: str) -> bool:
    """Remove the timer of a step that has no wait (a sleep); whether there was one to remove."""
    return conn.execute("DELETE FROM timers WHERE run_id = ? AND step_id = ?", (run_id, step_id)).rowcount > 0


def load_timers(conn: sqlite3.Connection) -> list[tuple[int, int, str]]:
    """(due time, row id, kind) of every timer."""
    return conn.execute("SELECT due_ms, id, kind FROM timers").fetchall()


def timer_dues(conn: sqlite3.Connection, timer_ids: Sequence[int]) -> list[tuple[int, int]]:
    """(due time, row id) of those of these timers still stored."""
    return conn.execute(
        "SELECT t.due_ms, t.id FROM json_each(?) j CROSS JOIN timers t ON t.id = j.value", (_json_list(timer_ids),)
    ).fetchall()


@dataclass(frozen=True, slots=True)
class Wait:
    run_id: str
    step_id: str  # '' for a cancel_on rule
    kind: str  # 'wait' or 'cancel'
    event_name: str
    key_path: str
    key_value: str
    expression: str


def insert_wait(conn: sqlite3.Connection, wait: Wait) -> None:
    conn.execute(
        "INSERT INTO waits (run_id, step_id, kind, event_name, key_path, key_value, expression)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (wait.run_id, wait.step_id, wait.kind, wait.event_name, wait.key_path, wait.key_value, wait.expression),
    )


def find_waits(conn: sqlite3.Connection, event_name: str, key_path: str, key_value: str) -> list[Wait]:
    rows = conn.execute(
        "SELECT run_id, step_id, kind, event_name, key_path, key_value, expression FROM waits"
        " WHERE event_name = ? AND key_path = ? AND key_value = ?",
        (event_name, key_path, key_value),
    ).fetchall()
    return [Wait(*row) for row in rows]


def wait_paths(conn: sqlite3.Connection) -> list[tuple[str, str, int]]:
    """(event name, key path, how many waits) — which lookups an incoming event needs."""
    rows = conn.execute("SELECT event_name, key_path, COUNT(*) FROM waits GROUP BY event_name, key_path")
    return [(name, path, count) for name, path, count in rows]


# ---- reads --------------------------------------------------------------------------------


def load_functions(conn: sqlite3.Connection) -> list[FunctionSpec]:
    rows = conn.execute("SELECT app_id, id, config FROM functions").fetchall()
    return [FunctionSpec.from_row(*row) for row in rows]


def load_queue(conn: sqlite3.Connection) -> list[tuple[QueueItem, bool]]:
    """Every queued execution, oldest first, with whether its run has yet to start."""
    rows = conn.execute(
        "SELECT q.id, q.run_id, r.app_id, r.function_id, q.attempt, q.available_ms, q.target, r.status = 'queued'"
        " FROM queue q JOIN runs r ON r.id = q.run_id ORDER BY q.id"
    ).fetchall()
    return [(QueueItem(*row[:7]), bool(row[7])) for row in rows]


def _run(row: tuple[Any, ...]) -> RunRecord:
    rid, app_id, function_id, event_id, status, output, error, created, started, ended = row
    return RunRecord(
        id=rid,
        app_id=app_id,
        function_id=function_id,
        event_id=event_id,
        status=RunStatus(status),
        created_ms=created,
        started_ms=started or 0,
        ended_ms=ended or 0,
        output_json=output,
        error=Failure.from_json(error) if error is not None else None,
    )


_STEP_COLUMNS = "id, name, idx, status, output, error, attempts, started_ms, ended_ms"


def _step(run_id: str, row: Sequence[Any]) -> StepRecord:
    sid, name, idx, status, output, error, attempts, started, ended = row
    return StepRecord(
        run_id=run_id,
        id=sid,
        name=name,
        index=idx,
        status=StepStatus(status),
        output_json=output,
        error=Failure.from_json(error) if error is not None else None,
        attempts=attempts,
        started_ms=started or 0,
        ended_ms=ended or 0,
    )


_IN_LIST = "IN (SELECT value FROM json_each(?))"
"""A list of values as one parameter (a JSON array): one statement text whatever the list's length, so
SQLite and the statement cache of each connection hold one prepared statement, not one per length."""


def _json_list(values: Sequence[str] | Sequence[int]) -> str:
    return json.dumps(list(values))


def load_steps(conn: sqlite3.Connection, run_id: str, ids: Sequence[str]) -> list[StepRecord]:
    """The run's steps with these ids, in record order."""
    query = f"SELECT {_STEP_COLUMNS} FROM steps WHERE run_id = ? AND id {_IN_LIST} ORDER BY seq"
    return [_step(run_id, row) for row in conn.execute(query, (run_id, _json_list(ids)))]


def load_runs(conn: sqlite3.Connection, run_ids: Sequence[str]) -> list[RunRecord]:
    """These runs (those in the store) with their steps, in two queries however many they are."""
    ids = _json_list(run_ids)
    rows = conn.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id {_IN_LIST}", (ids,))
    runs = {run.id: run for run in map(_run, rows)}
    steps = f"SELECT run_id, {_STEP_COLUMNS} FROM steps WHERE run_id {_IN_LIST} ORDER BY run_id, seq"
    for row in conn.execute(steps, (ids,)):
        runs[row[0]].steps.append(_step(row[0], row[1:]))
    return list(runs.values())


def load_run(conn: sqlite3.Connection, run_id: str, first_step: int = 0) -> RunRecord | None:
    """The run with its steps from the `first_step`-th on (a watcher has those before), or None."""
    row = conn.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        return None
    run = _run(row)
    query = f"SELECT {_STEP_COLUMNS} FROM steps WHERE run_id = ? AND seq >= ? ORDER BY seq"
    run.steps.extend(_step(run_id, step) for step in conn.execute(query, (run_id, first_step)))
    return run


def run_items(conn: sqlite3.Connection, run_ids: Sequence[str]) -> list[tuple[str, str, str]]:
    """What these runs wait for, as (run id, kind, step id): kind "queued" with the target of each queued
    execution ('' for a discovery), kind "timer" with the step of each timer (sleeps, waits, invokes)."""
    ids = _json_list(run_ids)
    return conn.execute(
        f"SELECT run_id, 'queued', target FROM queue WHERE run_id {_IN_LIST}"
        f" UNION ALL SELECT run_id, 'timer', step_id FROM timers WHERE run_id {_IN_LIST}",
        (ids, ids),
    ).fetchall()


def load_unfinished_runs(conn: sqlite3.Connection) -> list[RunRecord]:
    rows = conn.execute(
        f"SELECT {_RUN_COLUMNS} FROM runs WHERE status NOT IN ('completed', 'failed', 'cancelled')"
    ).fetchall()
    return [_run(row) for row in rows]


def load_events(conn: sqlite3.Connection, event_ids: Sequence[str]) -> dict[str, Event]:
    rows = conn.execute(f"SELECT id, name, data, ts_ms FROM events WHERE id {_IN_LIST}", (_json_list(event_ids),))
    return {row[0]: Event(*row) for row in rows}


@dataclass(frozen=True, slots=True)
class RunFilter:
    function_id: str = ""
    event_id: str = ""
    status: RunStatus | None = None
    before_id: str = ""
    limit: int = 100


def list_runs(conn: sqlite3.Connection, f: RunFilter) -> list[RunRecord]:
    where, args = [], []
    if f.function_id:
        where.append("function_id = ?")
        args.append(f.function_id)
    if f.event_id:
        where.append("event_id = ?")
        args.append(f.event_id)
    if f.status is not None:
        where.append("status = ?")
        args.append(f.status.value)
    if f.before_id:
        where.append("id < ?")
        args.append(f.before_id)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    rows = conn.execute(
        f"SELECT {_RUN_COLUMNS} FROM runs{clause} ORDER BY id DESC LIMIT ?", (*args, f.limit)
    ).fetchall()
    return [_run(row) for row in rows]
