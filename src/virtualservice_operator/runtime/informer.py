"""A cached list+watch of one resource kind in one namespace (or cluster-wide).

Concurrency design: one asyncio task per informer runs `list`, then `watch` from the
list's resourceVersion, forever. The store is only written from that task (and from
`upsert`/`forget` right after the operator's own writes, so the next reconcile sees
them before the watch does); readers on the same event loop never see a torn state.

Resilience, as client-go's reflector:
- a watch that ends normally (server timeout) resumes from the last resourceVersion;
- 410 Gone (etcd compacted past our version) relists, and the relist reports
  deletions that happened in the gap, so nothing missed is lost;
- a silent connection ends after `idle_timeout` and is re-established;
- other errors back off exponentially (capped) before trying again.
Only the fields `transform` keeps are held in memory.

resourceVersions are opaque strings (API conventions): compared for equality only.
Events are applied in the watch's order, which is etcd's. After `upsert` records our own
write at version V, the key's events are older than V until V's own event arrives (a
watch delivers in order), so they are skipped until then; `_recent` tells `upsert`
whether V's event already came (then the store is at V or past it).
"""

from __future__ import annotations

import asyncio
import functools
import random
import sys
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Generic, Protocol, TypeVar

from virtualservice_operator.kube.client import (
    JSON,
    WATCH_IDLE_TIMEOUT,
    WATCH_TIMEOUT,
    ApiError,
    Gone,
    Kind,
    KubeClient,
)
from virtualservice_operator.runtime.tasks import cancel_and_wait

T = TypeVar("T")


class Keyed(Protocol):
    """A list item decoded into a Struct (`Kind.items`) rather than JSON."""

    @property
    def key(self) -> str: ...


Handler = Callable[[T | None, T | None], None]
"""Called with (old, new) after each change: (None, new) added, (old, None) deleted."""


@functools.cache
def _log() -> Any:
    # Imported when first needed: the read-only commands never log, and structlog is a
    # noticeable part of their start-up.
    import structlog

    return structlog.get_logger("informer")


def object_key(obj: JSON | Keyed) -> str:
    if not isinstance(obj, dict):
        return obj.key
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{ns}/{meta['name']}" if ns else str(meta["name"])


def object_name(obj: JSON | Keyed) -> str:
    """The name alone, interned: the store key of an informer of one namespace. Interned,
    it is the same string as a record's own interned name, so a key costs nothing."""
    if not isinstance(obj, dict):
        return sys.intern(obj.key.rpartition("/")[2])
    return sys.intern(str((obj.get("metadata") or {})["name"]))


# (key, version) pairs the watch delivered last: enough to cover the events a watch can
# deliver between a write's answer and its `upsert` (the same event loop turn or two).
RECENT_EVENTS = 256


class Informer(Generic[T]):
    def __init__(
        self,
        client: KubeClient,
        kind: Kind,
        namespace: str | None,
        *,
        transform: Callable[[JSON], T],
        version_of: Callable[[T], str],
        handler: Handler[T] | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        indexers: dict[str, Callable[[T], Iterable[str]]] | None = None,
        watch_timeout: int = WATCH_TIMEOUT,
        idle_timeout: float = WATCH_IDLE_TIMEOUT,
        backoff_cap: float = 30.0,
        page_size: int = 500,
        on_failure: Callable[[BaseException], bool] | None = None,
        key_by_name: bool = False,
    ) -> None:
        self._client = client
        # One namespace's store keyed by name alone ("namespace/name" otherwise): at
        # 200,000 Services the "namespace/name" strings alone were 14 MiB.
        self._key = object_name if key_by_name and namespace else object_key
        self.kind = kind
        self.namespace = namespace
        self._transform = transform
        self._version_of = version_of
        self._handlers: list[Handler[T]] = [handler] if handler else []
        self._label_selector = label_selector
        self._field_selector = field_selector
        self._indexers = indexers or {}
        self._indices: dict[str, dict[str, set[str]]] = {name: {} for name in self._indexers}
        self._watch_timeout = watch_timeout
        self._idle_timeout = idle_timeout
        self._backoff_cap = backoff_cap
        self._page_size = page_size
        # Told of each failed list or watch before the back-off; True: it has said what
        # matters itself, so the retry is logged at debug level only.
        self._on_failure = on_failure
        self._store: dict[str, T] = {}
        # Our writes whose watch event is still to come: key -> the write's version.
        self._awaited: dict[str, str] = {}
        self._recent: deque[tuple[str, str]] = deque(maxlen=RECENT_EVENTS)
        self.resource_version = ""
        self.synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- reading ------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._store)

    def get(self, key: str) -> T | None:
        """By "namespace/name" (namespaced kinds) or "name" (cluster-scoped kinds, or an
        informer of one namespace keyed by name)."""
        return self._store.get(key)

    def values(self) -> list[T]:
        return list(self._store.values())

    def by_index(self, index: str, value: str) -> list[T]:
        keys = self._indices[index].get(value, ())
        return [self._store[k] for k in sorted(keys) if k in self._store]

    @property
    def description(self) -> str:
        where = self.namespace or "all namespaces"
        sel = f" ({self._label_selector})" if self._label_selector else ""
        return f"{self.kind.plural} in {where}{sel}"

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name=f"informer {self.description}")
        return self._task

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def run(self) -> None:
        failures = 0
        need_list = True
        while True:
            try:
                if need_list:
                    await self.relist()
                    need_list = False
                await self._watch()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Gone:
                _log().info("watch expired, relisting", resource=self.description)
                need_list = True
            except ApiError as e:
                failures += 1
                # A watch that keeps failing may be stuck on a version: relist then.
                need_list = need_list or failures >= 3
                await self._backoff(failures, e)
            except Exception as e:  # a bug or a malformed object must not kill the cache
                failures += 1
                need_list = True
                await self._backoff(failures, e)

    async def _backoff(self, failures: int, error: BaseException) -> None:
        delay = min(self._backoff_cap, 0.2 * 2 ** min(failures, 10)) * (0.5 + random.random() / 2)
        handled = self._on_failure is not None and self._on_failure(error)
        (_log().debug if handled else _log().warning)(
            "watch failed, retrying",
            resource=self.description,
            error=str(error),
            retry_in_s=round(delay, 2),
        )
        await asyncio.sleep(delay)

    async def relist(self) -> None:
        """List everything, replace the store and report what changed. The watch loop
        calls it at start and after a 410; a read-only command calls it once, without
        starting the loop."""
        fresh: dict[str, T] = {}
        version = ""
        async for items, page_version in self._client.list_pages(
            self.kind,
            self.namespace,
            label_selector=self._label_selector,
            field_selector=self._field_selector,
            limit=self._page_size,
        ):
            # Transform page by page: only the kept fields outlive the page's raw JSON.
            fresh.update((self._key(obj), self._transform(obj)) for obj in items)
            version = page_version
        old_store = self._store
        self._store = {}
        self._awaited.clear()  # the list is past any write of ours
        for index in self._indices.values():
            index.clear()
        for key, new in fresh.items():
            self._put(key, new)
            old = old_store.get(key)
            if old is None or self._version_of(old) != self._version_of(new):
                self._notify(old, new)
        # Deletions that happened while we were not watching: report them too.
        for key, old in old_store.items():
            if key not in fresh:
                self._notify(old, None)
        self.resource_version = version
        self.synced.set()

    async def _watch(self) -> None:
        timeout = int(self._watch_timeout * (1 + random.random()))
        async for event_type, obj in self._client.watch(
            self.kind,
            self.namespace,
            resource_version=self.resource_version,
            label_selector=self._label_selector,
            field_selector=self._field_selector,
            timeout_seconds=timeout,
            idle_timeout=self._idle_timeout,
        ):
            version = version_of_json(obj)
            if event_type == "BOOKMARK":
                self.resource_version = version or self.resource_version
                continue
            key = self._key(obj)
            if event_type == "DELETED":
                self._awaited.pop(key, None)
                old = self._pop(key)
                if old is not None:
                    self._notify(old, None)
            else:
                self._recent.append((key, version))
                awaited = self._awaited.get(key)
                if awaited is not None:
                    # Until our write's own event (recorded already), events are older.
                    if version == awaited:
                        del self._awaited[key]
                else:
                    new = self._transform(obj)
                    old = self._store.get(key)
                    if old is None or self._version_of(new) != self._version_of(old):
                        self._put(key, new)
                        self._notify(old, new)
            self.resource_version = version or self.resource_version

    # -- after our own writes -----------------------------------------------------------

    def upsert(self, obj: JSON) -> None:
        """Record the API server's answer to our write, so the next reconcile sees it."""
        key = self._key(obj)
        new = self._transform(obj)
        version = version_of_json(obj)
        old = self._store.get(key)
        if old is not None and self._version_of(old) == version:
            return  # its event came already, or the write changed nothing
        if (key, version) in self._recent:
            return  # its event came already: the store is at that version or past it
        self._put(key, new)
        self._awaited[key] = version

    def forget(self, key: str) -> None:
        self._pop(key)

    # -- store and indices --------------------------------------------------------------

    def _put(self, key: str, value: T) -> None:
        self._unindex(key)
        self._store[key] = value
        for name, fn in self._indexers.items():
            for v in fn(value):
                self._indices[name].setdefault(v, set()).add(key)

    def _pop(self, key: str) -> T | None:
        self._unindex(key)
        return self._store.pop(key, None)

    def _unindex(self, key: str) -> None:
        old = self._store.get(key)
        if old is None:
            return
        for name, fn in self._indexers.items():
            for v in fn(old):
                keys = self._indices[name].get(v)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del self._indices[name][v]

    def _notify(self, old: T | None, new: T | None) -> None:
        for handler in self._handlers:
            try:
                handler(old, new)
            except Exception as e:  # a handler's bug must not stop the watch
                _log().error("event handler failed", resource=self.description, error=str(e))


def strip_managed_fields(obj: JSON) -> JSON:
    """Drop what the operator never reads: managedFields are large and churn."""
    meta = obj.get("metadata")
    if isinstance(meta, dict) and "managedFields" in meta:
        obj = {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
    return obj


def version_of_json(obj: JSON) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion", ""))
