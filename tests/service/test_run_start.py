"""A run's start time as the store records it: never later than its first step, however late its start
mark arrives (a mark is not awaited: one lost in a crash or a failed commit is stored anew later); a
running-again mark stored with the change that ends the run costs no statement."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from durably_server.engine.marks import store_marks
from durably_server.model import Event, RunRecord, RunStatus, StepRecord, StepStatus
from durably_server.store import records as sql
from durably_server.store.schema import migrate


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    migrate(conn)
    sql.insert_event(conn, Event("ev-1", "demo/start", b"{}", 1), 1)
    sql.insert_run(conn, RunRecord("run-1", "app", "fn", "ev-1", RunStatus.QUEUED, 1))
    return conn


def _step(conn: sqlite3.Connection, name: str, started_ms: int) -> None:
    step = StepRecord("run-1", f"id-{name}", name, 0, StepStatus.COMPLETED, b"1", None, 1, started_ms, started_ms + 1)
    sql.insert_steps(conn, "run-1", [step])


def _start(conn: sqlite3.Connection) -> tuple[str, int]:
    status, started_ms = conn.execute("SELECT status, started_ms FROM runs WHERE id = 'run-1'").fetchone()
    return status, started_ms


def test_a_start_mark_sets_the_start_and_a_later_one_keeps_it(conn: sqlite3.Connection) -> None:
    sql.mark_started(conn, "run-1", 100)
    sql.mark_started(conn, "run-1", 300)
    assert _start(conn) == ("running", 100)


def test_a_start_marked_after_the_run_stored_steps_is_its_first_step(conn: sqlite3.Connection) -> None:
    _step(conn, "b", 250)
    _step(conn, "a", 200)
    sql.mark_started(conn, "run-1", 900)  # its first mark was lost: marked again at its next lease
    assert _start(conn) == ("running", 200)


def test_a_run_ending_without_a_start_mark_started_with_its_first_step(conn: sqlite3.Connection) -> None:
    _step(conn, "a", 200)
    assert sql.finish_run(conn, "run-1", RunStatus.COMPLETED, 900, b"{}") is True
    assert _start(conn) == ("completed", 200)


def test_a_run_ending_with_no_step_and_no_start_mark_started_when_it_ended(conn: sqlite3.Connection) -> None:
    assert sql.finish_run(conn, "run-1", RunStatus.CANCELLED, 900) is True
    assert _start(conn) == ("cancelled", 900)


@pytest.mark.parametrize("ending", [False, True], ids=["goes-on", "ends"])
def test_a_running_again_mark_is_stored_unless_its_transaction_ends_the_run(
    conn: sqlite3.Connection, ending: bool
) -> None:
    sql.mark_started(conn, "run-1", 100)
    sql.set_status(conn, "run-1", RunStatus.SLEEPING)
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    store_marks(conn, [("run-1", None)], ending=ending)
    if ending:
        sql.finish_run(conn, "run-1", RunStatus.COMPLETED, 900, b"{}")
    conn.set_trace_callback(None)
    assert sum(statement.startswith("UPDATE") for statement in statements) == 1
    assert _start(conn) == ("completed" if ending else "running", 100)
