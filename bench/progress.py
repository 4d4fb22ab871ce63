"""Progress lines on stderr while the suite runs (stdout carries only the final table)."""

from __future__ import annotations

import sys
import time

_START = time.monotonic()


def say(message: str) -> None:
    """One progress line, prefixed with the seconds since the suite started."""
    print(f"[{time.monotonic() - _START:7.1f}s] {message}", file=sys.stderr, flush=True)
