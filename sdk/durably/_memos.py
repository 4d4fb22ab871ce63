"""A run's saved step outcomes as the worker holds them: in record order, cached per stream.

The executor sends each outcome of a run to a worker once (``Execute.memo_base``): the worker keeps
what it was sent, per run, so a run of N steps costs N memos on the wire instead of N². Record order
is the order the executor saved the outcomes, i.e. the order the steps really finished; the engine
replays concurrent steps in that order (see ``_execution``), so it is kept, not just the id -> outcome
map.

The executor does not send back the results this worker reported itself (``Register.keeps_reported``):
it names them (``Memo.reported_in``) and the cache fills them in from what the worker kept when it
sent them (``MemoCache.keep``), so a result crosses the wire once, not twice.

Outcomes stay as the bytes that arrived (or the saved failure): each execution decodes a result only
when the handler replays it, and decodes it again for every execution, so no two executions share a
decoded object that user code could mutate. Immutable results (a string, a number, a boolean, null)
are the exception: decoded once, they are kept in ``scalars`` and shared, so replaying N such steps
costs N dict lookups rather than N ``json.loads`` (a 4 MB string takes ~5 ms to decode).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from durably._ops import OpKind, StepOp
from durably._types import ErrorInfo

Outcome = bytes | ErrorInfo
"""A saved step outcome: the result's JSON, or the failure the step ended with for good."""


@dataclass(frozen=True, slots=True)
class Reported:
    """An outcome the executor named instead of sending: the result this worker reported for the step
    in execution ``execution_id``."""

    execution_id: str


Incoming = Outcome | Reported
"""An outcome as an ``Execute`` carries it."""


@dataclass(frozen=True, slots=True)
class Memos:
    """What one execution replays: the first ``length`` outcomes of its run, in record order.

    ``outcomes`` and ``positions`` may be shared with the worker's cache, which only ever appends to
    them, so taking this snapshot costs nothing and outcomes that arrive later for later executions
    (positions ``>= length``) stay invisible to this one.
    """

    outcomes: list[Outcome]
    positions: dict[str, int]
    """Hashed step id -> its position in ``outcomes`` (the first one, should an id repeat)."""
    length: int
    scalars: dict[int, object]
    """Position -> the decoded result, for results already decoded that are immutable."""

    @classmethod
    def of(cls, entries: Iterable[tuple[str, Outcome]]) -> Memos:
        """A snapshot of a whole state, held by nobody else."""
        run = _RunMemos()
        run.extend(entries)
        return run.snapshot()


class _RunMemos:
    """One run's outcomes in record order; append-only, see :class:`Memos`."""

    __slots__ = ("kept", "outcomes", "positions", "scalars", "size")

    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []
        self.positions: dict[str, int] = {}
        self.scalars: dict[int, object] = {}
        self.kept: dict[tuple[str, str], tuple[bytes, tuple[object] | None]] = {}
        """(execution id, step id) -> a result this worker reported (its JSON, and itself if it is
        immutable: see ``StepOp.scalar``), until an Execute names it."""
        self.size = 0
        """Bytes of the outcomes and kept results held (what the cache's byte budget counts)."""

    def extend(self, entries: Iterable[tuple[str, Outcome]]) -> None:
        outcomes, positions = self.outcomes, self.positions
        for step_id, outcome in entries:
            positions.setdefault(step_id, len(outcomes))
            outcomes.append(outcome)
            self.size += _size(outcome)

    def keep(self, execution_id: str, step_id: str, data: bytes, scalar: tuple[object] | None) -> None:
        replaced = self.kept.get((execution_id, step_id))
        self.kept[(execution_id, step_id)] = (data, scalar)
        self.size += len(data) - (len(replaced[0]) if replaced else 0)

    def fill_in(self, entries: Iterable[tuple[str, Incoming]]) -> bool:
        """Append the outcomes, each named result taken from what was kept (its value too, if known);
        False, changing nothing, if a named result is not there."""
        outcomes: list[tuple[str, Outcome]] = []
        known: list[tuple[int, object]] = []
        taken: list[tuple[str, str]] = []
        for step_id, outcome in entries:
            if isinstance(outcome, Reported):
                key = (outcome.execution_id, step_id)
                found = self.kept.get(key)
                if found is None:
                    return False
                taken.append(key)
                outcome, scalar = found
                if scalar is not None:
                    known.append((len(self.outcomes) + len(outcomes), scalar[0]))
            outcomes.append((step_id, outcome))
        for key in taken:
            self.size -= len(self.kept.pop(key)[0])
        self.extend(outcomes)
        self.scalars.update(known)
        return True

    def snapshot(self) -> Memos:
        return Memos(self.outcomes, self.positions, len(self.outcomes), self.scalars)


def _size(outcome: Outcome) -> int:
    if isinstance(outcome, bytes):
        return len(outcome)
    return 64 + len(outcome.message) + len(outcome.stack or "")


MAX_CACHE_BYTES = 256 * 1024 * 1024
"""What one stream's cache may hold in all: a run's state may reach 32 MiB, so a count of runs alone
does not bound the worker's memory."""


class MemoCache:
    """The outcomes of the runs this stream has executed lately, at most ``max_runs`` of them and
    ``max_bytes`` in all (the least recently executed are dropped first; the run in use never is).
    One per stream: what the executor believes this worker holds is tied to the stream, so a new
    stream starts empty."""

    def __init__(self, max_runs: int, max_bytes: int = MAX_CACHE_BYTES) -> None:
        self._max_runs = max_runs
        self._max_bytes = max_bytes
        self._runs: OrderedDict[str, _RunMemos] = OrderedDict()
        self._bytes = 0

    @property
    def size(self) -> int:
        """Bytes held, as the budget counts them."""
        return self._bytes

    def receive(self, run_id: str, base: int, entries: Iterable[tuple[str, Incoming]]) -> Memos | None:
        """Apply an ``Execute``'s memos and return what that execution replays.

        ``base`` 0: ``entries`` are the whole state and replace what was held. Otherwise they follow
        the first ``base`` outcomes, which this cache must hold exactly; if it does not (evicted,
        dropped, or out of step), or a result named as reported was not kept, the run is forgotten
        and None is returned: the executor must send the whole state again.

        Call it in the order the ``Execute`` messages arrive, before starting the execution: a
        second ``Execute`` of the run may carry a delta on top of the first before the first ends.
        """
        held = self._forget(run_id)
        if base == 0:
            run = _RunMemos()
            if held is not None:
                run.kept, run.size = held.kept, sum(len(data) for data, _ in held.kept.values())
        elif held is None or len(held.outcomes) != base:
            return None
        else:
            run = held
        if not run.fill_in(entries):
            return None
        self._hold(run_id, run)
        return run.snapshot()

    def keep(self, run_id: str, execution_id: str, ops: Iterable[StepOp]) -> None:
        """Keep the step results an execution of a held run is about to report."""
        run = self._forget(run_id)
        if run is not None:
            for op in ops:
                if op.op is OpKind.STEP_RUN:
                    run.keep(execution_id, op.id, op.data_json, op.scalar)
            self._hold(run_id, run)

    def drop(self, run_id: str) -> None:
        """Forget a run that has ended; executions still replaying it keep their snapshot."""
        self._forget(run_id)

    def _forget(self, run_id: str) -> _RunMemos | None:
        run = self._runs.pop(run_id, None)
        if run is not None:
            self._bytes -= run.size
        return run

    def _hold(self, run_id: str, run: _RunMemos) -> None:
        """Hold `run` as the most recently used, then drop the least recently used over the limits."""
        self._runs[run_id] = run
        self._bytes += run.size
        while len(self._runs) > self._max_runs or (self._bytes > self._max_bytes and len(self._runs) > 1):
            _, dropped = self._runs.popitem(last=False)
            self._bytes -= dropped.size
