"""Store failures on purpose, for the fault tests (reliability.md T3, T4, T14): a daemon started with
``DURABLY_STORE_FAULTS=RATE[:SECONDS]`` in its environment fails that fraction of its commits (nothing
committed), of its reads, and of its commits *after* they were made (an "ambiguous" commit: the
change is in the file, the caller is told it failed), at random, each with the
``sqlite3.OperationalError`` a failing disk gives; with SECONDS, only for that long after it opened
its store (a store that fails while the daemon recovers its runs, then heals). The engine must then
behave as the guarantees in the README say: retry, never lose what it acknowledged, never leave a run
stuck. Unset (always, outside tests), nothing here runs."""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import time

ENV = "DURABLY_STORE_FAULTS"

log = logging.getLogger("durably.store")


class Faults:
    def __init__(self, rate: float, seconds: float | None = None) -> None:
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"${ENV} must be a fraction in [0, 1), got {rate}")
        self.rate = rate
        self._until = None if seconds is None else time.monotonic() + seconds
        self._random = random.Random()

    @classmethod
    def from_env(cls) -> Faults | None:
        text = os.environ.get(ENV)
        if not text:
            return None
        rate, _, seconds = text.partition(":")
        faults = cls(float(rate), float(seconds) if seconds else None)
        log.warning(
            "failing %.1f %% of the store's commits (before and after they are made) and reads on purpose%s ($%s)",
            faults.rate * 100,
            f" for {seconds} s" if seconds else "",
            ENV,
        )
        return faults

    def check(self, what: str) -> None:
        """Raise as a failing disk would, at the configured rate (within the window, if any)."""
        if self._until is not None and time.monotonic() > self._until:
            return
        if self._random.random() < self.rate:
            raise sqlite3.OperationalError(f"disk I/O error ({what} failed on purpose: ${ENV})")
