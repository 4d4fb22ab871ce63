"""Sleeps that end with the report of the execution they wake (engine/wakes.py), on a real SQLite file:
which due timers may wake their run that way, how fast they are found, that a sleep is stored once, and
that a run read back before its deadline wakes at the deadline."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from durably_server.engine.coordination import SLEEP, WAIT
from durably_server.engine.wakes import READ_AHEAD_MS, READ_GRAIN_MS, read_at, take_wakes, wake_item
from durably_server.model import Event, RunRecord, RunStatus
from durably_server.store import records as sql
from durably_server.store.schema import migrate


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(tmp_path / "wakes.db", isolation_level=None)
    migrate(conn)
    sql.insert_event(conn, Event("ev", "demo/start", b"{}", 1), 1)
    return conn


def _run(conn: sqlite3.Connection, run_id: str, status: RunStatus = RunStatus.SLEEPING, queued: bool = False) -> None:
    item = sql.insert_run(conn, RunRecord(run_id, "app", "fn", "ev", status, 1))
    if not queued:
        sql.dequeue(conn, [item.id])


def _timer(conn: sqlite3.Connection, run_id: str, name: str = "nap", kind: str = SLEEP) -> int:
    return sql.insert_timer(conn, sql.Timer(run_id, f"{run_id}-{name}", name, 0, kind, 5_000))


def test_only_a_sleep_its_run_sleeps_on_alone_wakes_it_with_the_report(conn: sqlite3.Connection) -> None:
    timers = {}
    _run(conn, "lone")
    timers["lone"] = _timer(conn, "lone")
    _run(conn, "two-sleeps")  # a gather of two sleeps: the other one is still pending
    timers["two-sleeps"] = _timer(conn, "two-sleeps")
    _timer(conn, "two-sleeps", "other")
    _run(conn, "and-a-wait")  # a sleep beside a wait_for_event without timeout
    timers["and-a-wait"] = _timer(conn, "and-a-wait")
    sql.insert_wait(conn, sql.Wait("and-a-wait", "w", "wait", "demo/e", "", "", ""))
    _run(conn, "and-queued", queued=True)  # something else to execute already
    timers["and-queued"] = _timer(conn, "and-queued")
    _run(conn, "a-wait-timeout", RunStatus.WAITING)
    timers["a-wait-timeout"] = _timer(conn, "a-wait-timeout", kind=WAIT)
    _run(conn, "running", RunStatus.RUNNING)  # not asleep (any more)
    timers["running"] = _timer(conn, "running")

    lone = sql.lone_sleeps(conn, list(timers.values()), SLEEP)

    assert [(timer_id, app, fn, timer.run_id, timer.name) for timer_id, app, fn, timer in lone] == [
        (timers["lone"], "app", "fn", "lone", "nap")
    ]


def test_finding_lone_sleeps_reads_the_timers_asked_for_not_every_sleeping_run(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN")
    ids = []
    for n in range(3000):
        _run(conn, f"r{n:05}")
        ids.append(_timer(conn, f"r{n:05}"))
    conn.execute("COMMIT")
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    conn.set_progress_handler(count, 100)  # called every 100 virtual-machine instructions
    assert len(sql.lone_sleeps(conn, ids[:2], SLEEP)) == 2
    conn.set_progress_handler(None, 0)
    # A few hundred instructions for two timers; walking 3,000 sleeping runs would take tens of thousands.
    assert steps < 20, f"{steps * 100} instructions to look at two timers among 3,000"


def test_a_woken_sleep_is_taken_once_whatever_reports_it(conn: sqlite3.Connection) -> None:
    _run(conn, "lone")
    timer_id = _timer(conn, "lone")
    [(_, app, fn, timer)] = sql.lone_sleeps(conn, [timer_id], SLEEP)
    item = wake_item(timer_id, app, fn, timer, now=7_000)
    assert item.id < 0 and item.wake is not None and item.target == ""

    woken = take_wakes(conn, [item])  # the first checkpoint or report of the woken execution
    assert [(s.name, s.status.value, s.output_json, s.ended_ms) for s in woken] == [
        ("nap", "completed", b"null", 7_000)
    ]
    assert take_wakes(conn, [item]) == []  # a later one of the same execution
    assert sql.load_timers(conn) == []


def test_a_run_read_back_before_its_deadline_wakes_at_the_deadline(conn: sqlite3.Connection) -> None:
    _run(conn, "lone")
    timer_id = _timer(conn, "lone")  # due at 5_000
    [(_, app, fn, timer)] = sql.lone_sleeps(conn, [timer_id], SLEEP)
    early = wake_item(timer_id, app, fn, timer, now=4_955)
    assert early.available_ms == 5_000 and early.wake is not None
    assert (early.wake.started_ms, early.wake.ended_ms) == (5_000, 5_000)
    late = wake_item(timer_id, app, fn, timer, now=5_020)  # the read took longer than the lead
    assert late.available_ms == 5_020 and late.wake is not None and late.wake.ended_ms == 5_020


def test_sleeps_ending_close_together_are_read_back_together_ahead_of_their_deadlines() -> None:
    for due in (5_000, 5_001, 5_009, 5_010, 123_456):
        assert due - READ_AHEAD_MS - READ_GRAIN_MS < read_at(due) <= due - READ_AHEAD_MS
        assert read_at(due) % READ_GRAIN_MS == 0
    assert read_at(5_000) == read_at(5_009) != read_at(5_010)
