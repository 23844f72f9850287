"""Kubernetes Events on the objects the operator acts for (`kubectl describe` shows them).

Recording never blocks a reconcile: events go to a bounded queue that one task drains.
The same event for the same object is sent at most once per `dedupe_seconds` (a resync
re-deciding the same thing must not flood etcd); a full queue drops, and says so.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import os
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass

import structlog

from virtualservice_operator.kube.client import EVENTS, ApiError, KubeClient
from virtualservice_operator.runtime.tasks import cancel_and_wait

log = structlog.get_logger("events")


@dataclass(frozen=True)
class ObjectRef:
    kind: str
    namespace: str
    name: str
    api_version: str = "v1"
    uid: str = ""


@dataclass(frozen=True)
class _Event:
    ref: ObjectRef
    type: str
    reason: str
    message: str


class EventRecorder:
    """A part of the manager: `start()` begins sending, `stop()` drops what is unsent."""

    needs_leader = False

    def __init__(
        self,
        client: KubeClient | None,
        *,
        component: str,
        dedupe_seconds: float = 600.0,
        capacity: int = 1000,
        remember: int = 10_000,
        enabled: bool = True,
    ) -> None:
        self._client = client
        self._enabled = enabled  # False: Events are dropped unsent (a dry run writes nothing)
        self._component = component  # who reports: Events' source and reportingComponent
        self._dedupe = dedupe_seconds
        self._queue: asyncio.Queue[_Event] = asyncio.Queue(maxsize=capacity)
        # Oldest first; bounded, so remembering costs O(1) per event at any scale. Keyed
        # by a digest of the event: one that names twenty placeholders is a KiB of text,
        # 10 MiB for the 10,000 remembered, against about 1 MiB as digests.
        self._recent: OrderedDict[bytes, float] = OrderedDict()
        self._remember = remember
        self._task: asyncio.Task[None] | None = None
        self._host = os.environ.get("POD_NAME") or os.uname().nodename
        self.dropped = 0

    def normal(self, ref: ObjectRef, reason: str, message: str) -> None:
        self._record(_Event(ref, "Normal", reason, message))

    def warning(self, ref: ObjectRef, reason: str, message: str) -> None:
        self._record(_Event(ref, "Warning", reason, message))

    def _record(self, event: _Event) -> None:
        if not self._enabled:
            return
        now = time.monotonic()
        key = hashlib.blake2b(repr(event).encode(), digest_size=16).digest()
        last = self._recent.get(key)
        if last is not None and now - last < self._dedupe:
            return
        self._recent[key] = now
        self._recent.move_to_end(key)
        while len(self._recent) > self._remember:
            self._recent.popitem(last=False)
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            # The API server is not keeping up with our Events: drop, and say so sparingly.
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning(
                    "event queue full, events dropped", dropped=self.dropped, reason=event.reason
                )

    async def start(self) -> None:
        if self._task is None and self._client is not None:
            self._task = asyncio.create_task(self._drain(), name="event recorder")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _drain(self) -> None:
        assert self._client is not None
        while True:
            event = await self._queue.get()
            try:
                await self._client.create(EVENTS, event.ref.namespace, self._body(event))
            except ApiError as e:
                log.debug("could not record event", reason=event.reason, error=str(e))

    def _body(self, event: _Event) -> dict[str, object]:
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        ref = event.ref
        involved = {
            "kind": ref.kind,
            "namespace": ref.namespace,
            "name": ref.name,
            "apiVersion": ref.api_version,
        }
        if ref.uid:
            involved["uid"] = ref.uid
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{ref.name}.{uuid.uuid4().hex[:16]}", "namespace": ref.namespace},
            "involvedObject": involved,
            "reason": event.reason,
            "message": event.message[:1024],
            "type": event.type,
            "source": {"component": self._component, "host": self._host},
            "reportingComponent": self._component,
            "reportingInstance": self._host,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
