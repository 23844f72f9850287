"""FakeClock: time moves only on advance(); sleepers wake when their deadline passes."""

from __future__ import annotations

import asyncio

import pytest

from virtualservice_operator.runtime.clock import Clock, FakeClock, RealClock


async def test_real_clock_is_monotonic_and_sleeps() -> None:
    clock: Clock = RealClock()
    before = clock.now()
    await clock.sleep(0)
    await clock.sleep(-1)  # a negative delay is no delay
    assert clock.now() >= before


async def test_fake_clock_starts_where_told_and_moves_only_on_advance() -> None:
    clock = FakeClock(start=100.0)
    assert clock.now() == 100.0
    await asyncio.sleep(0)
    assert clock.now() == 100.0
    clock.advance(2.5)
    assert clock.now() == 102.5
    with pytest.raises(ValueError):
        clock.advance(-1)


async def test_sleeper_wakes_only_when_deadline_passes() -> None:
    clock = FakeClock()
    sleeper = asyncio.create_task(clock.sleep(10))
    await asyncio.sleep(0)
    assert clock.pending_sleepers == 1
    assert clock.next_deadline() == 10.0
    clock.advance(9.999)
    await asyncio.sleep(0)
    assert not sleeper.done()
    clock.advance(0.001)
    await asyncio.wait_for(sleeper, 1)
    assert clock.pending_sleepers == 0
    assert clock.next_deadline() is None


async def test_sleepers_wake_in_deadline_order() -> None:
    clock = FakeClock()
    woke: list[str] = []

    async def sleep_then_note(seconds: float, name: str) -> None:
        await clock.sleep(seconds)
        woke.append(name)

    tasks = [
        asyncio.create_task(sleep_then_note(3, "c")),
        asyncio.create_task(sleep_then_note(1, "a")),
        asyncio.create_task(sleep_then_note(2, "b")),
    ]
    await asyncio.sleep(0)
    clock.advance(1)
    await asyncio.sleep(0)
    assert woke == ["a"]
    clock.advance(5)
    await asyncio.wait_for(asyncio.gather(*tasks), 1)
    assert woke == ["a", "b", "c"]


async def test_zero_sleep_returns_without_advance() -> None:
    clock = FakeClock()
    await asyncio.wait_for(clock.sleep(0), 1)
    assert clock.pending_sleepers == 0


async def test_cancelled_sleeper_is_forgotten() -> None:
    clock = FakeClock()
    sleeper = asyncio.create_task(clock.sleep(5))
    await asyncio.sleep(0)
    sleeper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sleeper
    assert clock.pending_sleepers == 0
    assert clock.next_deadline() is None
    clock.advance(10)  # resolving nothing must not fail
