"""A wall clock the tests move (test_clock_jumps.py, test_nemesis.py): processes started with
`environment(clock)` run under libfaketime, their wall clock the real one plus the offset in a file the
test rewrites (seen within a second); their monotonic clock is left alone, as a real jump (an operator, NTP
stepping, a VM resumed) leaves it.

The library is libfaketime's thread-safe build (libfaketimeMT), compiled here from the source the PyPI
package bundles: its prebuilt libfaketime.so.1 reads the offset file into static buffers shared by all
threads, unlocked, and a daemon's threads re-reading it at the same instant now and then parse a
half-written buffer and exit ("failed to parse FAKETIME timestamp": a daemon of test_nemesis died of it,
and no test had failed). The MT build takes a lock around every faked clock call.

It is built to fake the wall clock and nothing else (`_ONLY_THE_CLOCK`): by default libfaketime also
wraps sleeps, polls, timers, file times and `pthread_cond_timedwait`, and the last is how CPython waits
for the GIL (every 5 ms a thread waits) and its locks. Each wrapped wait took the library's lock and
masked signals twice; under a busy machine the daemon's threads queued on that lock, and a trivial
callback of its loop took 0.3-1 s (asyncio debug mode; perf: `pthread_cond_timedwait_common`,
`fake_clock_gettime`, `pthread_sigmask` on top). test_nemesis then ran its last round in 20-120 s instead
of 1, and a CI run timed out waiting for a run. No wrapped wait is needed: Python's locks and GIL and
asyncio's timers wait on the monotonic clock, which is left alone (gRPC's waits too, as far as
test_clock_jumps and test_nemesis show: both pass with the clock moved)."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

_MT = "libfaketimeMT.so.1"
_ONLY_THE_CLOCK = "-UFAKE_PTHREAD -UFAKE_SLEEP -UFAKE_TIMERS -UFAKE_STAT -UFAKE_UTIME"
"""Undefines the wrappers the library's Makefile defines by default, but for the clock's own calls."""


@functools.cache
def _library() -> str:
    """The thread-safe library, built once per machine and source (under a second here; needs cc and make)."""
    spec = importlib.util.find_spec("libfaketime")
    assert spec is not None and spec.submodule_search_locations, "the dev extra installs libfaketime"
    source = Path(spec.submodule_search_locations[0], "vendor", "libfaketime", "src")
    digest = hashlib.sha256((source / "libfaketime.c").read_bytes() + _ONLY_THE_CLOCK.encode()).hexdigest()[:16]
    library = Path(tempfile.gettempdir(), f"durably-libfaketime-{digest}", _MT)
    if library.is_file():
        return str(library)
    library.parent.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=library.parent) as build:
        shutil.copytree(source, build, dirs_exist_ok=True)
        made = subprocess.run(
            ["make", "-C", build, _MT, f"FAKETIME_COMPILE_CFLAGS={_ONLY_THE_CLOCK}"], capture_output=True, text=True
        )
        assert made.returncode == 0, f"building {_MT} failed:\n{made.stdout}{made.stderr}"
        os.replace(Path(build, _MT), library)  # whole or not at all, should two builds race
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
        # Read the offset again once a second, not at every clock call (each read opens the file under the
        # MT build's lock). A jump takes effect within a second.
        "FAKETIME_CACHE_DURATION": "0",
        "DONT_FAKE_MONOTONIC": "1",  # the variable's name before libfaketime 0.9.9
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
