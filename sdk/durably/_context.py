"""``ctx``: everything a handler receives about the run it is executing."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from durably._step import Step
from durably._types import Event


@dataclass(frozen=True, slots=True, eq=False)
class Context:
    """What a handler gets: ``async def handler(ctx: durably.Context)``.

    The handler runs once per new step and replays finished ones, so the same ``Context`` values are
    seen many times per run; ``attempt`` counts retries of the current piece of work (0 first).
    ``logger`` carries ``run_id`` and ``function_id`` as log record attributes; log lines written
    outside steps repeat on every replay.
    """

    event: Event
    """The event that triggered the run."""
    events: list[Event]
    """All events of the run (one today; batches later)."""
    step: Step
    run_id: str
    attempt: int
    function_id: str
    logger: logging.LoggerAdapter[logging.Logger]
