"""Alarms: one task sleeps until the earliest due time; a new earliest shortens the wait; row ids are kept
one int per alarm, in due order."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from durably_server.engine import alarms as alarms_module
from durably_server.engine.alarms import ID_BITS, Alarms, Heap, IdHeap, PayloadHeap
from durably_server.ids import now_ms


@pytest.mark.parametrize("heap", [PayloadHeap, IdHeap])
async def test_due_payloads_fire_in_due_order_in_batches(
    monkeypatch: pytest.MonkeyPatch, heap: Callable[[], Heap[int]]
) -> None:
    monkeypatch.setattr(alarms_module, "FIRE_BATCH", 3)
    fired: list[list[int]] = []

    async def fire(due: list[int]) -> None:
        fired.append(due)

    alarms: Alarms[int] = Alarms(fire, heap())
    alarms.start()
    try:
        past = now_ms() - 1000
        for n in (4, 2, 0, 3, 1):
            alarms.add(past + n, n)
        for _ in range(100):
            await asyncio.sleep(0.01)
            if sum(map(len, fired)) == 5:
                break
        assert fired == [[0, 1, 2], [3, 4]] and len(alarms) == 0
    finally:
        alarms.stop()


def _recording() -> tuple[Alarms[str], dict[str, float]]:
    """Started alarms that note when each payload fired (monotonic seconds)."""
    fired: dict[str, float] = {}

    async def fire(due: list[str]) -> None:
        for name in due:
            fired[name] = time.monotonic()

    alarms: Alarms[str] = Alarms(fire)
    alarms.start()
    return alarms, fired


async def test_an_earlier_due_time_added_while_waiting_fires_on_time() -> None:
    alarms, fired = _recording()
    try:
        started = time.monotonic()
        alarms.add(now_ms() + 60_000, "in a minute")
        await asyncio.sleep(0.05)  # the task now waits for the minute
        alarms.add(now_ms() + 100, "soon")
        for _ in range(200):
            await asyncio.sleep(0.01)
            if "soon" in fired:
                break
        assert list(fired) == ["soon"]
        assert 0.14 <= fired["soon"] - started < 1.0
        assert len(alarms) == 1
    finally:
        alarms.stop()


async def test_a_wall_clock_set_forward_fires_what_became_due_and_one_set_back_fires_nothing_early(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Due times are wall-clock instants; the task sleeps on the loop's monotonic clock. The clock is
    moved here by shifting what `now_ms` reads, as an operator or NTP would move the machine's."""
    monkeypatch.setattr(alarms_module, "MAX_WAIT_S", 0.05)
    shift = {"ms": 0}
    monkeypatch.setattr(alarms_module, "now_ms", lambda: now_ms() + shift["ms"])
    alarms, fired = _recording()
    try:
        alarms.add(now_ms() + 3_600_000, "in an hour")
        await asyncio.sleep(0.1)  # the task waits (for the hour, at most MAX_WAIT_S at a time)
        jumped = time.monotonic()
        shift["ms"] = 3_600_000  # the clock is set an hour forward: the alarm is due now
        for _ in range(100):
            await asyncio.sleep(0.01)
            if fired:
                break
        assert list(fired) == ["in an hour"] and fired["in an hour"] - jumped < 0.5, fired
        alarms.add(now_ms() + shift["ms"] + 200, "in 200 ms")
        shift["ms"] -= 3_600_000  # and an hour back, before it is due: it must wait for the hour again
        await asyncio.sleep(0.5)
        assert "in 200 ms" not in fired and len(alarms) == 1
        shift["ms"] += 3_600_000  # the clock comes back: now it is late, and fires at once
        for _ in range(100):
            await asyncio.sleep(0.01)
            if "in 200 ms" in fired:
                break
        assert "in 200 ms" in fired and len(alarms) == 0
    finally:
        alarms.stop()


async def test_payloads_whose_firing_failed_fire_again_later(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(alarms_module, "RETRY_MS", 100)
    tries: list[tuple[list[str], float]] = []

    async def fire(due: list[str]) -> None:
        tries.append((due, time.monotonic()))
        if len(tries) == 1:
            raise RuntimeError("the store failed")

    alarms: Alarms[str] = Alarms(fire)
    alarms.start()
    try:
        alarms.add(now_ms() - 1, "timer")
        for _ in range(100):
            await asyncio.sleep(0.01)
            if len(tries) == 2:
                break
        assert [due for due, _ in tries] == [["timer"], ["timer"]], tries  # once more, then not again
        assert tries[1][1] - tries[0][1] >= 0.09
        await asyncio.sleep(0.2)
        assert len(tries) == 2 and len(alarms) == 0
    finally:
        alarms.stop()


async def test_only_the_payloads_a_firing_could_not_do_fire_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(alarms_module, "RETRY_MS", 100)
    tries: list[list[str]] = []

    async def fire(due: list[str]) -> list[str] | None:
        tries.append(due)
        return ["b"] if len(tries) == 1 else None

    alarms: Alarms[str] = Alarms(fire)
    alarms.start()
    try:
        past = now_ms() - 1
        alarms.add(past, "a")
        alarms.add(past, "b")
        for _ in range(100):
            await asyncio.sleep(0.01)
            if len(tries) == 2:
                break
        await asyncio.sleep(0.2)
        assert tries == [["a", "b"], ["b"]] and len(alarms) == 0
    finally:
        alarms.stop()


def test_a_heap_of_row_ids_gives_them_back_by_due_time_then_id() -> None:
    heap = IdHeap()
    entries = [(2_000, 7), (1_000, (1 << ID_BITS) - 1), (2_000, 3), (1_000, 0), (-5, 9)]
    for due, row_id in entries:
        heap.push(due, row_id)
    got = []
    while heap:
        got.append((heap.earliest(), heap.pop()))
    assert got == sorted(entries) and heap.earliest() is None
    with pytest.raises(ValueError, match="not a row id"):
        heap.push(1_000, -1)
