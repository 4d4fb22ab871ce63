"""Step ids: how ``step.run("name", ...)`` becomes the key its result is saved under.

The scheme is Inngest's, byte for byte, so the Rust core (and any other SDK) computes the same keys:
the n-th call (0-based) of a name within one execution has the pre-hash id ``name`` for n = 0 and
``name:n`` otherwise; the key is the lowercase hex SHA-1 of its UTF-8 bytes. It is purely positional,
which is why handlers must call steps in a deterministic order.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache


def hash_step_id(pre_hash_id: str) -> str:
    """Lowercase hex SHA-1 of the UTF-8 bytes of ``pre_hash_id``."""
    return hashlib.sha1(pre_hash_id.encode(), usedforsecurity=False).hexdigest()


def pre_hash_id(name: str, index: int) -> str:
    """``name`` for the first occurrence (index 0), ``name:index`` for later ones."""
    return name if index == 0 else f"{name}:{index}"


class StepIdCounter:
    """Counts the occurrences of each step name in one execution of a handler.

    A fresh counter is used per execution: replays walk the handler from the top again, so the n-th
    call of a name gets the same index every time.
    """

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def next(self, name: str) -> tuple[str, int]:
        """Hashed id and index of the next occurrence of ``name`` (first "a" -> index 0, then 1, ...)."""
        index = self._seen.get(name, 0)
        self._seen[name] = index + 1
        return _step_key(name, index), index


@lru_cache(maxsize=65_536)
def _step_key(name: str, index: int) -> str:
    """Every replay hashes the same ids again (a run of N steps hashes N²/2 of them): remember them."""
    return hash_step_id(pre_hash_id(name, index))
