"""The group-committing writer: one commit for many changes, and one bad change spoils none of the others."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from durably_server.store.schema import migrate
from durably_server.store.writer import Writer


def _insert(value: int) -> Any:
    def op(conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO t (v) VALUES (?)", (value,))
        return value

    return op


def _boom(conn: sqlite3.Connection) -> int:
    conn.execute("INSERT INTO t (v) VALUES (999)")
    raise ValueError("bad change")


async def _writer(tmp_path: Path) -> tuple[Writer, Path]:
    path = tmp_path / "w.db"
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("CREATE TABLE t (v INTEGER)")
    migrate(conn)
    return Writer(conn, asyncio.get_running_loop()), path


def _one_batch(writer: Writer, ops: list[Any]) -> list[asyncio.Future[Any]]:
    """Submit `ops` while the writer thread is held by another change, so that they share a transaction."""
    started, go = threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection) -> None:
        started.set()
        go.wait(10)

    writer.submit(hold)
    assert started.wait(10)
    futures = [writer.submit(op) for op in ops]
    go.set()
    return futures


def _rows(path: Path) -> list[int]:
    with sqlite3.connect(path) as conn:
        return sorted(v for (v,) in conn.execute("SELECT v FROM t"))


async def test_a_failing_change_is_refused_alone_and_the_batch_commits(tmp_path: Path) -> None:
    writer, path = await _writer(tmp_path)
    futures = _one_batch(writer, [_insert(1), _boom, _insert(3)])
    assert await futures[0] == 1 and await futures[2] == 3
    with pytest.raises(ValueError, match="bad change"):
        await futures[1]
    writer.close()
    assert _rows(path) == [1, 3]  # the failing change's own insert is rolled back too


async def test_a_change_failing_in_sqlite_is_refused_alone_and_so_is_a_lone_one(tmp_path: Path) -> None:
    writer, path = await _writer(tmp_path)
    await writer.submit(lambda conn: conn.execute("CREATE UNIQUE INDEX t_v ON t (v)"))
    # The third repeats the first's value: SQLite refuses it, which must not undo the others.
    futures = _one_batch(writer, [_insert(1), _insert(2), _insert(1), _insert(4)])
    assert [await futures[0], await futures[1], await futures[3]] == [1, 2, 4]
    with pytest.raises(sqlite3.IntegrityError):
        await futures[2]
    with pytest.raises(ValueError, match="bad change"):
        await writer.submit(_boom)
    assert await writer.submit(_insert(5)) == 5
    writer.close()
    assert _rows(path) == [1, 2, 4, 5]


async def test_submitted_changes_are_committed_before_their_futures_resolve(tmp_path: Path) -> None:
    writer, path = await _writer(tmp_path)
    results = await asyncio.gather(*(writer.submit(_insert(n)) for n in range(50)), return_exceptions=True)
    assert results == list(range(50))
    assert _rows(path) == list(range(50)) and 1 <= writer.commits <= 50
    writer.close()


async def test_below_waits_until_the_backlog_has_shrunk(tmp_path: Path) -> None:
    writer, path = await _writer(tmp_path)
    started, go = threading.Event(), threading.Event()

    def slow(conn: sqlite3.Connection) -> None:  # holds the writer thread while changes queue up behind it
        started.set()
        go.wait(10)

    first = writer.submit(slow)
    await asyncio.to_thread(started.wait, 10)
    queued = [writer.submit(_insert(n)) for n in range(20)]
    assert writer.backlog == 20
    waiting = asyncio.ensure_future(writer.below(5))
    await asyncio.sleep(0.05)
    assert not waiting.done(), "returned while 20 changes were waiting"
    go.set()
    await asyncio.wait_for(waiting, 10)
    assert writer.backlog <= 5
    await asyncio.gather(first, *queued)
    assert _rows(path) == list(range(20))
    writer.close()


@pytest.mark.parametrize("inline", [True, False], ids=["inline", "thread"])
async def test_a_grown_wal_is_checkpointed_once_the_writer_is_idle_not_for_small_changes(
    tmp_path: Path, inline: bool
) -> None:
    path = tmp_path / "wal.db"
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    assert conn.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal"
    conn.execute("CREATE TABLE t (v BLOB)")
    migrate(conn)
    writer = Writer(conn, asyncio.get_running_loop())

    def insert(size: int) -> Any:
        return lambda c: c.execute("INSERT INTO t (v) VALUES (?)", (b"x" * size,))

    before = await asyncio.to_thread(os.path.getsize, path)
    await writer.submit(insert(100), inline)
    await asyncio.sleep(0.1)
    # A small change stays in the WAL (SQLite's own checkpoint takes it later): the file did not grow.
    assert await asyncio.to_thread(os.path.getsize, path) == before
    await writer.submit(insert(2 * 1024 * 1024), inline)  # 512 pages, over CHECKPOINT_GROWTH_PAGES
    assert await asyncio.to_thread(_grows_to, path, before + 2 * 1024 * 1024), "not checkpointed"
    writer.close()


def _grows_to(path: Path, size: int, timeout: float = 10) -> bool:
    """Whether the file at `path` reaches `size` bytes (copied there by a checkpoint) within `timeout`."""
    deadline = time.monotonic() + timeout
    while os.path.getsize(path) < size:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


class _CheckpointFails(sqlite3.Connection):
    """A connection whose WAL checkpoints fail (a disk error, say)."""

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql.startswith("PRAGMA wal_checkpoint"):
            raise sqlite3.OperationalError("disk I/O error")
        return super().execute(sql, *args)


@pytest.mark.parametrize("inline", [True, False], ids=["inline", "thread"])
async def test_a_failing_checkpoint_does_not_stop_the_writer(tmp_path: Path, inline: bool) -> None:
    conn = sqlite3.connect(tmp_path / "w.db", isolation_level=None, check_same_thread=False, factory=_CheckpointFails)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE t (v BLOB)")
    migrate(conn)
    writer = Writer(conn, asyncio.get_running_loop())
    big = 2 * 1024 * 1024  # grows the database past CHECKPOINT_GROWTH_PAGES: a checkpoint is tried
    await writer.submit(lambda c: c.execute("INSERT INTO t (v) VALUES (?)", (b"x" * big,)), inline)
    await asyncio.sleep(0.1)
    assert await asyncio.wait_for(writer.submit(_insert(7), inline), 5) == 7
    writer.close()


def _where(value: int) -> Any:
    """A change that inserts `value` and returns the thread it ran on."""

    def op(conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO t (v) VALUES (?)", (value,))
        return threading.get_ident()

    return op


async def test_an_inline_change_to_an_idle_writer_is_committed_before_submit_returns(tmp_path: Path) -> None:
    writer, path = await _writer(tmp_path)
    future = writer.submit(_where(1), inline=True)
    # Nothing to group it with: committed on the loop's own thread, durable before the caller goes on.
    assert future.done() and future.result() == threading.get_ident()
    assert _rows(path) == [1] and writer.commits == 1
    failing = writer.submit(_boom, inline=True)  # refused inline as on the thread: rolled back, the caller told
    assert failing.done()
    with pytest.raises(ValueError, match="bad change"):
        await failing
    assert await writer.submit(_where(2)) != threading.get_ident()  # not asked: the thread, as always
    writer.close()
    assert _rows(path) == [1, 2]


async def test_an_inline_change_waits_its_turn_when_the_writer_is_busy(tmp_path: Path) -> None:
    writer, path = await _writer(tmp_path)
    queued = _one_batch(writer, [_where(n) for n in range(3)])
    late = writer.submit(_where(3), inline=True)  # changes are in flight: it must not overtake them
    assert not late.done()
    threads = await asyncio.gather(*queued, late)
    assert all(thread != threading.get_ident() for thread in threads)
    assert _rows(path) == [0, 1, 2, 3]
    writer.close()


class _CommitReportsFailure(sqlite3.Connection):
    """A COMMIT that raises: after it was made (an "ambiguous" commit), or instead of being made."""

    fails: bool | None = None
    """None: COMMIT works; True: it raises without being made; False: it raises once made."""

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql != "COMMIT" or self.fails is None:
            return super().execute(sql, *args)
        if not self.fails:
            super().execute(sql, *args)
        raise sqlite3.OperationalError("disk I/O error")


@pytest.mark.parametrize("inline", [True, False], ids=["inline", "thread"])
@pytest.mark.parametrize("made", [True, False], ids=["made", "not-made"])
async def test_a_commit_that_raised_counts_as_made_exactly_when_it_was(
    tmp_path: Path, inline: bool, made: bool
) -> None:
    path = tmp_path / "w.db"
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, factory=_CommitReportsFailure)
    conn.execute("CREATE TABLE t (v INTEGER)")
    migrate(conn)
    writer = Writer(conn, asyncio.get_running_loop())
    conn.fails = not made  # type: ignore[attr-defined]
    try:
        if made:
            assert await asyncio.wait_for(writer.submit(_insert(1), inline), 5) == 1
        else:
            with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
                await asyncio.wait_for(writer.submit(_insert(1), inline), 5)
        conn.fails = None  # type: ignore[attr-defined]
        assert await asyncio.wait_for(writer.submit(_insert(2), inline), 5) == 2, "the next commit was refused"
    finally:
        writer.close()
    check = sqlite3.connect(path)
    assert [v for (v,) in check.execute("SELECT v FROM t ORDER BY v")] == ([1, 2] if made else [2])
    assert check.execute("SELECT seq FROM commits").fetchone()[0] == (2 if made else 1)
    check.close()
