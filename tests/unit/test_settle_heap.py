"""Once the caches are filled, their objects leave the cyclic collector's sight: a full
collection then walks only what came after, not the whole cache (bench/README.md: churn
p99 at 210,000 Services from 1.1 s to 62 ms)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from typing import Any

import pytest

from virtualservice_operator.operator.parts import CachePart, settle_heap
from virtualservice_operator.runtime.metrics import OperatorMetrics


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


class _Record:
    __slots__ = ("labels", "name")

    def __init__(self, name: str) -> None:
        self.name, self.labels = name, {"app": name}


def _walked_by_a_full_collection(obj: object) -> bool:
    """Whether a full collection would look at `obj`: it is in one of the three
    generations (frozen objects are in none)."""
    return any(o is obj for o in gc.get_objects())


def test_a_full_collection_no_longer_walks_the_settled_heap() -> None:
    cache = [_Record(f"svc-{i}") for i in range(10_000)]  # tracked, like the cache's records
    assert _walked_by_a_full_collection(cache[-1])
    settle_heap()
    assert gc.get_freeze_count() >= len(cache)
    assert not _walked_by_a_full_collection(cache[-1])
    later = _Record("after")  # what comes after is collected as before
    assert _walked_by_a_full_collection(later)


def test_the_cache_part_settles_the_heap_once_synced() -> None:
    class Cache:
        async def reconfigure(self, config: Any) -> None:
            self.filled = [_Record(str(i)) for i in range(1000)]

        def informers(self) -> list[Any]:
            return []

    synced: list[int] = []
    part = CachePart(Cache(), lambda: None, OperatorMetrics(), synced=lambda: synced.append(1))  # type: ignore[arg-type]
    asyncio.run(part.start())
    assert synced == [1]
    assert gc.get_freeze_count() >= 1000
