"""Cron triggers: each (function, schedule) has one alarm at its next tick.

A tick stores a `durably/cron` event for that function alone, with an id made of the
function, the schedule and the tick time, so a tick runs once even if it fires twice.
Ticks missed while the daemon was down are skipped, never fired in a burst: at start-up
(and after each tick) the next tick is computed from the current time.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from croniter import croniter

from durably_server.engine.alarms import Alarms
from durably_server.ids import now_ms
from durably_server.model import Event, FunctionSpec

CRON_EVENT = "durably/cron"
Tick = tuple[tuple[str, str], str, str, int]  # (function key, schedule, zone, due ms)


def next_tick(schedule: str, zone: str, after_ms: int) -> int:
    start = datetime.fromtimestamp(after_ms / 1000, ZoneInfo(zone))
    return int(croniter(schedule, start).get_next(datetime).timestamp() * 1000)


def tick_event(spec: FunctionSpec, schedule: str, zone: str, due_ms: int) -> Event:
    digest = hashlib.sha1(f"{spec.app_id}/{spec.id}/{schedule}/{zone}".encode()).hexdigest()[:16]
    data = {
        "schedule": schedule,
        "timezone": zone,
        "scheduled_at": datetime.fromtimestamp(due_ms / 1000, UTC).isoformat(),
    }
    return Event(f"cron.{digest}.{due_ms}", CRON_EVENT, json.dumps(data).encode(), due_ms)


class Cron:
    def __init__(
        self,
        spec_of: Callable[[tuple[str, str]], FunctionSpec | None],
        send: Callable[[FunctionSpec, Event], Awaitable[None]],
    ) -> None:
        self._spec_of = spec_of
        self._send = send
        self._alarms: Alarms[Tick] = Alarms(self._fire)
        self._armed: set[tuple[tuple[str, str], str, str]] = set()

    def sync(self, specs: list[FunctionSpec]) -> None:
        """Arm the schedules of `specs` that have no alarm yet (a removed one lapses at its tick)."""
        now = now_ms()
        for spec in specs:
            for schedule, zone in spec.crons:
                if (spec.key, schedule, zone) not in self._armed:
                    self._armed.add((spec.key, schedule, zone))
                    self._arm(spec.key, schedule, zone, now)

    def _arm(self, key: tuple[str, str], schedule: str, zone: str, after_ms: int) -> None:
        due = next_tick(schedule, zone, after_ms)
        self._alarms.add(due, (key, schedule, zone, due))

    def start(self) -> None:
        self._alarms.start()

    def stop(self) -> None:
        self._alarms.stop()

    async def _fire(self, ticks: list[Tick]) -> None:
        await asyncio.gather(*(self._tick(tick) for tick in ticks))

    async def _tick(self, tick: Tick) -> None:
        key, schedule, zone, due = tick
        spec = self._spec_of(key)
        if spec is None or (schedule, zone) not in spec.crons:
            self._armed.discard((key, schedule, zone))
            return
        try:
            await self._send(spec, tick_event(spec, schedule, zone, due))
        finally:
            self._arm(key, schedule, zone, max(now_ms(), due))
