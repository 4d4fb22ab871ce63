"""Opening the SQLite file: the lock, the durability settings, the writer and the readers."""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, TypeVar
from urllib.parse import quote

from setproctitle import setthreadtitle

from durably_server.store import power_loss
from durably_server.store.faults import Faults
from durably_server.store.schema import migrate
from durably_server.store.writer import WriteOp, Writer

T = TypeVar("T")


class StoreLockedError(RuntimeError):
    """Another daemon has this database open: two writers would corrupt each other's queue."""


class StoreOpenError(RuntimeError):
    """The file could not be opened as the daemon's database: not a database, locked by another
    program past SQLite's busy timeout, unreadable, or written by a newer daemon."""


def _connect(path: Path, vfs: str | None) -> sqlite3.Connection:
    """`vfs`: open through that SQLite VFS instead of the default one (store/power_loss.py)."""
    target = path if vfs is None else f"file:{quote(str(path))}?vfs={vfs}"
    conn = sqlite3.connect(target, isolation_level=None, check_same_thread=False, uri=vfs is not None)
    conn.execute("PRAGMA busy_timeout = 5000")
    # FULL: an acknowledged event or step result survives power loss, not only kill -9.
    conn.execute("PRAGMA synchronous = FULL")
    # A quarter of SQLite's default page cache per connection: the OS caches the file too, and the
    # default lets each of the daemon's connections grow by 2 MiB it never gives back.
    conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
    return conn


CACHE_KIB = 512

READER_NAME = "durably-reader"
"""The reader threads' name, for the OS too (as the writer's, store/writer.py)."""


def _reader(path: Path, vfs: str | None) -> sqlite3.Connection:
    conn = _connect(path, vfs)
    conn.execute("PRAGMA query_only = ON")
    return conn


class Store:
    """The daemon's only door to its database file."""

    def __init__(self, path: Path, loop: asyncio.AbstractEventLoop) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_file = _lock(path)
        try:
            self._vfs = power_loss.vfs_from_env()
            conn = _open_for_writing(path, self._vfs)
        except (sqlite3.Error, RuntimeError, ValueError) as exc:
            self._lock_file.close()
            raise StoreOpenError(f"cannot open the database {path}: {exc}") from None
        self._faults = Faults.from_env()
        self.writer = Writer(conn, loop, self._faults)
        self._local = threading.local()
        self._readers = ThreadPoolExecutor(
            max_workers=2, thread_name_prefix=READER_NAME, initializer=setthreadtitle, initargs=(READER_NAME,)
        )

    def write(self, op: WriteOp[T], inline: bool = False) -> asyncio.Future[T]:
        """Commit `op` (grouped with others); await the result to know it is durable. `inline`: the
        caller is all that is going on, so an idle writer may commit it on this thread (store/writer.py)."""
        return self.writer.submit(op, inline)

    async def read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        """Run `query` on a reader connection off the event loop (WAL: never blocks the writer)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._read, query)

    def read_now(self, query: Callable[[sqlite3.Connection], T]) -> T:
        """Run `query` on the calling thread; for start-up, before the loop serves anyone (on a
        connection of its own, closed at once: the readers' threads keep theirs)."""
        conn = _reader(self.path, self._vfs)
        try:
            if self._faults is not None:
                self._faults.check("start-up read")
            return query(conn)
        finally:
            conn.close()

    def _read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = _reader(self.path, self._vfs)
        if self._faults is not None:
            self._faults.check("read")
        return query(conn)

    def close(self) -> None:
        self.writer.close()
        self._readers.shutdown(wait=True)
        self._lock_file.close()


def _open_for_writing(path: Path, vfs: str | None) -> sqlite3.Connection:
    """The writer's connection: WAL, the schema brought up to date."""
    conn = _connect(path, vfs)
    try:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise RuntimeError(f"could not switch to WAL mode (got {mode!r})")
        migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _lock(path: Path) -> IO[str]:
    lock_path = path.with_name(path.name + ".lock")
    handle = open(lock_path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise StoreLockedError(
            f"database {path} is in use by another durably daemon (lock held on {lock_path})"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle
