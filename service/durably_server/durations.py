"""Durations as people write them: "50ms", "30s", "10m", "2h", "7d", "1h30m"."""

from __future__ import annotations

import re

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def parse_ms(text: str) -> int:
    """Milliseconds in `text`; ValueError naming the text when it is not a duration."""
    cleaned = text.strip().replace(" ", "")
    pos, total = 0, 0.0
    for match in _PART.finditer(cleaned):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _MS[match.group(2)]
        pos = match.end()
    if not cleaned or pos != len(cleaned):
        raise ValueError(f"{text!r} is not a duration like 500ms, 30s, 10m, 2h, 7d or 1h30m")
    return round(total)
