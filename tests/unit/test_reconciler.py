"""The reconciler's contract with fakes: zero requests when converged, conflicts requeued
(never slept on) and read fresh on the next pass, 'retry exhausted' after
CONFLICTS_BEFORE_EXHAUSTED in a row, template errors terminal."""

from __future__ import annotations

from typing import Any

import pytest
import structlog

from virtualservice_operator.domain.config import parse_config
from virtualservice_operator.domain.desired import compute_desired
from virtualservice_operator.domain.model import ServiceInfo, ServicePort, VirtualServiceInfo
from virtualservice_operator.kube.client import Conflict, NotFound
from virtualservice_operator.operator.executor import Executor
from virtualservice_operator.operator.reconciler import (
    CONFLICTS_BEFORE_EXHAUSTED,
    Result,
    TerminalError,
    VirtualServiceReconciler,
)
from virtualservice_operator.runtime.events import EventRecorder
from virtualservice_operator.runtime.metrics import OperatorMetrics

CONFIG = parse_config("defaultNamespace: prod\ndeveloperNamespaces: [dev]\n").config


def web(ns: str = "prod") -> ServiceInfo:
    return ServiceInfo(
        namespace=ns,
        name="web",
        uid=f"uid-{ns}",
        resource_version="1",
        ports=(ServicePort(80, "http"),),
    )


class FakeCache:
    def __init__(self, services: dict[str, ServiceInfo], vss: list[dict[str, Any]]) -> None:
        self.services, self.vss = services, vss
        self.fresh_reads = 0
        self.writes: list[tuple[str, dict[str, Any]]] = []

    def snapshot(
        self, config: Any, name: str
    ) -> tuple[dict[str, ServiceInfo], list[VirtualServiceInfo]]:
        # Records, as the real cache holds them (the test writes the API's JSON).
        return dict(self.services), [VirtualServiceInfo.from_dict(v) for v in self.vss]

    async def fresh(
        self, config: Any, name: str
    ) -> tuple[dict[str, ServiceInfo], list[VirtualServiceInfo]]:
        self.fresh_reads += 1
        return self.snapshot(config, name)

    def record_write(self, kind: str, obj: dict[str, Any]) -> None:
        self.writes.append((kind, obj))

    def record_delete(self, kind: str, namespace: str, name: str) -> None:
        pass

    def absent_namespaces(self, config: Any) -> dict[str, str]:
        return {}


class FakeClient:
    def __init__(self, conflicts: int = 0) -> None:
        self.conflicts = conflicts
        self.calls: list[str] = []

    async def _write(self, verb: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(verb)
        if self.conflicts > 0:
            self.conflicts -= 1
            raise Conflict(409, "Conflict", "the object has been modified")
        return {**body, "metadata": {**body["metadata"], "resourceVersion": "99"}}

    async def create(self, kind: Any, ns: Any, body: dict[str, Any]) -> dict[str, Any]:
        return await self._write("create", body)

    async def replace(self, kind: Any, ns: Any, name: Any, body: dict[str, Any]) -> dict[str, Any]:
        return await self._write("replace", body)

    async def merge_patch(
        self, kind: Any, ns: Any, name: Any, body: dict[str, Any]
    ) -> dict[str, Any]:
        return await self._write("patch", {"metadata": {}})

    async def delete(self, *args: Any, **kwargs: Any) -> None:
        self.calls.append("delete")


def reconciler(
    client: FakeClient, cache: FakeCache, config: Any = CONFIG
) -> VirtualServiceReconciler:
    executor = Executor(client, cache, OperatorMetrics())  # type: ignore[arg-type]
    return VirtualServiceReconciler(
        cache, lambda: config, EventRecorder(None, component="test"), executor
    )  # type: ignore[arg-type]


async def test_converged_name_costs_no_request() -> None:
    desired = compute_desired(CONFIG, "web", {"prod": web()}).virtual_service
    assert desired is not None
    actual = {
        **desired,
        "metadata": {**desired["metadata"], "resourceVersion": "3", "uid": "vs-uid"},
    }
    client = FakeClient()
    assert (
        await reconciler(client, FakeCache({"prod": web()}, [actual])).reconcile("web") == Result()
    )
    assert client.calls == []


async def test_conflict_is_requeued_and_the_next_pass_reads_fresh() -> None:
    client, cache = FakeClient(conflicts=2), FakeCache({"prod": web()}, [])
    r = reconciler(client, cache)
    assert await r.reconcile("web") == Result(requeue=True)
    assert cache.fresh_reads == 0  # the first pass read the cache
    assert await r.reconcile("web") == Result(requeue=True)
    assert await r.reconcile("web") == Result()
    assert client.calls == ["create", "create", "create"]
    assert cache.fresh_reads == 2
    assert len(cache.writes) == 1
    assert await r.reconcile("web") == Result()
    assert cache.fresh_reads == 2  # a success clears it: the cache again


async def test_retry_exhausted_is_logged_with_the_word_conflict() -> None:
    client, cache = FakeClient(conflicts=100), FakeCache({"prod": web()}, [])
    r = reconciler(client, cache)
    with structlog.testing.capture_logs() as logs:
        for _ in range(CONFLICTS_BEFORE_EXHAUSTED):
            assert await r.reconcile("web") == Result(requeue=True)
    assert len(client.calls) == CONFLICTS_BEFORE_EXHAUSTED  # one write per pass, no loop
    said = [x for x in logs if "conflict" in x["event"]]
    assert len(said) == CONFLICTS_BEFORE_EXHAUSTED
    assert all(x["log_level"] == "info" for x in said[:-1])
    final = said[-1]
    assert final["log_level"] == "error"
    assert "retry exhausted" in final["event"] and "conflict" in final["event"]
    assert final["service"] == "web" and final["virtualservice"] == "web-virtual-service"


async def test_template_error_is_terminal_and_writes_nothing() -> None:
    # A config whose template renders for the sample name but not for this one cannot be
    # built through parse_config (it validates); force one through model_copy.
    bad = CONFIG.model_copy(update={"virtual_service_template": "kind: [unclosed"})
    client, cache = FakeClient(), FakeCache({"prod": web()}, [])
    r = reconciler(client, cache, bad)
    with pytest.raises(TerminalError):
        await r.reconcile("web")
    assert client.calls == []


class ConcurrencyClient(FakeClient):
    def __init__(self, conflicts: int = 0) -> None:
        super().__init__(conflicts)
        self.in_flight = 0
        self.max_in_flight = 0
        self.order: list[str] = []

    async def _write(self, verb: str, body: dict[str, Any]) -> dict[str, Any]:
        import asyncio

        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.order.append(body["kind"])
        try:
            await asyncio.sleep(0)
            return await super()._write(verb, body)
        finally:
            self.in_flight -= 1


PLACEHOLDERS = parse_config(
    "defaultNamespace: prod\ndeveloperNamespaces: [d1, d2, d3, d4]\nenablePlaceholderServices: true\n"
).config


async def test_placeholders_are_written_concurrently_after_the_virtual_service() -> None:
    client, cache = ConcurrencyClient(), FakeCache({"prod": web()}, [])
    await reconciler(client, cache, PLACEHOLDERS).reconcile("web")
    assert client.order[0] == "VirtualService" and client.order.count("Service") == 4
    assert client.max_in_flight == 4  # the four placeholders at once; the VirtualService alone


async def test_a_conflict_among_concurrent_writes_is_retried_from_a_fresh_read() -> None:
    client, cache = ConcurrencyClient(conflicts=0), FakeCache({"prod": web()}, [])
    rec = reconciler(client, cache, PLACEHOLDERS)
    desired = compute_desired(PLACEHOLDERS, "web", {"prod": web()}).virtual_service
    assert desired is not None
    cache.vss = [{**desired, "metadata": {**desired["metadata"], "resourceVersion": "3"}}]
    client.conflicts = 1  # the first placeholder write conflicts
    assert await rec.reconcile("web") == Result(requeue=True)
    assert await rec.reconcile("web") == Result()
    assert cache.fresh_reads == 1


async def test_a_namespace_gone_under_a_write_is_not_retried() -> None:
    """The namespace went between its informer's last event and the write: dropped, not
    retried (its creation queues every name again), and never logged above debug."""

    class GoneClient(FakeClient):
        async def _write(self, verb: str, body: dict[str, Any]) -> dict[str, Any]:
            self.calls.append(verb)
            raise NotFound(
                404, "NotFound", 'namespaces "x" not found', details={"kind": "namespaces"}
            )

    client = GoneClient()
    r = reconciler(client, FakeCache({"prod": web()}, []))
    with structlog.testing.capture_logs() as logs:
        assert await r.reconcile("web") == Result()
    assert client.calls == ["create"]
    assert [x["log_level"] for x in logs if "does not exist" in x["event"]] == ["debug"]
