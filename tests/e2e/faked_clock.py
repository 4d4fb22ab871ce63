"""A wall clock the tests move (test_clock_jumps.py, test_nemesis.py): processes started with
`environment(clock)` run under libfaketime (the PyPI package bundles the library), their wall clock the
real one plus the offset in a file the test rewrites (seen within a second); their monotonic clock is left
alone, as a real jump (an operator, NTP stepping, a VM resumed) leaves it."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def _library() -> str:
    spec = importlib.util.find_spec("libfaketime")
    assert spec is not None and spec.submodule_search_locations, "the dev extra installs libfaketime"
    library = Path(spec.submodule_search_locations[0], "vendor", "libfaketime", "src", "libfaketime.so.1")
    assert library.is_file(), library
    return str(library)


class Clock:
    """The offset of the faked wall clock, in seconds (read by libfaketime once a second)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.set(0)

    def set(self, offset_s: int) -> None:
        partial = self.path.with_suffix(".partial")
        partial.write_text(f"{offset_s:+d}\n", encoding="utf-8")
        partial.replace(self.path)  # never a half-written offset


def environment(clock: Clock) -> dict[str, str]:
    """The variables that put a process on `clock`."""
    return {
        "LD_PRELOAD": _library(),
        "FAKETIME_TIMESTAMP_FILE": str(clock.path),
        # Read the offset again once a second, not at every clock call: libfaketime reads it into one static
        # buffer shared by all threads, unlocked, so a multithreaded process reading it at every call now
        # and then parses a half-written buffer and exits ("failed to parse FAKETIME timestamp": a daemon
        # of test_nemesis died of it). A jump takes effect within a second.
        "FAKETIME_CACHE_DURATION": "0",
        "DONT_FAKE_MONOTONIC": "1",  # the variable's name before libfaketime 0.9.9
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
