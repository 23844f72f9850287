"""Informer semantics with a scripted fake API: relist on 410 reports missed deletions,
watch resumes from the last resourceVersion, bookmarks advance it, errors back off."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from virtualservice_operator.kube.client import SERVICES, Gone, ServerError
from virtualservice_operator.runtime.informer import Informer, version_of_json


def svc(name: str, rv: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": rv}}


class FakeClient:
    """Lists return `self.objects`; each watch call plays the next script (a list of events,
    or an exception to raise), then ends (as a server-side timeout would)."""

    def __init__(self) -> None:
        self.objects: list[dict[str, Any]] = []
        self.list_version = "10"
        self.lists = 0
        self.watch_versions: list[str] = []
        self.scripts: list[list[tuple[str, dict[str, Any]]] | BaseException] = []
        self.idle = asyncio.Event()

    async def list(
        self, kind: Any, namespace: Any = None, **_: Any
    ) -> tuple[list[dict[str, Any]], str]:
        self.lists += 1
        return list(self.objects), self.list_version

    async def list_pages(
        self, kind: Any, namespace: Any = None, **kw: Any
    ) -> AsyncIterator[tuple[list[dict[str, Any]], str]]:
        items, version = await self.list(kind, namespace, **kw)
        # Two pages, as the API server paginates: the store must hold both.
        half = len(items) // 2
        yield items[:half], ""
        yield items[half:], version

    async def watch(
        self, kind: Any, namespace: Any = None, *, resource_version: str, **_: Any
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        self.watch_versions.append(resource_version)
        if not self.scripts:
            self.idle.set()
            await asyncio.Event().wait()
        script = self.scripts.pop(0)
        if isinstance(script, BaseException):
            raise script
        for event in script:
            yield event


async def run_until_idle(informer: Informer[dict[str, Any]], client: FakeClient) -> None:
    task = informer.start()
    try:
        await asyncio.wait_for(client.idle.wait(), 5)
    finally:
        await informer.stop()
        assert task.done()


def make(client: FakeClient, events: list[tuple[str, str]]) -> Informer[dict[str, Any]]:
    def handler(old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        kind = "add" if old is None else "delete" if new is None else "update"
        events.append((kind, (new or old)["metadata"]["name"]))  # type: ignore[index]

    return Informer(
        client,
        SERVICES,
        "ns",
        transform=lambda o: o,
        version_of=version_of_json,
        handler=handler,
        backoff_cap=0.01,
    )  # type: ignore[arg-type]


async def test_list_then_watch_from_list_version_and_bookmarks_advance() -> None:
    client = FakeClient()
    client.objects = [svc("a", "5")]
    client.scripts = [
        [("ADDED", svc("b", "11")), ("BOOKMARK", {"metadata": {"resourceVersion": "15"}})]
    ]
    events: list[tuple[str, str]] = []
    informer = make(client, events)
    await run_until_idle(informer, client)
    assert events == [("add", "a"), ("add", "b")]
    assert client.watch_versions == ["10", "15"]  # resumed from the bookmark, no relist
    assert client.lists == 1


async def test_gone_relists_and_reports_deletions_missed_in_the_gap() -> None:
    client = FakeClient()
    client.objects = [svc("a", "5"), svc("b", "6")]
    client.scripts = [Gone(410, "Expired", "too old")]
    events: list[tuple[str, str]] = []
    informer = make(client, events)
    original_list = client.list

    async def list_after_gap(
        kind: Any, namespace: Any = None, **kw: Any
    ) -> tuple[list[dict[str, Any]], str]:
        if client.lists == 1:  # the relist: meanwhile "b" was deleted and "c" created
            client.objects = [svc("a", "5"), svc("c", "20")]
            client.list_version = "21"
        return await original_list(kind, namespace, **kw)

    client.list = list_after_gap  # type: ignore[method-assign]
    await run_until_idle(informer, client)
    assert events == [("add", "a"), ("add", "b"), ("add", "c"), ("delete", "b")]
    assert client.lists == 2
    assert client.watch_versions == ["10", "21"]
    assert informer.get("ns/b") is None and informer.get("ns/c") is not None


async def test_connection_errors_back_off_and_resume_without_relist() -> None:
    client = FakeClient()
    client.scripts = [ServerError(0, "WatchInterrupted", "idle"), [("ADDED", svc("x", "12"))]]
    events: list[tuple[str, str]] = []
    informer = make(client, events)
    await run_until_idle(informer, client)
    assert events == [("add", "x")]
    assert client.lists == 1
    assert client.watch_versions == ["10", "10", "12"]


async def test_stale_event_does_not_overwrite_newer_write() -> None:
    client = FakeClient()
    client.objects = [svc("a", "5")]
    client.scripts = [[("MODIFIED", svc("a", "7"))]]
    informer = make(client, [])
    task = informer.start()
    await asyncio.wait_for(informer.synced.wait(), 5)
    informer.upsert(svc("a", "9"))  # our own write's answer, newer than the event in flight
    await asyncio.wait_for(client.idle.wait(), 5)
    await informer.stop()
    assert task.done()
    assert informer.get("ns/a")["metadata"]["resourceVersion"] == "9"  # type: ignore[index]


async def test_resource_versions_are_opaque_the_watch_order_wins() -> None:
    """API conventions: a resourceVersion is an opaque string. A newer event whose
    version is smaller as a number, or not a number at all, is still newer."""
    client = FakeClient()
    client.objects = [svc("a", "10")]
    client.scripts = [[("MODIFIED", svc("a", "9")), ("MODIFIED", svc("a", "v-x"))]]
    events: list[tuple[str, str]] = []
    informer = make(client, events)
    await run_until_idle(informer, client)
    assert events == [("add", "a"), ("update", "a"), ("update", "a")]
    assert informer.get("ns/a")["metadata"]["resourceVersion"] == "v-x"  # type: ignore[index]


async def test_after_our_write_events_wait_for_its_own_then_flow_again() -> None:
    client = FakeClient()
    client.objects = [svc("a", "p")]
    events: list[tuple[str, str]] = []
    informer = make(client, events)
    await informer.relist()
    informer.upsert(svc("a", "ours"))
    client.scripts = [
        [
            ("MODIFIED", svc("a", "older")),  # in flight before our write: skipped
            ("MODIFIED", svc("a", "ours")),  # our write's own event: already recorded
            ("MODIFIED", svc("a", "later")),  # someone else's, after ours
        ]
    ]
    await informer._watch()
    assert informer.get("ns/a")["metadata"]["resourceVersion"] == "later"  # type: ignore[index]
    assert events == [("add", "a"), ("update", "a")], "older skipped, ours not reported twice"


async def test_a_write_whose_event_came_first_does_not_roll_the_store_back() -> None:
    client = FakeClient()
    client.objects = [svc("a", "p")]
    client.scripts = [[("MODIFIED", svc("a", "ours")), ("MODIFIED", svc("a", "later"))]]
    informer = make(client, [])
    await run_until_idle(informer, client)
    informer.upsert(svc("a", "ours"))  # the answer handled after the watch went past it
    assert informer.get("ns/a")["metadata"]["resourceVersion"] == "later"  # type: ignore[index]


@pytest.mark.parametrize("deleted_in_watch", [True, False])
async def test_delete_event_removes_from_store_and_indices(deleted_in_watch: bool) -> None:
    client = FakeClient()
    client.objects = [svc("a", "5")]
    client.scripts = [[("DELETED", svc("a", "8"))]] if deleted_in_watch else []
    informer = Informer(
        client,
        SERVICES,
        "ns",
        transform=lambda o: o,
        version_of=version_of_json,  # type: ignore[arg-type]
        indexers={"name": lambda o: [o["metadata"]["name"]]},
    )
    await run_until_idle(informer, client)
    assert (informer.by_index("name", "a") == []) is deleted_in_watch
