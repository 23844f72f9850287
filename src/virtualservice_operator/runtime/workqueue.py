"""A de-duplicating, rate-limited asyncio work queue with client-go semantics.

Events only say *which key* to look at; the queue turns a storm of events into one
reconcile per key, and guarantees that a key is never handled by two workers at once.

State (all touched only from the event loop's thread, so no locks are needed):

- `_ready`: FIFO of keys that a worker may take now.
- `_dirty`: keys that need processing: every key in `_ready`, plus keys re-added while
  a worker holds them. A key already dirty is not added again: 1,000 adds of 10 keys
  hold 10 entries.
- `_processing`: keys handed out by `get()` and not yet `done()`. A key re-added while
  processing is only marked dirty; `done()` puts it back in `_ready`. Hence never two
  workers on one key, and no change is lost: the second pass sees the newer state.
- `_delayed` and `_heap`: keys waiting for `add_after`. One background task sleeps on
  the injected clock until the earliest deadline, then `add()`s what is due. A new,
  shorter delay for a waiting key wins; a longer one is ignored (client-go's
  delaying queue). The heap drops superseded entries lazily and is compacted when
  they pile up, so memory stays proportional to distinct keys.

`get()` waits on a future per blocked worker (like `asyncio.Queue`), woken one at a
time by `add()`/`done()`.

Shutdown, chosen for an operator that must stop at once when it loses leadership:
`shutdown()` is immediate: adds are ignored, delayed keys dropped, and every `get()`,
waiting or future, raises `ShutDown` even if keys are still queued (the controller
is level-triggered and resyncs everything on start, so nothing is lost). Workers
still holding a key finish and call `done()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
from collections import deque
from collections.abc import Hashable
from typing import Generic, Protocol, TypeVar

from virtualservice_operator.runtime.clock import Clock, RealClock
from virtualservice_operator.runtime.ratelimit import RateLimiter, default_controller_rate_limiter

K = TypeVar("K", bound=Hashable)

_log = logging.getLogger(__name__)


class ShutDown(Exception):
    """The queue was shut down: the worker calling `get()` should exit."""


class QueueMetricsRecorder(Protocol):
    """What the queue reports; `metrics.QueueMetrics` is the Prometheus implementation."""

    def add(self, key: Hashable) -> None:
        """`key` became dirty (a real add, after de-duplication)."""
        ...

    def get(self, key: Hashable) -> None:
        """`key` was handed to a worker."""
        ...

    def done(self, key: Hashable) -> None:
        """The worker finished with `key`."""
        ...

    def retry(self, key: Hashable) -> None:
        """`key` was re-queued with rate limiting."""
        ...


class NoopQueueMetrics:
    def add(self, key: Hashable) -> None:
        pass

    def get(self, key: Hashable) -> None:
        pass

    def done(self, key: Hashable) -> None:
        pass

    def retry(self, key: Hashable) -> None:
        pass


class WorkQueue(Generic[K]):
    """See the module docstring. Methods must be called from the event loop's thread."""

    def __init__(
        self,
        name: str,
        *,
        clock: Clock | None = None,
        rate_limiter: RateLimiter | None = None,
        metrics: QueueMetricsRecorder | None = None,
    ) -> None:
        self.name = name
        self._clock: Clock = clock or RealClock()
        self._limiter: RateLimiter = rate_limiter or default_controller_rate_limiter(self._clock)
        self._metrics: QueueMetricsRecorder = metrics or NoopQueueMetrics()

        self._ready: deque[K] = deque()
        self._dirty: set[K] = set()
        self._processing: set[K] = set()
        self._getters: deque[asyncio.Future[None]] = deque()

        # key -> (ready_at, sequence) of its one live heap entry; the sequence tells a
        # live entry from a superseded one and keeps the heap from comparing keys.
        self._delayed: dict[K, tuple[float, int]] = {}
        self._heap: list[tuple[float, int, K]] = []
        self._seq = itertools.count()
        self._delay_changed = asyncio.Event()
        self._delay_task: asyncio.Task[None] | None = None

        self._shut_down = False  # once True, adds are ignored and get() raises ShutDown

    def __len__(self) -> int:
        """Keys waiting to be handed out (= workqueue_depth), including re-adds parked
        behind a worker that still holds the key. Delayed keys are not counted."""
        return len(self._dirty)

    # -- the basic queue -------------------------------------------------------------

    def add(self, key: K) -> None:
        """Queue `key` unless it is already queued; if a worker holds it, re-queue it
        when that worker calls `done()`."""
        if self._shut_down or key in self._dirty:
            return
        self._metrics.add(key)
        self._dirty.add(key)
        if key in self._processing:
            return
        self._ready.append(key)
        self._wake_one_getter()

    async def get(self) -> K:
        """The next key to process; the caller must call `done(key)` afterwards.

        Raises `ShutDown` once the queue is shut down (see the module docstring)."""
        while not self._ready or self._shut_down:
            if self._shut_down:
                raise ShutDown(self.name)
            getter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._getters.append(getter)
            try:
                await getter
            except BaseException:
                getter.cancel()
                with contextlib.suppress(ValueError):
                    self._getters.remove(getter)
                # We may have been woken for a key and then cancelled: pass the wake-up
                # on, or that key would sit in the queue with workers asleep.
                if self._ready and not getter.cancelled():
                    self._wake_one_getter()
                raise
        key = self._ready.popleft()
        self._dirty.discard(key)
        self._processing.add(key)
        self._metrics.get(key)
        return key

    def done(self, key: K) -> None:
        """Mark `key` as finished; if it was re-added meanwhile, it is queued again."""
        if key not in self._processing:
            return  # tolerate a double done(): it must not hand the key out twice
        self._processing.discard(key)
        self._metrics.done(key)
        if key in self._dirty:
            self._ready.append(key)
            self._wake_one_getter()

    def _wake_one_getter(self) -> None:
        while self._getters:
            getter = self._getters.popleft()
            if not getter.done():
                getter.set_result(None)
                return

    # -- delays and rate limiting ----------------------------------------------------

    def add_after(self, key: K, delay: float) -> None:
        """Add `key` once `delay` seconds have passed on the queue's clock.

        Needs a running event loop (the first call starts the background waiter)."""
        if self._shut_down:
            return
        if delay <= 0:
            self.add(key)
            return
        ready_at = self._clock.now() + delay
        current = self._delayed.get(key)
        if current is not None and current[0] <= ready_at:
            return  # already due sooner: the earlier deadline wins
        seq = next(self._seq)
        self._delayed[key] = (ready_at, seq)
        heapq.heappush(self._heap, (ready_at, seq, key))
        if len(self._heap) > 2 * len(self._delayed) + 64:
            self._heap = [(at, s, k) for k, (at, s) in self._delayed.items()]
            heapq.heapify(self._heap)
        self._ensure_delay_task()
        self._delay_changed.set()

    def add_rate_limited(self, key: K) -> None:
        """Re-queue `key` after the rate limiter's delay (one more failure recorded)."""
        if self._shut_down:
            return
        self._metrics.retry(key)
        self.add_after(key, self._limiter.when(key))

    def forget(self, key: K) -> None:
        """Clear `key`'s failure history: call after every successful reconcile."""
        self._limiter.forget(key)

    def num_requeues(self, key: K) -> int:
        return self._limiter.num_requeues(key)

    def _ensure_delay_task(self) -> None:
        if self._delay_task is None or self._delay_task.done():
            self._delay_task = asyncio.get_running_loop().create_task(
                self._run_delays(), name=f"workqueue-{self.name}-delays"
            )
            self._delay_task.add_done_callback(_log_crash)

    async def _run_delays(self) -> None:
        while True:
            self._delay_changed.clear()
            self._add_due()
            if not self._heap:
                await self._delay_changed.wait()
                continue
            await self._sleep_unless_changed(self._heap[0][0] - self._clock.now())

    def _add_due(self) -> None:
        now = self._clock.now()
        while self._heap:
            ready_at, seq, key = self._heap[0]
            live = self._delayed.get(key) == (ready_at, seq)
            if live and ready_at > now:
                return
            heapq.heappop(self._heap)
            if live:
                del self._delayed[key]
                self.add(key)

    async def _sleep_unless_changed(self, seconds: float) -> None:
        # Wake at the earliest deadline, or sooner if add_after() brings one forward.
        sleeper = asyncio.ensure_future(self._clock.sleep(seconds))
        changed = asyncio.ensure_future(self._delay_changed.wait())
        try:
            await asyncio.wait((sleeper, changed), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            changed.cancel()

    # -- shutdown --------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop now: every `get()` raises `ShutDown`, adds are ignored."""
        self._shut_down = True
        self._delayed.clear()
        self._heap.clear()
        if self._delay_task is not None:
            self._delay_task.cancel()
        while self._getters:
            getter = self._getters.popleft()
            if not getter.done():
                getter.set_result(None)  # the woken get() sees _shut_down and raises


def _log_crash(task: asyncio.Task[None]) -> None:
    # The delay loop only stops by cancellation; anything else would silently stall
    # every delayed key, so say so loudly.
    if not task.cancelled() and task.exception() is not None:
        _log.error("work queue delay loop crashed", exc_info=task.exception())
