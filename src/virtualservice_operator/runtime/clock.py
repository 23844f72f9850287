"""Time, injected.

Everything that waits or measures time (the work queue's delays, rate limiters, queue
metrics) takes a `Clock` instead of calling `time.monotonic` / `asyncio.sleep` itself,
so tests step time with `FakeClock.advance` rather than sleeping.

Concurrency: `FakeClock` is driven from the event loop's thread. A sleeper is an
asyncio future resolved by `advance`; the sleeping coroutine resumes on the next turn
of the loop, so a test advances time and then awaits the condition it expects (with a
real-time deadline, e.g. `asyncio.wait_for(queue.get(), 1)`).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds; only differences are meaningful."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class RealClock:
    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class FakeClock:
    """A clock that only moves when told to; sleepers wake when their deadline passes."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        # (deadline, sequence, future): the sequence keeps equal deadlines in FIFO order
        # and means futures are never compared.
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            # Still yield, as asyncio.sleep(0) does, so a loop of zero sleeps cannot
            # starve the event loop.
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), future))
        try:
            await future
        finally:
            # A cancelled sleeper stays in the heap until its deadline passes or we
            # prune it here; pruning keeps `pending_sleepers` honest for tests.
            if future.cancelled():
                self._prune()

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose deadline is now past."""
        if seconds < 0:
            raise ValueError("time only moves forward")
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    @property
    def pending_sleepers(self) -> int:
        """How many coroutines are sleeping on this clock (tests wait for this)."""
        return sum(1 for _, _, future in self._sleepers if not future.done())

    def next_deadline(self) -> float | None:
        """The earliest pending wake-up time, or None when nobody sleeps."""
        self._prune()
        return self._sleepers[0][0] if self._sleepers else None

    def _prune(self) -> None:
        live = [entry for entry in self._sleepers if not entry[2].done()]
        if len(live) != len(self._sleepers):
            heapq.heapify(live)
            self._sleepers = live
