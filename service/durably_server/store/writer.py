"""Group commit: one thread owns the write connection and commits many changes at once.

With `synchronous=FULL` every commit is an fsync, so one commit per change would cap
throughput at the disk's fsync rate. Callers submit small write operations; the thread
takes all that are waiting, runs them in one transaction (one bad operation cannot spoil
its neighbours: see `_commit`), commits once, and only then resolves the callers'
futures: nothing is acknowledged before it is durable. Between commits it also
checkpoints the WAL (`CHECKPOINT_GROWTH_PAGES`).

A caller may ask for its change to be committed at once on its own thread (`inline`)
when the writer is idle: there is nothing to group it with, and the trip to the writer
thread and back costs two thread wake-ups, more than the statements themselves on the
bench machine (a lone sequential run pays it once per step). The event loop waits for
that commit's fsync, so only a caller that knows nothing else is going on should ask.

Every transaction also sets a counter (the `commits` table) to the number it will have once made. A
COMMIT that raises is then checked against it: one that was made all the same (an "ambiguous" commit)
counts as made, so that the engine's memory never lags behind what the file holds.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from setproctitle import setthreadtitle

from durably_server.store.faults import Faults

T = TypeVar("T")
WriteOp = Callable[[sqlite3.Connection], T]

log = logging.getLogger("durably.store")

_MAX_BATCH = 1024
_Batch = list[tuple[WriteOp[Any], asyncio.Future[Any]]]
_Outcomes = list[tuple[asyncio.Future[Any], Any, BaseException | None]]
_STOP = object()
_CHECKPOINT = object()

CHECKPOINT_GROWTH_PAGES = 256
"""Once the database has grown by this many pages (1 MiB at 4 KiB) since the last checkpoint, the writer
copies the WAL into the database file as soon as it has nothing to commit. SQLite's own automatic
checkpoint runs inside the COMMIT that crosses its threshold, and that commit's callers wait for it: W4
(3.9 MB steps) spent ~5 ms of each 30 ms step there (bench/README.md)."""

AUTOCHECKPOINT_PAGES = 2000
"""SQLite's automatic checkpoint stays as the backstop (a WAL grown by rewrites, which do not grow the
database, or a writer never idle), above its default 1000 pages so that one step of up to 4 MiB alone
does not trigger it."""


THREAD_NAME = "durably-writer"
"""The writer thread's name for the OS too (Python 3.11 keeps its thread names to itself): `top -H`,
`ps -L`, perf and the bench's CPU per thread tell it from the event loop and the readers by it."""


class _Isolate(Exception):
    """A batch run without savepoints hit a failing operation: run it again with them."""


class Writer:
    def __init__(self, conn: sqlite3.Connection, loop: asyncio.AbstractEventLoop, faults: Faults | None = None) -> None:
        self._conn = conn
        self._faults = faults
        self._loop = loop
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
        conn.execute(f"PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_PAGES}")
        self._pages_at_checkpoint: int = conn.execute("PRAGMA page_count").fetchone()[0]
        self._seq: int = conn.execute("SELECT seq FROM commits").fetchone()[0]
        """The last transaction committed, as the `commits` table counts them."""
        self._first_seq: int = self._seq
        self._settled = asyncio.Event()
        self._busy = threading.Lock()
        """Held while the connection is in use, by the thread or by a caller committing inline."""
        self._in_flight = 0  # submitted and not yet settled; read and written on the loop's thread
        self._thread.start()

    @property
    def commits(self) -> int:
        """Transactions committed since this writer started."""
        return self._seq - self._first_seq

    @property
    def backlog(self) -> int:
        """Changes waiting for the writer thread (approximate: it takes them as it goes)."""
        return self._queue.qsize()

    async def below(self, backlog: int) -> None:
        """Return once at most `backlog` changes wait (looked at after each commit): for producers that
        must not outrun the disk."""
        while self.backlog > backlog:
            self._settled.clear()
            await self._settled.wait()

    def submit(self, op: WriteOp[T], inline: bool = False) -> asyncio.Future[T]:
        """Queue `op`; the future resolves with its return value once it is committed. With `inline`,
        an idle writer commits it before this returns (see the module's docstring)."""
        future: asyncio.Future[T] = self._loop.create_future()
        idle = inline and self._in_flight == 0
        self._in_flight += 1
        if idle and self._busy.acquire(blocking=False):
            try:
                outcomes = self._commit([(op, future)])
                try:
                    checkpoint = self._grown_to() is not None
                except sqlite3.Error:  # failing as its commit just did: the thread's next look will tell
                    checkpoint = False
            finally:
                self._busy.release()
            if checkpoint:  # on the thread: the caller has its answer first
                self._queue.put(_CHECKPOINT)
            self._settle(outcomes)
        else:
            self._queue.put((op, future))
        return future

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join()
        self._conn.close()

    def _run(self) -> None:
        setthreadtitle(THREAD_NAME)
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [] if first is _CHECKPOINT else [first]
            stop = False
            while len(batch) < _MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                if item is not _CHECKPOINT:  # one follows this batch anyway
                    batch.append(item)
            with self._busy:
                if batch:
                    self._loop.call_soon_threadsafe(self._settle, self._commit(batch))
                if stop:
                    return
                self._checkpoint_when_idle()

    def _checkpoint_when_idle(self) -> None:
        """Copy the WAL into the database file once it has grown by `CHECKPOINT_GROWTH_PAGES` and
        nothing waits to be committed: after the callers have their answer, not inside a COMMIT."""
        if not self._queue.empty():
            return  # busy: the next idle moment will do (SQLite's own checkpoint if none comes)
        try:
            if (pages := self._grown_to()) is not None:
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                self._pages_at_checkpoint = pages
        except sqlite3.Error as exc:  # the thread must live on: SQLite's own checkpoint is the backstop
            log.warning("checkpoint of the WAL failed: %s", exc)

    def _grown_to(self) -> int | None:
        """The database's size in pages if it has grown by `CHECKPOINT_GROWTH_PAGES` since the last
        checkpoint (a checkpoint is due), else None."""
        pages: int = self._conn.execute("PRAGMA page_count").fetchone()[0]
        return pages if pages - self._pages_at_checkpoint >= CHECKPOINT_GROWTH_PAGES else None

    def _commit(self, batch: _Batch) -> _Outcomes:
        """Run and commit `batch`: what each caller gets (the caller holds `_busy`)."""
        conn = self._conn
        try:
            # Operations rarely fail, so the batch first runs without a SAVEPOINT around each one (two
            # statements fewer per change, each a release and re-take of the GIL); if one fails, all
            # is rolled back and the batch runs again with them, so that only the failed one is lost.
            try:
                outcomes = self._run_batch(batch, isolated=False)
            except _Isolate:
                outcomes = self._run_batch(batch, isolated=True)
            self._seq += 1
        except sqlite3.Error as exc:
            log.error("commit of %d changes failed: %s", len(batch), exc)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            outcomes = [(future, None, exc) for _, future in batch]
        return outcomes

    def _run_batch(self, batch: _Batch, isolated: bool) -> _Outcomes:
        """Run and commit `batch` in one transaction; when an operation fails and the batch is not
        `isolated`, roll it all back and raise `_Isolate`. So an operation may run twice: it must keep
        its effects in the database and in what it returns (or be harmless to repeat, as additions to
        the wait index are)."""
        conn = self._conn
        outcomes: _Outcomes = []
        conn.execute("BEGIN IMMEDIATE")
        for op, future in batch:
            if isolated:
                conn.execute("SAVEPOINT op")
            try:
                value = op(conn)
            except Exception as exc:  # the caller gets it; the batch goes on
                if not isolated:
                    conn.execute("ROLLBACK")
                    raise _Isolate from exc
                conn.execute("ROLLBACK TO op")
                outcomes.append((future, None, exc))
            else:
                outcomes.append((future, value, None))
            if isolated:
                conn.execute("RELEASE op")
        conn.execute("UPDATE commits SET seq = ?", (self._seq + 1,))
        try:
            if self._faults is not None:
                self._faults.check("commit")
            conn.execute("COMMIT")
            if self._faults is not None:
                self._faults.check("commit (after it was made)")
        except sqlite3.Error as exc:
            if not self._made_anyway():
                raise
            log.warning("a COMMIT reported %r, but it was made; its %d changes stand", exc, len(batch))
        return outcomes

    def _made_anyway(self) -> bool:
        """After a COMMIT that raised: whether the transaction was made all the same (an "ambiguous"
        commit: an I/O error reported after the WAL was written, say). Its changes then stand, and its
        callers must be told so, or the engine's memory and the store part ways (a run's steps stored but
        not known, its next report refused for storing them twice). Unknowable if even this read fails:
        then the changes count as not made, as before this check."""
        conn = self._conn
        if conn.in_transaction:
            return False  # still open: not made (the caller rolls it back)
        try:
            seq: int = conn.execute("SELECT seq FROM commits").fetchone()[0]
        except sqlite3.Error as exc:
            log.error("could not tell whether a failed COMMIT was made: %s", exc)
            return False
        return seq == self._seq + 1

    def _settle(self, outcomes: _Outcomes) -> None:
        self._in_flight -= len(outcomes)
        for future, value, exc in outcomes:
            if future.cancelled():
                continue
            if exc is None:
                future.set_result(value)
            else:
                future.set_exception(exc)
        self._settled.set()
