"""EventRecorder: duplicates within the window are dropped, memory is bounded, and
a full queue drops rather than grows. (The cost per event is measured by the benchmark:
bench/README.md.)"""

from __future__ import annotations

from virtualservice_operator.runtime.events import EventRecorder, ObjectRef


def test_duplicate_events_are_sent_once() -> None:
    rec = EventRecorder(None, component="test")
    ref = ObjectRef("Service", "prod", "web")
    rec.normal(ref, "VirtualServiceCreated", "made")
    rec.normal(ref, "VirtualServiceCreated", "made")
    rec.normal(ref, "VirtualServiceUpdated", "changed")
    assert rec._queue.qsize() == 2


def test_memory_is_bounded() -> None:
    rec = EventRecorder(None, component="test", capacity=10, remember=1000)
    for i in range(50_000):
        rec.normal(ObjectRef("Service", "prod", f"s{i}"), "PlaceholderCreated", "made")
    assert len(rec._recent) == 1000
    assert rec._queue.qsize() == 10
    assert rec.dropped == 50_000 - 10
