"""The executor: writes counted where they happen, conflicts made WriteConflict, the
answer recorded in the cache, and nothing sent or reported without the Lease."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from virtualservice_operator.domain.plan import Action
from virtualservice_operator.kube.client import AlreadyExists, Forbidden, NotFound
from virtualservice_operator.operator.executor import (
    Executor,
    MissingPermission,
    NamespaceGone,
    WriteConflict,
)
from virtualservice_operator.runtime.leader import NotLeading
from virtualservice_operator.runtime.metrics import OperatorMetrics

BODY = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "dev"}}
CREATE = Action(verb="create", kind="Service", namespace="dev", name="web", body=BODY, reason="r")
UPDATE = Action(verb="update", kind="Service", namespace="dev", name="web", body=BODY, reason="r")
DELETE = Action(verb="delete", kind="Service", namespace="dev", name="web", reason="r")


class FakeClient:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.sent: list[str] = []
        self.during_send = lambda: None

    async def _answer(self, verb: str) -> dict[str, Any]:
        self.sent.append(verb)
        self.during_send()
        if self.error is not None:
            raise self.error
        return BODY

    async def create(self, *args: Any) -> dict[str, Any]:
        return await self._answer("create")

    async def replace(self, *args: Any) -> dict[str, Any]:
        return await self._answer("replace")

    async def delete(self, *args: Any, **kwargs: Any) -> None:
        await self._answer("delete")


class FakeCache:
    def __init__(self) -> None:
        self.recorded: list[str] = []

    def record_write(self, kind: str, obj: dict[str, Any]) -> None:
        self.recorded.append(f"write {kind}")

    def record_delete(self, kind: str, namespace: str, name: str) -> None:
        self.recorded.append(f"delete {kind}")


def sample(metrics: OperatorMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


async def test_writes_are_counted_and_recorded() -> None:
    client, cache, metrics = FakeClient(), FakeCache(), OperatorMetrics()
    executor = Executor(client, cache, metrics)  # type: ignore[arg-type]
    await executor.execute(CREATE)
    await executor.execute(DELETE)
    assert client.sent == ["create", "delete"]
    assert cache.recorded == ["write Service", "delete Service"]
    written = "virtualservice_operator_writes_total"
    assert sample(metrics, written, verb="create", kind="Service") == 1
    assert sample(metrics, written, verb="delete", kind="Service") == 1


@pytest.mark.parametrize(
    ("action", "error"),
    [
        (CREATE, AlreadyExists(409, "AlreadyExists", "there")),
        (UPDATE, NotFound(404, "NotFound", "gone")),
    ],
)
async def test_a_changed_object_is_a_counted_conflict(action: Action, error: Exception) -> None:
    metrics = OperatorMetrics()
    executor = Executor(FakeClient(error), FakeCache(), metrics)  # type: ignore[arg-type]
    with pytest.raises(WriteConflict) as raised:
        await executor.execute(action)
    assert raised.value.action == action
    assert sample(metrics, "virtualservice_operator_conflicts_total", kind="Service") == 1


async def test_a_delete_of_what_is_gone_is_done() -> None:
    client, cache = FakeClient(NotFound(404, "NotFound", "gone")), FakeCache()
    await Executor(client, cache, OperatorMetrics()).execute(DELETE)  # type: ignore[arg-type]
    assert cache.recorded == ["delete Service"]


async def test_nothing_is_sent_without_the_lease() -> None:
    client, cache = FakeClient(), FakeCache()
    executor = Executor(client, cache, OperatorMetrics(), leading=lambda: False)  # type: ignore[arg-type]
    with pytest.raises(NotLeading):
        await executor.execute(CREATE)
    assert client.sent == [] and cache.recorded == []


async def test_a_write_answered_after_the_loss_is_not_reported_done() -> None:
    leading = [True]
    client, cache = FakeClient(), FakeCache()
    client.during_send = leading.clear  # the Lease is lost while the request runs
    executor = Executor(client, cache, OperatorMetrics(), leading=lambda: bool(leading))  # type: ignore[arg-type]
    with pytest.raises(NotLeading):
        await executor.execute(CREATE)
    assert client.sent == ["create"] and cache.recorded == []


async def test_dry_run_sends_nothing_records_nothing_and_counts_what_it_would_write() -> None:
    client, cache, metrics = FakeClient(), FakeCache(), OperatorMetrics()
    executor = Executor(client, cache, metrics, dry_run=True)  # type: ignore[arg-type]
    for action in (CREATE, UPDATE, DELETE):
        await executor.execute(action)
    assert client.sent == [] and cache.recorded == []
    for verb in ("create", "update", "delete"):
        labels = {"verb": verb, "kind": "Service"}
        assert sample(metrics, "virtualservice_operator_dry_run_writes_total", **labels) == 1
        assert sample(metrics, "virtualservice_operator_writes_total", **labels) is None


@pytest.mark.parametrize(
    ("error", "gone"),
    [
        (
            NotFound(404, "NotFound", 'namespaces "dev" not found', details={"kind": "namespaces"}),
            True,
        ),
        (
            NotFound(404, "NotFound", 'services "web" not found', details={"kind": "services"}),
            False,
        ),
        (
            Forbidden(
                403,
                "Forbidden",
                "unable to create new content in namespace dev because it is being terminated",
                details={"causes": [{"reason": "NamespaceTerminating"}]},
            ),
            True,
        ),
        (Forbidden(403, "Forbidden", "services is forbidden"), False),
    ],
)
async def test_a_namespace_gone_is_neither_a_conflict_nor_a_missing_right(
    error: Exception, gone: bool
) -> None:
    metrics = OperatorMetrics()
    executor = Executor(FakeClient(error), FakeCache(), metrics)  # type: ignore[arg-type]
    with pytest.raises(NamespaceGone if gone else (WriteConflict, MissingPermission)):
        await executor.execute(UPDATE)


class SlowClient(FakeClient):
    """Holds every write until released, and counts how many are in flight at once."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.in_flight = self.most = 0

    async def _answer(self, verb: str) -> dict[str, Any]:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await self.release.wait()
            return await super()._answer(verb)
        finally:
            self.in_flight -= 1


async def test_writes_in_flight_are_capped_for_all_workers_together() -> None:
    client, cache = SlowClient(), FakeCache()
    executor = Executor(client, cache, OperatorMetrics(), in_flight=3)  # type: ignore[arg-type]
    writes = [asyncio.create_task(executor.execute(CREATE)) for _ in range(10)]
    for _ in range(50):  # every task gets to run: three are sent, the rest wait for a slot
        await asyncio.sleep(0)
    assert client.most == 3 and client.in_flight == 3
    client.release.set()
    await asyncio.gather(*writes)
    assert client.most == 3 and len(client.sent) == 10 and len(cache.recorded) == 10
