"""Every exception the SDK raises or understands, and the stable code each one travels with.

Errors cross the wire as a ``Failure`` (name, message, stack, non_retriable, code). ``code`` is the
machine-readable part the executor and other languages can rely on, so each kind of error owns one
:class:`ErrorCode` value here and nowhere else.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import ClassVar

from durably._durations import instant_ms, now_ms, parse_duration, parse_instant, to_ms


class ErrorCode(StrEnum):
    """Stable strings sent as ``Failure.code`` (the same vocabulary as Inngest's SDKs)."""

    UNKNOWN = "unknown"
    """Any exception that is not a durably error: a bug or a transient fault in user code."""
    NON_RETRIABLE_ERROR = "non_retriable_error"
    RETRY_AFTER_ERROR = "retry_after_error"
    STEP_ERRORED = "step_errored"
    """A step failed for good and the handler did not catch the resulting StepError."""
    STEP_NESTED = "step_nested"
    """``step.run`` was called inside another step's body."""
    OUTPUT_UNSERIALIZABLE = "output_unserializable"
    FUNCTION_NOT_FOUND = "function_not_found"
    """The executor asked this worker to run a function it did not register."""
    STEP_NOT_FOUND = "step_not_found"
    """A targeted execution did not reach a planned step it was asked to run."""
    LIMIT_EXCEEDED = "limit_exceeded"
    RUN_NOT_FOUND = "run_not_found"
    SERVICE_ERROR = "service_error"
    DECRYPTION_FAILED = "decryption_failed"
    """A sealed value could not be opened: its key is missing, or it was altered (``durably.Encryption``)."""


class DurablyError(Exception):
    """Base class of every error the SDK defines, so ``except durably.DurablyError`` catches them all."""

    code: ClassVar[ErrorCode] = ErrorCode.UNKNOWN


class NonRetriableError(DurablyError):
    """Raise it from a step or a handler when retrying cannot help: the step (or run) fails at once."""

    code = ErrorCode.NON_RETRIABLE_ERROR


class RetryAfterError(DurablyError):
    """Raise it when the failure is transient and you know when to try again (e.g. a rate limit says
    "retry in 30 s"): the executor retries at that time instead of after its own backoff.

    ``after`` is a delay (seconds as an int or float, or a ``timedelta``) or a point in time (an aware
    ``datetime``; a time already past means "as soon as the backoff allows"). Raised in a step's body,
    that step is retried; raised in the handler outside steps, the execution is. It is retriable:
    once the function's retries are used up the step (or run) fails as with any other error.
    """

    code = ErrorCode.RETRY_AFTER_ERROR

    def __init__(self, message: str, after: float | timedelta | datetime) -> None:
        super().__init__(message)
        self._delay: timedelta | None = None
        if isinstance(after, datetime):
            parse_instant(after, what="RetryAfterError(after=...)")
        elif isinstance(after, float | int | timedelta) and not isinstance(after, bool):
            self._delay = parse_duration(after, what="RetryAfterError(after=...)")
        else:
            raise TypeError(f"RetryAfterError(after=...) takes seconds, a timedelta or a datetime, not {after!r}")
        self.after = after

    def __reduce__(self) -> tuple[object, tuple[str, float | timedelta | datetime]]:
        return (type(self), (str(self), self.after))

    def retry_after_ms(self) -> int:
        """How long from now the executor should wait before the next attempt, in ms (0 for a past time).

        Read when the failure is reported, so a ``datetime`` counts from then.
        """
        if self._delay is not None:
            return to_ms(self._delay)
        assert isinstance(self.after, datetime)
        return max(0, instant_ms(self.after) - now_ms())


class StepError(DurablyError):
    """Raised inside the handler by ``step.run`` when that step failed for good (retries exhausted or
    non-retriable), and by ``step.invoke`` when the child run failed or timed out. Catch it to
    recover; left uncaught, the run fails without further retries.

    Replays raise it again from the saved failure, without running the step's code. A step that
    failed because it breached a limit raises an exception that is also the matching
    :class:`LimitExceeded` subclass (see :func:`step_error`), so either ``except`` catches it.
    """

    code = ErrorCode.STEP_ERRORED

    def __init__(
        self, step_id: str, error_name: str, error_message: str, stack: str = "", error_code: str = ""
    ) -> None:
        super().__init__(f'step "{step_id}" failed: {error_name}: {error_message}')
        self.step_id = step_id
        """The step id as written in ``step.run(id, ...)``."""
        self.error_name = error_name
        """Class name of the exception the step raised, e.g. ``"ValueError"``."""
        self.error_message = error_message
        self.stack = stack
        """The traceback text of the original failure (may be empty)."""
        self.error_code = error_code
        """The :class:`ErrorCode` value the failure was saved with (empty if unknown)."""

    def __reduce__(self) -> tuple[object, tuple[str, str, str, str, str]]:
        # Through step_error, so a limit failure unpickles as the same combined class.
        return (step_error, (self.step_id, self.error_name, self.error_message, self.stack, self.error_code))


class StepNestedError(NonRetriableError):
    """``step.run`` was called while another step's body was running; steps cannot contain steps,
    because the inner step's result would be recorded inside an outer result that may be retried."""

    code = ErrorCode.STEP_NESTED


class OutputUnserializableError(NonRetriableError):
    """A step or handler returned a value JSON cannot represent; retrying would return it again."""

    code = ErrorCode.OUTPUT_UNSERIALIZABLE


class LimitExceeded(DurablyError):
    """A limit (steps per run, output size, state size, duration) was breached.

    The executor fails a run that breaches a run-wide limit itself; ``Run.error.name`` then names the
    subclass (``"StepLimitExceeded"``, ``"StateTooLarge"``, ...) and ``Run.error.code`` is
    ``"limit_exceeded"``.
    """

    code = ErrorCode.LIMIT_EXCEEDED


class StepLimitExceeded(LimitExceeded):
    """The run reached the limit of 1,000 steps."""


class StepOutputTooLarge(LimitExceeded):
    """A step returned more than 4 MiB of JSON. The SDK refuses it before sending, so the step fails
    for good at once instead of being retried into the same wall."""


class StateTooLarge(LimitExceeded):
    """The run's saved state (event, step results, output) grew past 32 MiB."""


def _limit_step_error(limit: type[LimitExceeded]) -> type[StepError]:
    """A class that is both :class:`StepError` and ``limit``, named like ``limit``: uncaught, it fails
    the run with the limit's name and code rather than a generic ``StepError``."""
    namespace = {
        "code": ErrorCode.LIMIT_EXCEEDED,
        "__module__": __name__,
        "__doc__": f"A step that failed for good with {limit.__name__}; also a StepError.",
    }
    return type(limit.__name__, (StepError, limit), namespace)


_LIMIT_STEP_ERRORS = {
    limit.__name__: _limit_step_error(limit)
    for limit in (LimitExceeded, StepLimitExceeded, StepOutputTooLarge, StateTooLarge)
}


def step_error(step_id: str, error_name: str, error_message: str, stack: str = "", error_code: str = "") -> StepError:
    """The exception ``step.run`` raises for a step saved as failed.

    A failure saved with code ``limit_exceeded`` gives an exception that is also the
    :class:`LimitExceeded` subclass named by ``error_name`` (plain :class:`LimitExceeded` for a name
    this SDK does not know), so handlers can catch it either way.
    """
    cls = StepError
    if error_code == ErrorCode.LIMIT_EXCEEDED:
        cls = _LIMIT_STEP_ERRORS.get(error_name, _LIMIT_STEP_ERRORS[LimitExceeded.__name__])
    return cls(step_id, error_name, error_message, stack, error_code)


class RunNotFoundError(DurablyError):
    """The executor knows no run with this id."""

    code = ErrorCode.RUN_NOT_FOUND


class ServiceError(DurablyError):
    """The executor refused or failed a client call; ``status`` is the gRPC status name."""

    code = ErrorCode.SERVICE_ERROR

    def __init__(self, message: str, *, status: str = "UNKNOWN") -> None:
        super().__init__(message)
        self.status = status


class InvalidArgumentError(ServiceError, ValueError):
    """The request was malformed (gRPC ``INVALID_ARGUMENT`` or a check before sending). Also a
    ``ValueError``, since that is what it is."""


class UnavailableError(ServiceError, ConnectionError):
    """The executor could not be reached (gRPC ``UNAVAILABLE``): it is down, restarting or elsewhere."""


class DecryptionError(DurablyError):
    """A value sealed by :class:`durably.Encryption` could not be opened: sealed with a key this
    ``Encryption`` does not hold (add it to ``fallback_keys``), or altered in the store. Raised in a
    handler, it fails that attempt like any error, so a worker given the key can finish the run."""

    code = ErrorCode.DECRYPTION_FAILED


def error_code(exc: BaseException) -> ErrorCode:
    """The ``Failure.code`` for an exception raised by user code."""
    return exc.code if isinstance(exc, DurablyError) else ErrorCode.UNKNOWN
