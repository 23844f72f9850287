"""Resync and orphan sweep: every name queued when leading starts and on request, the
sweep asked each time, and the sweep's deletes planned by plan and sent by the executor."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

import structlog

from tests.waiting import until
from virtualservice_operator.domain.config import parse_config
from virtualservice_operator.domain.plan import Action
from virtualservice_operator.operator.resync import OrphanSweep, Resync

CONFIG = parse_config("defaultNamespace: prod\ndeveloperNamespaces: [dev]\n").config


def placeholder(ns: str) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": ns,
            "name": "web",
            "uid": f"uid-{ns}",
            "resourceVersion": "4",
            "labels": {
                "virtualservice-operator/placeholder-service": "true",
                "virtualservice-operator/instance": CONFIG.instance,
            },
            "annotations": {"virtualservice-operator/source": "prod/web"},
        },
        "spec": {"type": "ExternalName", "externalName": "web.prod.svc.cluster.local"},
    }


class FakeClient:
    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items
        self.selectors: list[tuple[str | None, str | None]] = []

    async def list_pages(
        self, kind: Any, namespace: Any, *, label_selector: str, field_selector: str
    ) -> AsyncIterator[tuple[list[dict[str, Any]], str]]:
        self.selectors.append((label_selector, field_selector))
        yield self.items, "1"


class FakeExecutor:
    dry_run = False

    def __init__(self) -> None:
        self.executed: list[Action] = []

    async def execute(self, action: Action) -> None:
        self.executed.append(action)


class CountingSweep:
    def __init__(self) -> None:
        self.requests = 0

    def request(self) -> None:
        self.requests += 1


async def test_sweep_deletes_placeholders_outside_the_config_through_the_executor() -> None:
    client = FakeClient([placeholder("old-dev"), placeholder("dev")])
    executor = FakeExecutor()
    sweep = OrphanSweep(client, executor, lambda: CONFIG)  # type: ignore[arg-type]
    with structlog.testing.capture_logs() as logs:
        await sweep.sweep()
    assert [(a.verb, a.namespace, a.uid) for a in executor.executed] == [
        ("delete", "old-dev", "uid-old-dev")
    ]
    assert client.selectors == [
        (
            "virtualservice-operator/placeholder-service=true,"
            f"virtualservice-operator/instance={CONFIG.instance}",
            "metadata.namespace!=prod,metadata.namespace!=dev",
        )
    ]
    done = [x for x in logs if x["event"] == "orphan sweep done"]
    assert done == [{"event": "orphan sweep done", "deleted": 1, "found": 2, "log_level": "info"}]


async def test_resync_queues_every_name_at_start_and_on_request() -> None:
    queued: list[list[str]] = []
    names = {"b", "a"}
    sweep = CountingSweep()

    def enqueue_all(batch: Iterable[str]) -> None:
        queued.append(sorted(batch))

    resync = Resync(lambda: names, enqueue_all, sweep, period=3600)  # type: ignore[arg-type]
    resync.request()  # before it leads: nothing happens, and it is not remembered twice
    await resync.start()
    assert queued == [["a", "b"]] and sweep.requests == 1
    names.add("c")
    resync.request()
    resync.request()  # collapses with the one before
    await until(lambda: len(queued) == 2)
    assert queued[1] == ["a", "b", "c"] and sweep.requests == 2
    await resync.stop()


async def test_periodic_resync() -> None:
    queued: list[int] = []
    sweep = CountingSweep()
    resync = Resync(lambda: ["a"], lambda batch: queued.append(1), sweep, period=0.01)  # type: ignore[arg-type]
    await resync.start()
    await until(lambda: len(queued) >= 3)
    await resync.stop()
    assert sweep.requests >= 3
