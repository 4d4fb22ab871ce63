"""durably: durable step functions in plain async Python.

Declare functions with a :class:`Client`, make their side effects steps with ``ctx.step.run``, and
serve them with a :class:`Worker`; the durably executor checkpoints every step, so a failed, crashed
or restarted run resumes where it stopped and never repeats finished work::

    client = durably.Client(app_id="shop")

    @client.function(id="process-order", trigger=durably.on_event("order/placed"))
    async def process_order(ctx: durably.Context) -> dict[str, str]:
        charge = await ctx.step.run("charge-customer", charge_customer, ctx.event.data["customerId"])
        await ctx.step.run("send-confirmation", send_email, charge["chargeId"])
        return {"chargeId": charge["chargeId"]}

    await durably.Worker(client, functions=[process_order]).run()
"""

from durably._client import Client
from durably._context import Context
from durably._durations import Duration
from durably._encryption import Encryption
from durably._function import Concurrency, CronTrigger, EventTrigger, Function, Timeouts, on_cron, on_event
from durably._step import Step
from durably._sync_client import SyncClient
from durably._tls import TLSConfig
from durably._types import ErrorInfo, Event, FunctionInfo, Run, RunStatus, RunStep
from durably._version import __version__
from durably._worker import Worker
from durably.errors import (
    DecryptionError,
    DurablyError,
    LimitExceeded,
    NonRetriableError,
    OutputUnserializableError,
    RetryAfterError,
    RunNotFoundError,
    StateTooLarge,
    StepError,
    StepLimitExceeded,
    StepOutputTooLarge,
)

__all__ = [
    "Client",
    "Concurrency",
    "Context",
    "CronTrigger",
    "DecryptionError",
    "DurablyError",
    "Duration",
    "Encryption",
    "ErrorInfo",
    "Event",
    "EventTrigger",
    "Function",
    "FunctionInfo",
    "LimitExceeded",
    "NonRetriableError",
    "OutputUnserializableError",
    "RetryAfterError",
    "Run",
    "RunNotFoundError",
    "RunStatus",
    "RunStep",
    "StateTooLarge",
    "Step",
    "StepError",
    "StepLimitExceeded",
    "StepOutputTooLarge",
    "SyncClient",
    "TLSConfig",
    "Timeouts",
    "Worker",
    "__version__",
    "on_cron",
    "on_event",
]
