"""Pure-Python references of the Rust core's functions, for the micro-benchmarks.

Same contract as ``durably_server._core`` (see its ``.pyi``): the same hashing, the same counters, the
same checks in the same order (id, duplicate, step count, payload size, state size), nothing changed on
a refusal. Written the way one would write them in Python without trying to be clever: hashlib, a dict
and a list. ``bench.micro`` checks that both agree before it times them.
"""

from __future__ import annotations

import hashlib

MAX_STEPS = 1000
MAX_STEP_BYTES = 4 * 1024 * 1024
MAX_STATE_BYTES = 32 * 1024 * 1024


class CoreError(Exception):
    pass


class LimitExceeded(CoreError):
    pass


class StepLimitExceeded(LimitExceeded):
    pass


class StepOutputTooLarge(LimitExceeded):
    pass


class StateTooLarge(LimitExceeded):
    pass


class DuplicateStep(CoreError):
    pass


class InvalidStepId(CoreError):
    pass


def hash_step_id(pre_hash_id: str) -> str:
    return hashlib.sha1(pre_hash_id.encode()).hexdigest()


def pre_hash_id(name: str, index: int) -> str:
    if index < 0:
        raise InvalidStepId(f"step {name!r}: index {index} is negative")
    return name if index == 0 else f"{name}:{index}"


class StepIdCounter:
    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def next(self, name: str) -> tuple[str, int]:
        index = self._seen.get(name, 0)
        self._seen[name] = index + 1
        return hash_step_id(pre_hash_id(name, index)), index


class RunState:
    __slots__ = ("_ids", "_max_state_bytes", "_max_step_bytes", "_max_steps", "_memos", "_size")

    def __init__(
        self,
        base_bytes: int = 0,
        max_steps: int = MAX_STEPS,
        max_step_bytes: int = MAX_STEP_BYTES,
        max_state_bytes: int = MAX_STATE_BYTES,
    ) -> None:
        if min(base_bytes, max_steps, max_step_bytes, max_state_bytes) < 0:
            raise OverflowError("sizes are non-negative")
        self._ids: set[str] = set()
        self._memos: list[tuple[str, bytes, bool]] = []
        self._size = base_bytes
        self._max_steps = max_steps
        self._max_step_bytes = max_step_bytes
        self._max_state_bytes = max_state_bytes

    def check(self, id: str, name: str, index: int, payload_len: int) -> None:
        self._check(id, name, index, payload_len, len(self._memos), self._size, id in self._ids)

    def record(self, id: str, name: str, index: int, payload: bytes, is_error: bool) -> int:
        self.check(id, name, index, len(payload))
        self._add(id, payload, is_error)
        return self._size

    def check_batch(self, items: list[tuple[str, str, int, int]]) -> None:
        """Each item checked as if the ones before it were recorded (see the Rust core's ``.pyi``)."""
        seen: set[str] = set()
        count, size = len(self._memos), self._size
        for id, name, index, payload_len in items:
            self._check(id, name, index, payload_len, count, size, id in self._ids or id in seen)
            seen.add(id)
            count += 1
            size += payload_len

    def record_batch(self, items: list[tuple[str, str, int, bytes, bool]]) -> int:
        self.check_batch([(id, name, index, len(payload)) for id, name, index, payload, _ in items])
        for id, _, _, payload, is_error in items:
            self._add(id, payload, is_error)
        return self._size

    def _check(self, id: str, name: str, index: int, payload_len: int, count: int, size: int, known: bool) -> None:
        """`record`'s checks, in its order, against a state of `count` outcomes and `size` bytes."""
        if not name:
            raise InvalidStepId("the step name is empty")
        if id != hash_step_id(pre_hash_id(name, index)):
            raise InvalidStepId(f"step {name!r}[{index}]: id {id} is not the hash of its name and index")
        if known:
            raise DuplicateStep(f"step {name!r} ({id}) is already recorded")
        if count >= self._max_steps:
            raise StepLimitExceeded(f"step {name!r} ({id}) would be step {count + 1} of {self._max_steps}")
        if payload_len > self._max_step_bytes:
            raise StepOutputTooLarge(f"step {name!r} ({id}): {payload_len} bytes > {self._max_step_bytes}")
        if size + payload_len > self._max_state_bytes:
            raise StateTooLarge(f"step {name!r} ({id}): state {size + payload_len} > {self._max_state_bytes}")

    def _add(self, id: str, payload: bytes, is_error: bool) -> None:
        self._ids.add(id)
        self._memos.append((id, payload, is_error))
        self._size += len(payload)

    def memos(self) -> list[tuple[str, bytes, bool]]:
        return list(self._memos)

    def memos_from(self, start: int) -> list[tuple[str, bytes, bool]]:
        if not 0 <= start <= len(self._memos):
            raise ValueError(f"memos_from({start}): the state has {len(self._memos)} outcomes")
        return self._memos[start:]

    @property
    def step_count(self) -> int:
        return len(self._memos)

    @property
    def size_bytes(self) -> int:
        return self._size
