"""When a failed execution runs again: exponential backoff with jitter, or what the code asked.

Attempt n (1 for the first retry) waits `base * 2**(n-1)`, capped at `max`, plus up to
`jitter` of that again at random, so that many runs failing together do not retry in
lockstep. A `RetryAfterError` (Failure.retry_after_ms) replaces the backoff, capped at
one day. Defaults follow Temporal's (1 s doubling); `durably dev --retry-base/--retry-max`
change them (tests use milliseconds).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from durably_server.model import Failure

MAX_RETRY_AFTER_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base_ms: int = 1000
    max_ms: int = 3_600_000
    jitter: float = 0.2

    def delay_ms(self, attempt: int, failure: Failure | None = None) -> int:
        """How long to wait before `attempt` (1 = the first retry)."""
        if failure is not None and failure.retry_after_ms > 0:
            return min(failure.retry_after_ms, MAX_RETRY_AFTER_MS)
        delay: int = min(self.max_ms, self.base_ms << max(0, attempt - 1))
        return round(delay * (1 + random.uniform(0, self.jitter)))


STORE_RETRY = RetryPolicy(base_ms=500, max_ms=30_000)
"""When an execution whose result could not be committed (the store failed: a full disk, a file locked
by another program) runs again: n consecutive failures of a run wait `delay_ms(n)`. Not at once: a
full disk fails every commit at once, and each new attempt runs the step's body, side effects and all,
again (tests/e2e/test_store_locked.py saw 1,222 runs of one step in 3 s)."""
