"""Rate limiter policies: exponential per-key back-off, token bucket, max-of."""

from __future__ import annotations

import pytest

from virtualservice_operator.runtime.clock import FakeClock
from virtualservice_operator.runtime.ratelimit import (
    BucketRateLimiter,
    ItemExponentialFailureRateLimiter,
    MaxOfRateLimiter,
    RateLimiter,
    default_controller_rate_limiter,
)


def test_exponential_doubles_per_failure_from_base() -> None:
    limiter = ItemExponentialFailureRateLimiter(base=0.005, cap=1000.0)
    delays = [limiter.when("a") for _ in range(5)]
    assert delays == pytest.approx([0.005, 0.01, 0.02, 0.04, 0.08])
    assert limiter.num_requeues("a") == 5


def test_exponential_is_per_key_and_forget_resets() -> None:
    limiter = ItemExponentialFailureRateLimiter(base=1.0, cap=100.0)
    limiter.when("a")
    limiter.when("a")
    assert limiter.when("b") == 1.0
    assert limiter.when("a") == 4.0
    limiter.forget("a")
    assert limiter.num_requeues("a") == 0
    assert limiter.when("a") == 1.0
    assert limiter.num_requeues("b") == 1
    limiter.forget("never-seen")  # harmless


def test_exponential_caps_and_survives_huge_failure_counts() -> None:
    limiter = ItemExponentialFailureRateLimiter(base=0.005, cap=1000.0)
    delays = [limiter.when("a") for _ in range(5000)]
    # 0.005 * 2**17 = 655 s < cap < 0.005 * 2**18
    assert delays[17] == pytest.approx(655.36)
    assert delays[18] == 1000.0
    assert delays[-1] == 1000.0  # 2**4999 would overflow a float
    assert max(delays) == 1000.0


@pytest.mark.parametrize(("base", "cap"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_exponential_rejects_bad_settings(base: float, cap: float) -> None:
    with pytest.raises(ValueError):
        ItemExponentialFailureRateLimiter(base=base, cap=cap)


def test_bucket_allows_a_burst_then_spaces_callers_at_qps() -> None:
    clock = FakeClock()
    bucket = BucketRateLimiter(qps=10, burst=100, clock=clock)
    burst = [bucket.when(i) for i in range(100)]
    assert burst == [0.0] * 100
    # Each caller past the burst reserves the next token: 0.1 s, 0.2 s, 0.3 s.
    assert [bucket.when(i) for i in range(3)] == pytest.approx([0.1, 0.2, 0.3])
    assert bucket.num_requeues(0) == 0
    bucket.forget(0)  # the bucket is global: nothing per key


def test_bucket_refills_with_time_but_not_beyond_burst() -> None:
    clock = FakeClock()
    bucket = BucketRateLimiter(qps=10, burst=5, clock=clock)
    for _ in range(5):
        assert bucket.when("k") == 0.0
    assert bucket.when("k") == pytest.approx(0.1)  # one token in debt
    clock.advance(0.3)  # pays the debt and refills two tokens
    assert bucket.when("k") == 0.0
    assert bucket.when("k") == 0.0
    assert bucket.when("k") == pytest.approx(0.1)
    clock.advance(3600)  # an idle hour refills to the burst size only
    assert [bucket.when("k") for _ in range(5)] == [0.0] * 5
    assert bucket.when("k") == pytest.approx(0.1)


@pytest.mark.parametrize(("qps", "burst"), [(0.0, 1), (1.0, 0)])
def test_bucket_rejects_bad_settings(qps: float, burst: int) -> None:
    with pytest.raises(ValueError):
        BucketRateLimiter(qps=qps, burst=burst, clock=FakeClock())


class _Recording:
    def __init__(self, delay: float, requeues: int) -> None:
        self.delay = delay
        self.requeues = requeues
        self.calls: list[str] = []

    def when(self, item: object) -> float:
        self.calls.append(f"when {item}")
        return self.delay

    def forget(self, item: object) -> None:
        self.calls.append(f"forget {item}")

    def num_requeues(self, item: object) -> int:
        return self.requeues


def test_max_of_takes_the_longest_delay_and_asks_everyone() -> None:
    short, long = _Recording(1.0, 3), _Recording(5.0, 1)
    limiter: RateLimiter = MaxOfRateLimiter(short, long)
    assert limiter.when("a") == 5.0
    # Every limiter must record the failure, not only the winner.
    assert short.calls == long.calls == ["when a"]
    assert limiter.num_requeues("a") == 3
    limiter.forget("a")
    assert short.calls[-1] == long.calls[-1] == "forget a"


def test_max_of_needs_a_limiter() -> None:
    with pytest.raises(ValueError):
        MaxOfRateLimiter()


def test_default_controller_limiter_is_exponential_within_the_bucket() -> None:
    clock = FakeClock()
    limiter = default_controller_rate_limiter(clock)
    assert limiter.when("a") == pytest.approx(0.005)
    assert limiter.when("a") == pytest.approx(0.01)
    assert limiter.num_requeues("a") == 2
    limiter.forget("a")
    assert limiter.num_requeues("a") == 0
    # 100 distinct failing keys use up the burst; the bucket then dominates.
    for i in range(97):
        limiter.when(i)
    assert limiter.when("b") == pytest.approx(0.005)  # 100th token
    assert limiter.when("c") == pytest.approx(0.1)
    for _ in range(30):
        limiter.when("a")
    assert limiter.when("a") == 1000.0  # the per-key cap
