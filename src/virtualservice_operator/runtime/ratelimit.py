"""Re-queue delay policies, after client-go's `default_rate_limiters.go`.

A rate limiter answers one question: "this key failed (again); how long before it may
be retried?". Policies are tiny and combine by taking the maximum, so the controller's
default is per-key exponential back-off bounded by a global token bucket.

Concurrency: none. Limiters are plain state machines called from the event loop's
thread by the work queue; they never sleep, they only compute delays.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Protocol

from virtualservice_operator.runtime.clock import Clock, RealClock


class RateLimiter(Protocol):
    def when(self, item: Hashable) -> float:
        """Seconds to wait before `item` is retried; records one more failure."""
        ...

    def forget(self, item: Hashable) -> None:
        """Stop tracking `item` (it succeeded): its next failure starts from scratch."""
        ...

    def num_requeues(self, item: Hashable) -> int:
        """How many failures are currently recorded for `item`."""
        ...


class ItemExponentialFailureRateLimiter:
    """Per-key back-off: `base * 2**failures`, capped at `cap` seconds."""

    def __init__(self, base: float = 0.005, cap: float = 1000.0) -> None:
        if base <= 0 or cap < base:
            raise ValueError(f"need 0 < base <= cap, got base={base}, cap={cap}")
        self._base = base
        self._cap = cap
        # One entry per key that failed and has not been forgotten; the queue's user
        # must call forget() on success or this grows with every key ever retried.
        self._failures: dict[Hashable, int] = {}

    def when(self, item: Hashable) -> float:
        exponent = self._failures.get(item, 0)
        self._failures[item] = exponent + 1
        try:
            # ldexp is base * 2**exponent without building a huge int first.
            delay = math.ldexp(self._base, exponent)
        except OverflowError:
            # A key that failed ~1000 times: the float overflows, the cap applies.
            return self._cap
        return min(delay, self._cap)

    def forget(self, item: Hashable) -> None:
        self._failures.pop(item, None)

    def num_requeues(self, item: Hashable) -> int:
        return self._failures.get(item, 0)


class BucketRateLimiter:
    """A global token bucket (golang.org/x/time/rate semantics): `qps` refill, `burst` size.

    Every call reserves a token, even one not yet available, so a burst of callers
    gets increasing delays (0.1 s, 0.2 s, ... at 10 qps) rather than the same one.
    """

    def __init__(self, qps: float = 10.0, burst: int = 100, clock: Clock | None = None) -> None:
        if qps <= 0 or burst < 1:
            raise ValueError(f"need qps > 0 and burst >= 1, got qps={qps}, burst={burst}")
        self._qps = qps
        self._burst = float(burst)
        self._clock: Clock = clock or RealClock()
        self._tokens = float(burst)
        self._last = self._clock.now()

    def when(self, item: Hashable) -> float:
        now = self._clock.now()
        # Refill for the time elapsed, never beyond the burst size.
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._qps)
        self._last = now
        self._tokens -= 1.0
        # A negative balance is debt already promised to earlier callers.
        return 0.0 if self._tokens >= 0 else -self._tokens / self._qps

    def forget(self, item: Hashable) -> None:
        """Nothing per key to forget: the bucket is shared by all keys."""

    def num_requeues(self, item: Hashable) -> int:
        return 0


class MaxOfRateLimiter:
    """The longest delay any of its limiters asks for."""

    def __init__(self, *limiters: RateLimiter) -> None:
        if not limiters:
            raise ValueError("MaxOfRateLimiter needs at least one limiter")
        self._limiters = limiters

    def when(self, item: Hashable) -> float:
        # Ask every limiter (not just until one wins): each one records the failure.
        return max([limiter.when(item) for limiter in self._limiters])

    def forget(self, item: Hashable) -> None:
        for limiter in self._limiters:
            limiter.forget(item)

    def num_requeues(self, item: Hashable) -> int:
        return max(limiter.num_requeues(item) for limiter in self._limiters)


def default_controller_rate_limiter(clock: Clock | None = None) -> MaxOfRateLimiter:
    """Per-key 5 ms..1000 s exponential back-off, and 10 qps / burst 100 overall.

    This is older controller-runtime's default (newer versions keep only the per-key
    part); the bucket keeps a storm of failing keys from hammering the API server.
    """
    return MaxOfRateLimiter(
        ItemExponentialFailureRateLimiter(0.005, 1000.0),
        BucketRateLimiter(qps=10.0, burst=100, clock=clock),
    )
