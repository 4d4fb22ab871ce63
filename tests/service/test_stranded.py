"""A run must never be left with nothing to move it on (tests/e2e/test_nemesis.py found one): a sleep's
timer fired while the run's discovery was out, its commit queued no discovery (the discovery's row was
still there), and the discovery, which had seen the sleep still pending, reported nothing new. The
discovery's commit then queues one. On a real SQLite file, through the writes the executor makes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from durably_server._core import RunState
from durably_server.engine.coordination import SLEEP, Planned, WaitIndex, resolve
from durably_server.engine.merge import Merge
from durably_server.engine.runs import ActiveRun
from durably_server.engine.writes import Effects, Writes
from durably_server.model import Event, QueueItem, RunRecord, RunStatus
from durably_server.store import records as sql
from durably_server.store.schema import migrate

EVENT = Event("ev", "demo/start", b"{}", 1)


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(tmp_path / "stranded.db", isolation_level=None)
    migrate(conn)
    sql.insert_event(conn, EVENT, 1)
    return conn


def _report_nothing_new(conn: sqlite3.Connection, discovery: QueueItem) -> Effects:
    """The discovery's report, merged before the sleep completed: nothing new, nothing to discover."""
    run = ActiveRun(discovery.run_id, "app", "fn", EVENT, RunState(), RunStatus.RUNNING)
    writes = Writes(lambda _key: None, WaitIndex([]))
    return writes.commit_report(conn, run, [discovery], Merge(), False, Planned(), [], None, 10)


def test_a_discovery_reporting_nothing_after_its_sleep_completed_meanwhile_queues_the_next(
    conn: sqlite3.Connection,
) -> None:
    discovery = sql.insert_run(conn, RunRecord("r", "app", "fn", "ev", RunStatus.RUNNING, 1))
    sql.insert_timer(conn, sql.Timer("r", "nap-id", "nap", 0, SLEEP, 5))
    done = resolve(conn, "r", "app", "fn", "nap-id", b"null", None, False, 6)
    assert done is not None and done.discovery is None  # the discovery's row was there

    fx = _report_nothing_new(conn, discovery)

    [[queued]] = fx.units
    assert not queued.target and queued.id != discovery.id
    assert [(item.id, item.target) for item, _ in sql.load_queue(conn)] == [(queued.id, "")]


def test_a_discovery_reporting_nothing_while_its_sleep_is_pending_queues_nothing(conn: sqlite3.Connection) -> None:
    discovery = sql.insert_run(conn, RunRecord("r", "app", "fn", "ev", RunStatus.RUNNING, 1))
    sql.insert_timer(conn, sql.Timer("r", "nap-id", "nap", 0, SLEEP, 5))

    fx = _report_nothing_new(conn, discovery)

    assert fx.units == [] and sql.load_queue(conn) == []  # the timer wakes it


def test_a_discovery_reporting_nothing_after_its_run_was_cancelled_meanwhile_queues_nothing(
    conn: sqlite3.Connection,
) -> None:
    discovery = sql.insert_run(conn, RunRecord("r", "app", "fn", "ev", RunStatus.RUNNING, 1))
    conn.execute("UPDATE runs SET status = 'cancelled' WHERE id = 'r'")  # a cancel committed first

    fx = _report_nothing_new(conn, discovery)

    assert fx.units == [] and sql.load_queue(conn) == []
