"""Every SQL statement the daemon runs: reads and the small write operations it commits.

Write operations are plain functions of a connection, run inside the writer's
transaction (see `writer.py`); the engine composes them, the store never decides.
"""

from __future__ import annotations

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


def insert_run(conn: sqlite3.Connection, run: RunRecord) -> QueueItem:
    """Insert a queued run together with its first execution."""
    conn.execute(
        "INSERT INTO runs (id, app_id, function_id, event_id, status, created_ms) VALUES (?, ?, ?, ?, ?, ?)",
        (run.id, run.app_id, run.function_id, run.event_id, run.status.value, run.created_ms),
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


def dequeue(conn: sqlite3.Connection, item_ids: Sequence[int]) -> None:
    conn.executemany("DELETE FROM queue WHERE id = ?", [(item_id,) for item_id in item_ids])


def mark_started(conn: sqlite3.Connection, run_id: str, now: int) -> None:
    conn.execute("UPDATE runs SET status = 'running', started_ms = ? WHERE id = ? AND status = 'queued'", (now, run_id))


def insert_steps(conn: sqlite3.Connection, first_seq: int, steps: Iterable[StepRecord]) -> None:
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
) -> bool:
    """Move a run that has not ended to its final status; drop the work it still had queued."""
    cur = conn.execute(
        "UPDATE runs SET status = ?, output = ?, error = ?, ended_ms = ?,"
        " started_ms = COALESCE(started_ms, ?) WHERE id = ? AND status NOT IN ('completed', 'failed', 'cancelled')",
        (status.value, output_json, error.to_json() if error else None, now, now, run_id),
    )
    conn.execute("DELETE FROM queue WHERE run_id = ?", (run_id,))
    return cur.rowcount == 1


# ---- reads --------------------------------------------------------------------------------


def load_functions(conn: sqlite3.Connection) -> list[FunctionSpec]:
    rows = conn.execute("SELECT app_id, id, config FROM functions").fetchall()
    return [FunctionSpec.from_row(*row) for row in rows]


def load_queue(conn: sqlite3.Connection) -> list[QueueItem]:
    rows = conn.execute(
        "SELECT q.id, q.run_id, r.app_id, r.function_id, q.attempt, q.available_ms, q.target"
        " FROM queue q JOIN runs r ON r.id = q.run_id ORDER BY q.id"
    ).fetchall()
    return [QueueItem(*row) for row in rows]


def load_run_queue(conn: sqlite3.Connection, run_id: str) -> list[str]:
    """The targets of a run's queued executions ('' for a discovery)."""
    return [row[0] for row in conn.execute("SELECT target FROM queue WHERE run_id = ?", (run_id,))]


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


def load_steps(conn: sqlite3.Connection, run_id: str) -> list[StepRecord]:
    rows = conn.execute(
        "SELECT id, name, idx, status, output, error, attempts, started_ms, ended_ms"
        " FROM steps WHERE run_id = ? ORDER BY seq",
        (run_id,),
    ).fetchall()
    return [
        StepRecord(
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
        for sid, name, idx, status, output, error, attempts, started, ended in rows
    ]


def load_run(conn: sqlite3.Connection, run_id: str, with_steps: bool = True) -> RunRecord | None:
    row = conn.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        return None
    run = _run(row)
    if with_steps:
        run.steps = load_steps(conn, run_id)
    return run


def load_unfinished_runs(conn: sqlite3.Connection) -> list[RunRecord]:
    rows = conn.execute(
        f"SELECT {_RUN_COLUMNS} FROM runs WHERE status NOT IN ('completed', 'failed', 'cancelled')"
    ).fetchall()
    return [_run(row) for row in rows]


def load_event(conn: sqlite3.Connection, event_id: str) -> Event | None:
    row = conn.execute("SELECT id, name, data, ts_ms FROM events WHERE id = ?", (event_id,)).fetchone()
    return Event(*row) if row else None


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
