"""Plumbing shared by the test workers: the observation log, control files, the client.

A worker program is run as ``python tests/workers/<name>.py`` with
``DURABLY_ADDRESS`` (the daemon), ``DURABLY_TEST_LOG`` (append one JSON line per observation),
``DURABLY_TEST_CONTROL`` (folder of control files) and ``DURABLY_TEST_APP`` (the app id);
``$DURABLY_ENCRYPTION_KEY`` and the like, when set, give the client a ``durably.Encryption``
(``Encryption.from_env``).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import durably

LOG = Path(os.environ["DURABLY_TEST_LOG"])
CONTROL = Path(os.environ["DURABLY_TEST_CONTROL"])

client = durably.Client(app_id=os.environ.get("DURABLY_TEST_APP", "tests"), encryption=durably.Encryption.from_env())


def record(kind: str, **fields: Any) -> None:
    """Append one observation (with this process's pid) to the log, flushed at once."""
    line = json.dumps({"kind": kind, "pid": os.getpid(), "t": time.time(), **fields})
    with LOG.open("a", encoding="utf-8") as log:
        log.write(line + "\n")
        log.flush()


def observations(kind: str, **match: Any) -> list[dict[str, Any]]:
    """Observations so far (this process's and others'), filtered by kind and equal fields."""
    found = []
    for line in LOG.read_text(encoding="utf-8").split("\n")[:-1]:
        entry = json.loads(line)
        if entry["kind"] == kind and all(entry.get(k) == v for k, v in match.items()):
            found.append(entry)
    return found


async def wait_for_file(name: str, timeout: float = 120.0) -> None:
    """Block (without blocking the event loop) until control file `name` exists."""
    path = CONTROL / name
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"control file {path} did not appear within {timeout:g}s")
        await asyncio.sleep(0.02)


def serve(*functions: Any) -> None:
    """Run a durably Worker for `functions` until the process is killed."""
    asyncio.run(durably.Worker(client, functions=list(functions)).run())
