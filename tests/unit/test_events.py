"""EventRecorder: duplicates within the window are dropped, memory is bounded, and
a full queue drops rather than grows. (The cost per event is measured by the benchmark:
bench/README.md.)"""

from __future__ import annotations

import tracemalloc

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


def test_remembered_events_cost_a_digest_not_their_text() -> None:
    # An Event naming twenty placeholders is about a KiB of text, made by the reconcile
    # that records it (so only the recorder keeps it); 10,000 are remembered.
    rec = EventRecorder(None, component="test", capacity=1)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(10_000):
            name = f"svc-{i:05d}"
            objects = ", ".join(f"dev{j:02d}/{name}" for j in range(20))
            rec.normal(ObjectRef("Service", "prod", name), "PlaceholderCreated", objects)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(rec._recent) == 10_000
    assert held < 2 * 2**20, f"{held / 2**20:.1f} MiB for 10,000 remembered Events"
