"""Power loss on purpose, for the fault tests (reliability.md T15): a daemon started with
``DURABLY_STORE_POWER_LOSS=N[:SEED]`` in its environment opens its database through the core's
power-loss VFS (core_rs/src/power_loss.rs). Every write waits in memory until its file is synced, as
it would in the OS page cache; the N-th sync instead loses power: each write not yet synced is kept,
dropped or garbled (at random, from SEED) and the daemon is killed on the spot. What it acknowledged
before must all be in the file when it starts again. Unset (always, outside tests), nothing here runs."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from durably_server import _core

ENV = "DURABLY_STORE_POWER_LOSS"

log = logging.getLogger("durably.store")


def vfs_from_env() -> str | None:
    """The name of the VFS to open the database with, installed, if the environment asks for one."""
    text = os.environ.get(ENV)
    if not text:
        return None
    at, _, seed = text.partition(":")
    try:
        crash_at, seed_value = int(at), int(seed or "1")
    except ValueError:
        raise ValueError(f"${ENV} must be N or N:SEED (integers), got {text!r}") from None
    if crash_at < 1:
        raise ValueError(f"${ENV}: the sync to lose power at counts from 1, got {crash_at}")
    name = _core.simulate_power_loss(_sqlite_library(), crash_at, seed_value)
    log.warning("losing power on purpose at sync %d of the database's files ($%s)", crash_at, ENV)
    return name


def _sqlite_library() -> str:
    """The SQLite library Python's sqlite3 module loaded: the VFS must be registered in that one."""
    import sqlite3  # noqa: F401  (loads the library if nothing has yet)

    for line in Path("/proc/self/maps").read_text(encoding="utf-8").splitlines():
        path = line.split(maxsplit=5)[-1]
        if "/libsqlite3" in path:
            return path
    raise RuntimeError(f"${ENV} needs SQLite as a shared library; this Python's sqlite3 has it built in")
