"""The schema, as numbered migrations applied in order and tracked in `PRAGMA user_version`.

A migration is appended, never edited: a database created by an older daemon is
brought forward by running the migrations it has not seen.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import sqlite_utils


def _m001_initial(db: sqlite_utils.Database) -> None:
    db.table("events").create(
        {"id": str, "name": str, "data": bytes, "ts_ms": int, "received_ms": int},
        pk="id",
    )
    db.table("functions").create(
        {"app_id": str, "id": str, "config": str, "updated_ms": int},
        pk=("app_id", "id"),
    )
    db.table("runs").create(
        {
            "id": str,
            "app_id": str,
            "function_id": str,
            "event_id": str,
            "status": str,
            "output": bytes,
            "error": bytes,
            "created_ms": int,
            "started_ms": int,
            "ended_ms": int,
        },
        pk="id",
        not_null={"app_id", "function_id", "event_id", "status", "created_ms"},
    )
    db.table("runs").create_index(["function_id", "id"])
    db.table("runs").create_index(["event_id"])
    db.table("runs").create_index(["status", "id"])
    # One row per finished step outcome; `seq` keeps the order they were recorded in.
    db.table("steps").create(
        {
            "run_id": str,
            "id": str,
            "seq": int,
            "name": str,
            "idx": int,
            "status": str,
            "output": bytes,
            "error": bytes,
            "attempts": int,
            "started_ms": int,
            "ended_ms": int,
        },
        pk=("run_id", "id"),
    )
    db.table("steps").create_index(["run_id", "seq"], unique=True)
    # Work the scheduler owes: an execution per row, dispatched when `available_ms` has come.
    db.execute(
        "CREATE TABLE queue (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL,"
        " attempt INTEGER NOT NULL, available_ms INTEGER NOT NULL)"
    )
    db.table("queue").create_index(["run_id"])


def _m002_planned_steps(db: sqlite_utils.Database) -> None:
    # A queued execution may target one planned step (parallel steps); '' means discovery.
    db.execute("ALTER TABLE queue ADD COLUMN target TEXT NOT NULL DEFAULT ''")


def _m003_time_and_coordination(db: sqlite_utils.Database) -> None:
    # Invoked runs point at the step of the run that waits for them.
    db.execute("ALTER TABLE runs ADD COLUMN parent_run_id TEXT")
    db.execute("ALTER TABLE runs ADD COLUMN parent_step TEXT")
    # Steps the executor completes itself (sleeps, waits, invokes): wake or give up at due_ms.
    db.execute(
        "CREATE TABLE timers (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, step_id TEXT NOT NULL,"
        " name TEXT NOT NULL, idx INTEGER NOT NULL, kind TEXT NOT NULL, due_ms INTEGER NOT NULL)"
    )
    db.table("timers").create_index(["run_id"])
    # Runs waiting for an event (a wait step, or a cancel_on rule), indexed by what an incoming
    # event must carry, so finding the waits an event matches never scans them all.
    db.execute(
        "CREATE TABLE waits (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, step_id TEXT NOT NULL,"
        " kind TEXT NOT NULL, event_name TEXT NOT NULL, key_path TEXT NOT NULL, key_value TEXT NOT NULL,"
        " expression TEXT NOT NULL)"
    )
    db.table("waits").create_index(["event_name", "key_path", "key_value"])
    db.table("waits").create_index(["run_id"])


def _m004_commit_counter(db: sqlite_utils.Database) -> None:
    # Counts the writer's transactions: each one sets it, so a COMMIT that reported an error can be told
    # apart from one that did not happen (store/writer.py `_made_anyway`).
    db.execute("CREATE TABLE commits (seq INTEGER NOT NULL)")
    db.execute("INSERT INTO commits (seq) VALUES (0)")


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _m001_initial,
    _m002_planned_steps,
    _m003_time_and_coordination,
    _m004_commit_counter,
]


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the migrations this file has not seen; return the schema version."""
    db = sqlite_utils.Database(conn)
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise RuntimeError(f"database schema version {version} is newer than this daemon knows ({len(MIGRATIONS)})")
    for number, migration in enumerate(MIGRATIONS[version:], start=version + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            migration(db)
            conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return len(MIGRATIONS)
