"""The durably state core, written in Rust (``core_rs/``).

Everything the executor must get byte-for-byte right lives here: step-id hashing (it must match the
SDK and Inngest's SDKs exactly, or a replay would miss its memos), and the run state with its limits
(a step's outcome is recorded once, never changes, and never takes a run past a limit). Payloads are
opaque bytes: the core never parses them.
"""

from typing import Self, final

__all__ = [
    "MAX_JSON_DEPTH",
    "MAX_STATE_BYTES",
    "MAX_STEPS",
    "MAX_STEP_BYTES",
    "CoreError",
    "DuplicateStep",
    "InvalidStepId",
    "LimitExceeded",
    "RunState",
    "StateTooLarge",
    "StepIdCounter",
    "StepLimitExceeded",
    "StepOutputTooLarge",
    "check_json",
    "hash_step_id",
    "json_depth",
    "pre_hash_id",
    "simulate_power_loss",
]

MAX_STEPS: int
"""Step outcomes one run may record (1000, the article's limit)."""
MAX_STEP_BYTES: int
"""Bytes of one step's payload (4 MiB): exactly this many pass, one more fails."""
MAX_STATE_BYTES: int
"""Bytes of a run's whole state, triggering event(s) included (32 MiB)."""

MAX_JSON_DEPTH: int
"""Deepest nesting of arrays and objects in stored JSON (500, as the SDK's encoder allows): what is
stored must load again in Python, whose ``json`` recurses."""

class CoreError(Exception):
    """Base of every error the core raises, so the daemon can catch them all in one place."""

class LimitExceeded(CoreError):
    """A run limit would be breached; the run must fail with this message, not retry.

    The message names the limit, the step (name and hashed id) and the size.
    """

class StepLimitExceeded(LimitExceeded):
    """Recording the step would take the run over ``max_steps`` step outcomes."""

class StepOutputTooLarge(LimitExceeded):
    """One step's payload is over ``max_step_bytes``."""

class StateTooLarge(LimitExceeded):
    """Recording the step would take the run's total state over ``max_state_bytes``."""

class DuplicateStep(CoreError):
    """The id is already recorded: a step's outcome is recorded once and never changes."""

class InvalidStepId(CoreError):
    """The id is not ``hash_step_id(pre_hash_id(name, index))``, the name is empty or the index negative.

    Checking this in the core means a worker cannot file an outcome under another step's id.
    """

def json_depth(data: bytes) -> int:
    """How deeply arrays and objects nest in ``data`` (0 for a scalar), counted without parsing or
    recursion; meaningless, but bounded, on bytes that are not JSON."""

def check_json(data: bytes) -> None:
    """Raises ValueError naming the problem unless ``data`` is exactly one JSON value (UTF-8, no NaN)
    nested at most ``MAX_JSON_DEPTH`` levels deep.

    The executor stores results as the bytes it received, so it must refuse what is not JSON; walking the
    bytes in Rust costs a fraction of parsing them into Python objects only to drop them.
    """

def hash_step_id(pre_hash_id: str) -> str:
    """Lowercase hex SHA-1 of the UTF-8 bytes of ``pre_hash_id``, exactly as Inngest's SDKs hash step ids.

    A step's outcome is memoized under this id; ``tests/vectors/step_ids.json`` pins it for the SDK too.
    """

def pre_hash_id(name: str, index: int) -> str:
    """``name`` when ``index`` is 0, else ``name:index``: the n-th repeat of a name gets its own memo.

    Raises InvalidStepId when ``index`` is negative.
    """

@final
class StepIdCounter:
    """Counts the uses of each step name during one execution of a handler.

    The count is what turns the n-th ``step.run("send", ...)`` in a loop into ``send:n``; it is purely
    positional, as in Inngest's Python SDK, so use a fresh counter for each execution.
    """

    def __init__(self) -> None: ...
    def next(self, name: str) -> tuple[str, int]:
        """The hashed id and index of the next use of ``name``: ``(sha1("a"), 0)``, ``(sha1("a:1"), 1)``..."""

@final
class RunState:
    """The memoized state of one run: step outcomes in record order, with their sizes.

    It enforces what the store must never violate: valid ids, one outcome per id, and the limits.
    A refused outcome changes nothing, so the state stays consistent after any error.
    """

    def __new__(
        cls,
        base_bytes: int = 0,
        max_steps: int = 1000,
        max_step_bytes: int = 4194304,
        max_state_bytes: int = 33554432,
    ) -> Self:
        """``base_bytes`` is the size of the triggering event(s): like Inngest, they count in the state.

        The limits default to MAX_STEPS, MAX_STEP_BYTES and MAX_STATE_BYTES; tests may lower them.
        Sizes are non-negative (a negative int raises OverflowError).
        """

    def record(self, id: str, name: str, index: int, payload: bytes, is_error: bool) -> int:
        """Records a step's outcome (its result, or its error when ``is_error``) and returns the new size_bytes.

        Checks, in this order: the id (InvalidStepId), duplicates (DuplicateStep), the step count
        (StepLimitExceeded), the payload size (StepOutputTooLarge), the total size (StateTooLarge).
        On any error nothing changes. The ``bytes`` object itself is kept, not copied.
        """

    def record_batch(self, items: list[tuple[str, str, int, bytes, bool]]) -> int:
        """Records several outcomes ``(id, name, index, payload, is_error)`` at once and returns the new size_bytes.

        Parallel steps report many outcomes in one go. All or nothing: ``check_batch`` runs on the whole
        batch first, and on any error nothing is recorded, so the state never holds half a report.
        The outcomes are recorded in list order, and each ``bytes`` object is kept, not copied.
        """

    def check(self, id: str, name: str, index: int, payload_len: int) -> None:
        """Raises what ``record`` would raise for this step, without recording it.

        It checks against the current state only; for several outcomes recorded together, use
        ``check_batch``, or the batch could jointly cross a limit each outcome alone stays under.
        """

    def check_batch(self, items: list[tuple[str, str, int, int]]) -> None:
        """Raises what ``record_batch`` would raise for ``(id, name, index, payload_len)`` items, recording nothing.

        The items are checked cumulatively, each as if the ones before it were recorded: an id already
        recorded or repeated in the batch is a DuplicateStep, the step count after the batch must stay
        within max_steps (StepLimitExceeded names the first step over), and the running total size within
        max_state_bytes (StateTooLarge names the step that crosses it). Each item is checked in
        ``record``'s order and the first refused item's error is raised. O(batch), not O(state).
        """

    def check_output(self, output_len: int) -> None:
        """Raises StateTooLarge if the function's return value, ``output_len`` bytes, would not fit the state.

        Like Inngest, the output counts in the run's state: size_bytes plus the output must stay within
        max_state_bytes (exactly the limit passes). The message names the limit and the size and says it
        is the function's output. Nothing is recorded.
        """

    def contains(self, id: str) -> bool:
        """Whether an outcome is recorded under ``id`` (a memo hit on replay)."""

    def get(self, id: str) -> tuple[bytes | None, bool] | None:
        """``(payload, is_error)`` recorded under ``id``, or None; the payload is the recorded object, or
        None if it was forgotten."""

    def memos(self) -> list[tuple[str, bytes | None, bool]]:
        """Every ``(id, payload, is_error)`` in record order, in one call, to ship or persist the state
        (a forgotten payload is None)."""

    def forget_payloads(self, start: int, min_size: int) -> int:
        """Drops the payloads of at least ``min_size`` bytes from record position ``start`` on; returns
        how many it dropped.

        For a daemon that need not hold big results once they are committed: their sizes stay counted,
        so every check and limit is unchanged, and reads give None for them (the caller reads them back
        from its store when it needs them). ``start`` must be from 0 to the step count (ValueError).
        """

    def memos_from(self, start: int) -> list[tuple[str, bytes | None, bool]]:
        """The ``(id, payload, is_error)`` from record position ``start`` on, in record order.

        The executor sends a worker only the outcomes it has not seen yet, so a run of N steps ships
        O(N) bytes in all rather than O(N^2); this costs O(returned), not O(state). ``start`` equal to
        the step count gives ``[]``; a negative ``start`` or one past the end raises ValueError (it is
        a position, never counted from the end). The payloads are the recorded objects (None if
        forgotten).
        """

    @property
    def step_count(self) -> int:
        """Outcomes recorded so far; the step limit counts these."""

    @property
    def size_bytes(self) -> int:
        """``base_bytes`` plus the length of every recorded payload; the state limit counts this."""

    def __len__(self) -> int:
        """The same as ``step_count``."""

def simulate_power_loss(library: str, crash_at_sync: int, seed: int) -> str:
    """Register the power-loss VFS in ``library`` (the SQLite that Python's sqlite3 loaded) and return
    its name: its files' writes wait in memory until synced, and the ``crash_at_sync``-th sync (from 1)
    keeps, drops or garbles each unsynced write (at random from ``seed``) and kills the process. For the
    fault tests only (store/power_loss.py). Raises ValueError when the library is not loaded."""
