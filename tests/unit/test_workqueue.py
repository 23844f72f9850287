"""The work queue: de-duplication, one worker per key, delays, rate limits, shutdown.

Time is a FakeClock: tests advance it instead of sleeping. Where the event loop has to
turn for something to happen, tests await it with a real-time deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from virtualservice_operator.runtime.clock import FakeClock
from virtualservice_operator.runtime.ratelimit import ItemExponentialFailureRateLimiter
from virtualservice_operator.runtime.workqueue import ShutDown, WorkQueue


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def queue(clock: FakeClock) -> AsyncIterator[WorkQueue[str]]:
    q: WorkQueue[str] = WorkQueue(
        "test", clock=clock, rate_limiter=ItemExponentialFailureRateLimiter(1.0, 8.0)
    )
    yield q
    q.shutdown()


async def settle() -> None:
    """Let every runnable task run (each hop of a wake-up takes one loop turn)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def get(q: WorkQueue[str]) -> str:
    return await asyncio.wait_for(q.get(), 1)


async def assert_blocks(q: WorkQueue[str]) -> asyncio.Task[str]:
    """Start a get() and check it is still waiting once the loop has settled."""
    task = asyncio.create_task(q.get())
    await settle()
    assert not task.done()
    return task


async def test_keys_come_out_in_order(queue: WorkQueue[str]) -> None:
    for key in "abc":
        queue.add(key)
    assert len(queue) == 3
    assert [await get(queue) for _ in range(3)] == ["a", "b", "c"]
    assert len(queue) == 0
    assert len(queue._processing) == 3


async def test_duplicate_adds_collapse(queue: WorkQueue[str]) -> None:
    queue.add("a")
    queue.add("b")
    queue.add("a")
    assert len(queue) == 2
    assert await get(queue) == "a"
    assert await get(queue) == "b"
    (await assert_blocks(queue)).cancel()


async def test_thousand_adds_of_ten_keys_hold_ten_entries(queue: WorkQueue[str]) -> None:
    for i in range(1000):
        queue.add(f"key-{i % 10}")
    assert len(queue) == 10
    got = {await get(queue) for _ in range(10)}
    assert got == {f"key-{i}" for i in range(10)}
    (await assert_blocks(queue)).cancel()


async def test_a_key_in_processing_is_not_handed_to_a_second_worker(
    queue: WorkQueue[str],
) -> None:
    queue.add("a")
    assert await get(queue) == "a"
    queue.add("a")
    queue.add("a")
    assert len(queue) == 1  # parked behind the worker, counted once
    second = await assert_blocks(queue)
    queue.done("a")
    assert await asyncio.wait_for(second, 1) == "a"
    queue.done("a")
    assert len(queue) == 0
    assert len(queue._processing) == 0


async def test_done_without_readd_does_not_requeue(queue: WorkQueue[str]) -> None:
    queue.add("a")
    assert await get(queue) == "a"
    queue.done("a")
    queue.done("a")  # a stray second done() must not hand the key out again
    queue.done("never-added")
    assert len(queue) == 0
    (await assert_blocks(queue)).cancel()


async def test_other_keys_flow_while_one_is_processing(queue: WorkQueue[str]) -> None:
    queue.add("a")
    assert await get(queue) == "a"
    queue.add("a")
    queue.add("b")
    assert await get(queue) == "b"  # "a" waits for its worker, "b" does not


async def test_waiting_workers_each_get_one_key(queue: WorkQueue[str]) -> None:
    workers = [asyncio.create_task(queue.get()) for _ in range(3)]
    await settle()
    queue.add("a")
    queue.add("b")
    await settle()
    finished = [w for w in workers if w.done()]
    assert sorted(w.result() for w in finished) == ["a", "b"]
    queue.add("c")
    assert await asyncio.wait_for(asyncio.gather(*workers), 1) == ["a", "b", "c"]


async def test_a_cancelled_worker_passes_its_wake_up_on(queue: WorkQueue[str]) -> None:
    first = asyncio.create_task(queue.get())
    second = asyncio.create_task(queue.get())
    await settle()
    queue.add("a")  # wakes `first`...
    first.cancel()  # ...which is cancelled before it runs
    await settle()
    assert first.cancelled()
    assert await asyncio.wait_for(second, 1) == "a"


async def test_add_after_waits_for_the_clock(queue: WorkQueue[str], clock: FakeClock) -> None:
    queue.add_after("a", 5)
    assert len(queue._delayed) == 1
    await settle()
    clock.advance(4.9)
    await settle()
    assert len(queue) == 0
    clock.advance(0.1)
    assert await get(queue) == "a"
    assert len(queue._delayed) == 0


async def test_add_after_releases_keys_in_deadline_order(
    queue: WorkQueue[str], clock: FakeClock
) -> None:
    queue.add_after("c", 3)
    queue.add_after("a", 1)
    queue.add_after("b", 2)
    clock.advance(10)
    assert [await get(queue) for _ in range(3)] == ["a", "b", "c"]


async def test_a_new_earlier_deadline_wakes_the_delay_loop(
    queue: WorkQueue[str], clock: FakeClock
) -> None:
    queue.add_after("late", 100)
    await settle()  # the loop is now asleep until t=100
    queue.add_after("soon", 1)
    await settle()
    clock.advance(1)
    assert await get(queue) == "soon"
    assert len(queue._delayed) == 1


async def test_shorter_delay_wins_longer_is_ignored(
    queue: WorkQueue[str], clock: FakeClock
) -> None:
    queue.add_after("a", 10)
    queue.add_after("a", 2)  # sooner: replaces
    queue.add_after("a", 50)  # later: ignored
    assert len(queue._delayed) == 1
    clock.advance(2)
    assert await get(queue) == "a"
    queue.done("a")
    clock.advance(100)  # the superseded deadlines must not add it again
    await settle()
    assert len(queue) == 0
    assert len(queue._delayed) == 0


async def test_non_positive_delay_adds_at_once(queue: WorkQueue[str]) -> None:
    queue.add_after("a", 0)
    queue.add_after("b", -1)
    assert len(queue) == 2
    assert len(queue._delayed) == 0


async def test_delayed_key_already_queued_is_not_duplicated(
    queue: WorkQueue[str], clock: FakeClock
) -> None:
    queue.add("a")
    queue.add_after("a", 1)
    clock.advance(1)
    await settle()
    assert len(queue) == 1


async def test_superseded_delays_do_not_pile_up(queue: WorkQueue[str]) -> None:
    for i in range(10_000):
        queue.add_after("a", 100_000 - i)
    assert len(queue._delayed) == 1
    # Superseded heap entries are compacted away: memory follows distinct keys.
    assert len(queue._heap) < 100


async def test_rate_limited_adds_back_off_and_forget_resets(
    queue: WorkQueue[str], clock: FakeClock
) -> None:
    queue.add_rate_limited("a")  # 1 s
    assert queue.num_requeues("a") == 1
    await settle()
    clock.advance(0.5)
    await settle()
    assert len(queue) == 0
    clock.advance(0.5)
    assert await get(queue) == "a"
    queue.done("a")

    queue.add_rate_limited("a")  # 2 s
    clock.advance(1)
    await settle()
    assert len(queue) == 0
    clock.advance(1)
    assert await get(queue) == "a"
    queue.done("a")
    assert queue.num_requeues("a") == 2

    queue.forget("a")
    assert queue.num_requeues("a") == 0
    queue.add_rate_limited("a")  # back to 1 s
    clock.advance(1)
    assert await get(queue) == "a"


async def test_default_rate_limiter_starts_at_five_milliseconds(clock: FakeClock) -> None:
    q: WorkQueue[str] = WorkQueue("default", clock=clock)
    q.add_rate_limited("a")
    clock.advance(0.005)
    assert await asyncio.wait_for(q.get(), 1) == "a"
    q.shutdown()


async def test_shutdown_wakes_waiting_workers(queue: WorkQueue[str]) -> None:
    waiting = await assert_blocks(queue)
    queue.shutdown()
    with pytest.raises(ShutDown):
        await asyncio.wait_for(waiting, 1)


async def test_shutdown_is_immediate_and_ignores_later_adds(
    queue: WorkQueue[str], clock: FakeClock
) -> None:
    queue.add("a")
    queue.add("b")
    assert await get(queue) == "a"
    queue.add_after("c", 1)
    queue.shutdown()
    with pytest.raises(ShutDown):
        await get(queue)  # "b" is still queued, but shutdown is immediate
    queue.add("d")
    queue.add_after("e", 1)
    queue.add_rate_limited("f")
    assert len(queue._delayed) == 0
    clock.advance(10)
    await settle()
    queue.done("a")  # a worker finishing after shutdown is fine
    with pytest.raises(ShutDown):
        await get(queue)


# -- property: any interleaving of add / get / done / cancelled get ------------------

_KEYS = "abcd"
_operation = st.one_of(
    st.tuples(st.just("add"), st.sampled_from(_KEYS)),
    st.tuples(st.just("get"), st.just(0)),
    st.tuples(st.just("done"), st.integers(0, 3)),
    st.tuples(st.just("cancel"), st.integers(0, 3)),
)


async def _run_interleaving(operations: list[tuple[str, object]]) -> None:
    q: WorkQueue[str] = WorkQueue("prop", clock=FakeClock())
    getters: list[asyncio.Task[str]] = []
    in_flight: list[str] = []
    # needs_handout[k]: k was added after the last time it was handed out.
    needs_handout: dict[str, bool] = {}

    def harvest() -> None:
        for task in [t for t in getters if t.done()]:
            getters.remove(task)
            if task.cancelled():
                continue
            key = task.result()
            assert key not in in_flight, f"{key} handed to two workers at once"
            in_flight.append(key)
            needs_handout[key] = False

    for op, arg in operations:
        if op == "add":
            assert isinstance(arg, str)
            q.add(arg)
            needs_handout[arg] = True
        elif op == "get":
            getters.append(asyncio.create_task(q.get()))
        elif op == "done" and in_flight:
            assert isinstance(arg, int)
            q.done(in_flight.pop(arg % len(in_flight)))
        elif op == "cancel" and getters:
            assert isinstance(arg, int)
            getters[arg % len(getters)].cancel()
        await settle()
        harvest()

    # Finish everything: every key added must come out again.
    for _ in range(200):
        if in_flight:
            q.done(in_flight.pop())
        elif len(q) and not getters:
            getters.append(asyncio.create_task(q.get()))
        elif not len(q):
            break
        await settle()
        harvest()
    assert not in_flight
    assert len(q) == 0
    assert not any(needs_handout.values()), needs_handout

    q.shutdown()
    results = await asyncio.gather(*getters, return_exceptions=True)
    assert all(isinstance(r, ShutDown) for r in results)


@settings(max_examples=150, deadline=None)
@given(st.lists(_operation, max_size=40))
def test_no_key_is_held_twice_and_every_add_is_handed_out(
    operations: list[tuple[str, object]],
) -> None:
    asyncio.run(_run_interleaving(operations))
