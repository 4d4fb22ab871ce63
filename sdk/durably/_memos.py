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

    __slots__ = ("kept", "outcomes", "positions", "scalars")

    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []
        self.positions: dict[str, int] = {}
        self.scalars: dict[int, object] = {}
        self.kept: dict[tuple[str, str], tuple[bytes, tuple[object] | None]] = {}
        """(execution id, step id) -> a result this worker reported (its JSON, and itself if it is
        immutable: see ``StepOp.scalar``), until an Execute names it."""

    def extend(self, entries: Iterable[tuple[str, Outcome]]) -> None:
        outcomes, positions = self.outcomes, self.positions
        for step_id, outcome in entries:
            positions.setdefault(step_id, len(outcomes))
            outcomes.append(outcome)

    def snapshot(self) -> Memos:
        return Memos(self.outcomes, self.positions, len(self.outcomes), self.scalars)


class MemoCache:
    """The outcomes of the runs this stream has executed lately, at most ``max_runs`` of them (the
    least recently executed are dropped first). One per stream: what the executor believes this
    worker holds is tied to the stream, so a new stream starts empty."""

    def __init__(self, max_runs: int) -> None:
        self._max_runs = max_runs
        self._runs: OrderedDict[str, _RunMemos] = OrderedDict()

    def receive(self, run_id: str, base: int, entries: Iterable[tuple[str, Incoming]]) -> Memos | None:
        """Apply an ``Execute``'s memos and return what that execution replays.

        ``base`` 0: ``entries`` are the whole state and replace what was held. Otherwise they follow
        the first ``base`` outcomes, which this cache must hold exactly; if it does not (evicted,
        dropped, or out of step), or a result named as reported was not kept, the run is forgotten
        and None is returned: the executor must send the whole state again.

        Call it in the order the ``Execute`` messages arrive, before starting the execution: a
        second ``Execute`` of the run may carry a delta on top of the first before the first ends.
        """
        held = self._runs.get(run_id)
        if base == 0:
            run = _RunMemos()
            if held is not None:
                run.kept = held.kept
        elif held is None or len(held.outcomes) != base:
            self._runs.pop(run_id, None)
            return None
        else:
            run = held
        start = len(run.outcomes)
        filled = _fill_in(entries, run.kept)
        if filled is None:
            self._runs.pop(run_id, None)
            return None
        outcomes, known = filled
        run.extend(outcomes)
        for offset, value in known:
            run.scalars[start + offset] = value
        self._runs[run_id] = run
        self._runs.move_to_end(run_id)
        while len(self._runs) > self._max_runs:
            self._runs.popitem(last=False)
        return run.snapshot()

    def keep(self, run_id: str, execution_id: str, ops: Iterable[StepOp]) -> None:
        """Keep the step results an execution of a held run is about to report."""
        run = self._runs.get(run_id)
        if run is not None:
            for op in ops:
                if op.op is OpKind.STEP_RUN:
                    run.kept[(execution_id, op.id)] = (op.data_json, op.scalar)

    def drop(self, run_id: str) -> None:
        """Forget a run that has ended; executions still replaying it keep their snapshot."""
        self._runs.pop(run_id, None)


def _fill_in(
    entries: Iterable[tuple[str, Incoming]], kept: dict[tuple[str, str], tuple[bytes, tuple[object] | None]]
) -> tuple[list[tuple[str, Outcome]], list[tuple[int, object]]] | None:
    """The outcomes with each named result taken from `kept`, and (offset, value) of those whose value
    is known already; None if a named result is not there."""
    outcomes: list[tuple[str, Outcome]] = []
    known: list[tuple[int, object]] = []
    for step_id, outcome in entries:
        if isinstance(outcome, Reported):
            found = kept.pop((outcome.execution_id, step_id), None)
            if found is None:
                return None
            outcome, scalar = found
            if scalar is not None:
                known.append((len(outcomes), scalar[0]))
        outcomes.append((step_id, outcome))
    return outcomes, known
