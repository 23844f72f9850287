"""The operator's core behaviour against a real API server (design.md's contract)."""

from __future__ import annotations

import pytest

from tests.integration.conftest import OperatorFactory
from tests.integration.harness import Api, OperatorProcess, wait_for
from virtualservice_operator.metrics import parse_exposition

pytestmark = pytest.mark.integration


def _metric(proc: OperatorProcess, name: str, **labels: str) -> float:
    parsed = parse_exposition(proc.metrics())
    return sum(v for (n, ls), v in parsed.items() if n == name and all((k, val) in ls for k, val in labels.items()))


def _idle_after(proc: OperatorProcess, reconciles: int) -> bool:
    """At least `reconciles` successful passes and nothing queued or running."""
    return (
        _metric(proc, "controller_runtime_reconcile_total", result="success") >= reconciles
        and _metric(proc, "workqueue_depth") == 0
        and _metric(proc, "controller_runtime_active_workers") == 0
    )


def _routes(vs: dict) -> list[dict]:
    return vs["spec"].get("http") or []


def test_virtual_service_created_from_template(operator: OperatorFactory, api: Api) -> None:
    ns = operator.namespaces
    svc = api.create_service(ns.default, "web")
    operator.start()
    vs = wait_for(lambda: api.vs(ns.default, "web-virtual-service"), what="VirtualService")
    assert vs["metadata"]["labels"]["managed-by"] == "virtualservice-operator"
    assert vs["metadata"]["ownerReferences"][0]["uid"] == svc["metadata"]["uid"]
    assert vs["spec"]["hosts"] == ["web"]
    assert _routes(vs)[-1]["route"][0]["destination"]["host"] == f"web.{ns.default}.svc.cluster.local"


def test_developer_routes_in_config_order_and_placeholders(operator: OperatorFactory, api: Api) -> None:
    ns = operator.namespaces
    api.create_service(ns.default, "shop")
    api.create_service(ns.developers[2], "shop")
    api.create_service(ns.developers[0], "shop")
    operator.start(operator.config(placeholders=True))

    def routed() -> dict | None:
        vs = api.vs(ns.default, "shop-virtual-service")
        return vs if vs and len(_routes(vs)) == 3 else None

    vs = wait_for(routed, what="two developer routes")
    hosts = [r["route"][0]["destination"]["host"] for r in _routes(vs)]
    assert hosts == [
        f"shop.{ns.developers[0]}.svc.cluster.local",
        f"shop.{ns.developers[2]}.svc.cluster.local",
        f"shop.{ns.default}.svc.cluster.local",
    ]
    assert _routes(vs)[0]["match"][0]["headers"]["x-developer"] == {"exact": ns.developers[0]}
    placeholder = wait_for(lambda: api.service(ns.developers[1], "shop"), what="placeholder")
    assert placeholder["spec"]["type"] == "ExternalName"
    assert placeholder["spec"]["externalName"] == f"shop.{ns.default}.svc.cluster.local"
    assert placeholder["metadata"]["labels"]["virtualservice-operator/placeholder-service"] == "true"


def test_real_service_removed_gets_placeholder_back_and_service_gone_cleans_up(operator: OperatorFactory, api: Api) -> None:
    ns = operator.namespaces
    api.create_service(ns.default, "cart")
    api.create_service(ns.developers[0], "cart")
    operator.start(operator.config(placeholders=True))
    wait_for(lambda: (vs := api.vs(ns.default, "cart-virtual-service")) and len(_routes(vs)) == 2, what="route")
    assert api.delete_service(ns.developers[0], "cart") == 200
    wait_for(lambda: (s := api.service(ns.developers[0], "cart")) and s["spec"]["type"] == "ExternalName", what="placeholder back")
    wait_for(lambda: len(_routes(api.vs(ns.default, "cart-virtual-service"))) == 1, what="route removed")

    assert api.delete_service(ns.default, "cart") == 200
    wait_for(lambda: api.vs(ns.default, "cart-virtual-service") is None, what="VirtualService deleted")
    for dev in ns.developers:
        wait_for(lambda dev=dev: api.service(dev, "cart") is None, what=f"placeholder in {dev} deleted")


def test_converged_cluster_costs_no_writes_on_restart(operator: OperatorFactory, api: Api) -> None:
    ns = operator.namespaces
    for name in ("a", "b", "c"):
        api.create_service(ns.default, name)
    api.create_service(ns.developers[0], "a")
    proc = operator.start(operator.config(placeholders=True))
    for name in ("a", "b", "c"):
        wait_for(lambda name=name: api.vs(ns.default, f"{name}-virtual-service"), what=name)
    wait_for(lambda: api.service(ns.developers[2], "c"), what="placeholders")
    assert proc.stop() == 0
    before = api.write_count()
    proc2 = operator.start(write_config=False)
    # Ready means caches synced and (no leader election) the full resync has been queued.
    wait_for(lambda: _idle_after(proc2, 3), what="resync of every name")
    after = api.write_count()
    assert after == before, f"writes during resync: {after} vs {before}"
