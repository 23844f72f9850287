"""The operator's core behaviour against a real API server (design.md's contract)."""

from __future__ import annotations

import pytest

from tests.integration.conftest import OperatorFactory
from tests.integration.harness import Api, wait_for

pytestmark = pytest.mark.integration


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
    assert (
        _routes(vs)[-1]["route"][0]["destination"]["host"] == f"web.{ns.default}.svc.cluster.local"
    )


def test_developer_routes_in_config_order_and_placeholders(
    operator: OperatorFactory, api: Api
) -> None:
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
    assert (
        placeholder["metadata"]["labels"]["virtualservice-operator/placeholder-service"] == "true"
    )


def test_real_service_removed_gets_placeholder_back_and_service_gone_cleans_up(
    operator: OperatorFactory, api: Api
) -> None:
    ns = operator.namespaces
    api.create_service(ns.default, "cart")
    api.create_service(ns.developers[0], "cart")
    operator.start(operator.config(placeholders=True))
    wait_for(
        lambda: (vs := api.vs(ns.default, "cart-virtual-service")) and len(_routes(vs)) == 2,
        what="route",
    )
    assert api.delete_service(ns.developers[0], "cart") == 200
    wait_for(
        lambda: (
            (s := api.service(ns.developers[0], "cart")) and s["spec"]["type"] == "ExternalName"
        ),
        what="placeholder back",
    )
    wait_for(
        lambda: len(_routes(api.vs(ns.default, "cart-virtual-service"))) == 1, what="route removed"
    )

    assert api.delete_service(ns.default, "cart") == 200
    wait_for(
        lambda: api.vs(ns.default, "cart-virtual-service") is None, what="VirtualService deleted"
    )
    for dev in ns.developers:
        wait_for(
            lambda dev=dev: api.service(dev, "cart") is None, what=f"placeholder in {dev} deleted"
        )


def test_converged_cluster_costs_no_writes_on_restart(operator: OperatorFactory, api: Api) -> None:
    ns = operator.namespaces
    for name in ("a", "b", "c"):
        api.create_service(ns.default, name)
    api.create_service(ns.developers[0], "a")
    proc = operator.start(operator.config(placeholders=True))
    for name in ("a", "b", "c"):
        wait_for(lambda name=name: api.vs(ns.default, f"{name}-virtual-service"), what=name)
    wait_for(lambda: api.service(ns.developers[2], "c"), what="placeholders")
    wait_for(proc.swept, what="orphan sweep done")
    assert proc.stop() == 0
    before = api.write_count(("services", "virtualservices"))
    proc2 = operator.start(write_config=False)
    # Ready means caches synced and (no leader election) the full resync has been queued.
    wait_for(lambda: proc2.idle(3) and proc2.swept(), what="resync of every name")
    after = api.write_count(("services", "virtualservices"))
    assert after == before, f"writes during resync: {after} vs {before}"


@pytest.mark.parametrize("service_type", ["", "type: ClusterIP, "])
def test_real_service_applied_over_placeholder_counts_as_real(
    operator: OperatorFactory, api: Api, kubectl, service_type: str
) -> None:  # type: ignore[no-untyped-def]
    """`kubectl apply` over a placeholder: with `type: ClusterIP` it becomes ClusterIP; without,
    the 3-way merge keeps ExternalName but adds the selector. Both count as real."""
    ns = operator.namespaces
    dev = ns.developers[1]
    api.create_service(ns.default, "pay")
    operator.start(operator.config(placeholders=True))
    wait_for(lambda: api.service(dev, "pay"), what="placeholder")
    manifest = f"""
apiVersion: v1
kind: Service
metadata: {{name: pay, namespace: {dev}}}
spec: {{{service_type}selector: {{app: pay}}, ports: [{{name: http, port: 80}}]}}
"""
    kubectl("apply", "-f", "-", input=manifest)
    vs = wait_for(
        lambda: (v := api.vs(ns.default, "pay-virtual-service")) and len(_routes(v)) == 2 and v,
        what="route to the developer's Service",
    )
    assert _routes(vs)[0]["route"][0]["destination"]["host"] == f"pay.{dev}.svc.cluster.local"
    svc = wait_for(
        lambda: (
            (s := api.service(dev, "pay"))
            and "virtualservice-operator/placeholder-service"
            not in (s["metadata"].get("labels") or {})
            and s
        ),
        what="placeholder marking removed",
    )
    assert svc["spec"]["type"] == ("ClusterIP" if service_type else "ExternalName")
    assert "virtualservice-operator/source" not in (svc["metadata"].get("annotations") or {})


def test_unmanaged_virtual_service_is_left_alone_until_labelled_back(
    operator: OperatorFactory, api: Api, kubectl
) -> None:  # type: ignore[no-untyped-def]
    ns = operator.namespaces
    api.create_service(ns.default, "inv")
    proc = operator.start()
    wait_for(lambda: api.vs(ns.default, "inv-virtual-service"), what="VirtualService")
    # The guide's "remove operator management": take the label off, then edit by hand.
    kubectl("label", "virtualservice", "inv-virtual-service", "-n", ns.default, "managed-by-")
    hand = {
        "spec": {"hosts": ["inv"], "http": [{"route": [{"destination": {"host": "elsewhere"}}]}]}
    }
    api.patch(
        f"/apis/networking.istio.io/v1/namespaces/{ns.default}/virtualservices/inv-virtual-service",
        hand,
    )
    api.create_service(ns.developers[0], "inv")  # would add a route if managed
    wait_for(
        lambda: "without label" in proc.logs(), what="warning about the unmanaged VirtualService"
    )
    assert api.delete_service(ns.default, "inv") == 200  # would delete it if managed
    api.create_service(ns.default, "other")  # a later event, proving the operator is alive
    wait_for(lambda: api.vs(ns.default, "other-virtual-service"), what="other VirtualService")
    vs = api.vs(ns.default, "inv-virtual-service")
    assert (
        vs is not None and vs["spec"]["http"][0]["route"][0]["destination"]["host"] == "elsewhere"
    )
    events = kubectl(
        "get", "events", "-n", ns.default, "--field-selector=reason=UnmanagedVirtualService"
    ).stdout
    assert "inv" in events

    api.create_service(ns.default, "inv")
    kubectl(
        "label",
        "virtualservice",
        "inv-virtual-service",
        "-n",
        ns.default,
        "managed-by=virtualservice-operator",
    )
    wait_for(
        lambda: (v := api.vs(ns.default, "inv-virtual-service")) and len(_routes(v)) == 2,
        what="managed again: routes restored",
    )


def test_hand_edit_is_restored_and_deletion_recreated(operator: OperatorFactory, api: Api) -> None:
    ns = operator.namespaces
    api.create_service(ns.default, "edit")
    operator.start()
    path = (
        f"/apis/networking.istio.io/v1/namespaces/{ns.default}/virtualservices/edit-virtual-service"
    )
    original = wait_for(lambda: api.vs(ns.default, "edit-virtual-service"), what="VirtualService")
    api.patch(path, {"spec": {"hosts": ["hijacked"]}})
    wait_for(
        lambda: api.vs(ns.default, "edit-virtual-service")["spec"] == original["spec"],
        what="spec restored",
    )
    assert api.delete(path) == 200
    recreated = wait_for(lambda: api.vs(ns.default, "edit-virtual-service"), what="recreated")
    assert recreated["metadata"]["uid"] != original["metadata"]["uid"]
    assert recreated["spec"] == original["spec"]


def test_ignored_services(operator: OperatorFactory, api: Api, control_plane) -> None:  # type: ignore[no-untyped-def]
    ns = operator.namespaces
    api.create_service(ns.default, "skip", labels={"virtualservice-operator/exclude": "true"})
    api.create_service(ns.default, "kubernetes")
    other = f"unwatched-{ns.suffix}"
    control_plane.kubectl("create", "namespace", other)
    api.create_service(other, "lonely")
    api.create_service(ns.developers[0], "devonly")  # dev-only: no Service in the default namespace
    api.create_service(ns.default, "marker")
    proc = operator.start(operator.config(placeholders=True))
    wait_for(lambda: api.vs(ns.default, "marker-virtual-service"), what="marker VirtualService")
    wait_for(lambda: proc.idle(1), what="queue drained")
    for name in ("skip", "kubernetes", "lonely", "devonly"):
        assert api.vs(ns.default, f"{name}-virtual-service") is None, name
    for dev in ns.developers:
        assert api.service(dev, "skip") is None
        assert api.service(dev, "kubernetes") is None
    assert api.service(ns.developers[1], "devonly") is None
    # Dev-only names are explained at debug level, not silently dropped.
    assert any(
        line.get("service") == "devonly" and line["level"] == "debug" for line in proc.log_lines()
    )


def test_multi_port_developer_routes_name_ports(operator: OperatorFactory, api: Api) -> None:
    ns = operator.namespaces
    ports = [
        {"name": "http", "port": 80},
        {"name": "grpc-api", "port": 9090},
        {"name": "tcp-db", "port": 5432},
    ]
    api.create_service(ns.default, "multi", ports)
    api.create_service(ns.developers[0], "multi", ports)
    operator.start()
    # Two developer routes, then the template's route once per HTTP port (IST0112).
    vs = wait_for(
        lambda: (v := api.vs(ns.default, "multi-virtual-service")) and len(_routes(v)) == 4 and v,
        what="routes",
    )
    dev_routes, own_routes = _routes(vs)[:2], _routes(vs)[2:]
    for routes in (dev_routes, own_routes):
        assert [r["match"][0]["port"] for r in routes] == [80, 9090]
        assert [r["route"][0]["destination"]["port"]["number"] for r in routes] == [80, 9090]
    assert all(
        r["match"][0]["headers"]["x-developer"] == {"exact": ns.developers[0]} for r in dev_routes
    )
    assert {r["route"][0]["destination"]["host"] for r in own_routes} == {
        f"multi.{ns.default}.svc.cluster.local"
    }


def test_template_error_writes_nothing(operator: OperatorFactory, api: Api) -> None:
    ns = operator.namespaces
    api.create_service(ns.default, "tpl")
    proc = operator.start()
    before = wait_for(lambda: api.vs(ns.default, "tpl-virtual-service"), what="VirtualService")
    bad = operator.config(
        virtualServiceTemplate="kind: VirtualService\nmetadata: {name: '${serviceName}-vs'}\nspec: {hosts: [x]}\n"
    )
    api.write_config(operator.config_map, bad)
    wait_for(lambda: "config rejected" in proc.logs(), what="config rejected")
    api.delete_service(ns.default, "tpl")  # with the old config this would delete
    api.create_service(ns.default, "tpl2")
    wait_for(
        lambda: api.vs(ns.default, "tpl2-virtual-service"),
        what="still working with the last good config",
    )
    # The last good config still applies: tpl is gone from D, so its VS goes: that is the
    # old config working, not the bad one acting.
    wait_for(
        lambda: api.vs(ns.default, "tpl-virtual-service") is None, what="old config still in force"
    )
    assert before is not None


def test_restart_converges_changes_made_while_down(operator: OperatorFactory, api: Api) -> None:
    ns = operator.namespaces
    api.create_service(ns.default, "r1")
    api.create_service(ns.default, "r2")
    proc = operator.start(operator.config(placeholders=True))
    wait_for(
        lambda: api.vs(ns.default, "r2-virtual-service") and api.service(ns.developers[0], "r1"),
        what="converged",
    )
    assert proc.stop() == 0
    api.delete_service(ns.default, "r1")
    api.create_service(ns.default, "r3")
    assert api.delete_service(ns.developers[2], "r2") == 200  # the placeholder, replaced by
    api.create_service(ns.developers[2], "r2")  # a real Service
    api.patch(
        f"/apis/networking.istio.io/v1/namespaces/{ns.default}/virtualservices/r2-virtual-service",
        {"spec": {"hosts": ["x"]}},
    )
    operator.start(write_config=False)
    wait_for(
        lambda: api.vs(ns.default, "r1-virtual-service") is None, what="r1 VirtualService removed"
    )
    wait_for(
        lambda: all(api.service(d, "r1") is None for d in ns.developers),
        what="r1 placeholders removed",
    )
    wait_for(lambda: api.vs(ns.default, "r3-virtual-service"), what="r3 created")
    wait_for(
        lambda: (
            (v := api.vs(ns.default, "r2-virtual-service"))
            and v["spec"]["hosts"] == ["r2"]
            and len(_routes(v)) == 2
        ),
        what="r2 restored with route",
    )
    wait_for(
        lambda: api.service(ns.developers[2], "r2")["spec"]["type"] == "ClusterIP",
        what="real r2 untouched",
    )


def test_config_change_removes_what_is_no_longer_wanted(
    operator: OperatorFactory, api: Api
) -> None:
    ns = operator.namespaces
    api.create_service(ns.default, "cfg")
    proc = operator.start(operator.config(placeholders=True))
    for dev in ns.developers:
        wait_for(lambda dev=dev: api.service(dev, "cfg"), what=f"placeholder in {dev}")
    # Drop one developer namespace: its placeholder goes. Then turn placeholders off.
    cfg = operator.config(placeholders=True)
    cfg["developerNamespaces"] = ns.developers[:2]
    api.write_config(operator.config_map, cfg)
    wait_for(
        lambda: api.service(ns.developers[2], "cfg") is None,
        what="placeholder in dropped namespace removed",
    )
    assert "config reloaded" in proc.logs()
    api.write_config(operator.config_map, operator.config(placeholders=False))
    for dev in ns.developers:
        wait_for(
            lambda dev=dev: api.service(dev, "cfg") is None, what=f"placeholder in {dev} removed"
        )
    assert api.vs(ns.default, "cfg-virtual-service") is not None


def test_concurrent_writer_conflicts_are_retried_and_state_ends_right(
    operator: OperatorFactory, api: Api
) -> None:
    import threading

    ns = operator.namespaces
    api.create_service(ns.default, "busy")
    proc = operator.start()
    path = (
        f"/apis/networking.istio.io/v1/namespaces/{ns.default}/virtualservices/busy-virtual-service"
    )
    wait_for(lambda: api.vs(ns.default, "busy-virtual-service"), what="VirtualService")
    stop = threading.Event()

    def meddle() -> None:
        i = 0
        while not stop.is_set() and i < 400:  # bounded: at most 400 patches
            api.cp.api(
                "PATCH", path, {"spec": {"hosts": [f"meddler-{i}"]}}, "application/merge-patch+json"
            )
            i += 1

    threads = [threading.Thread(target=meddle) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for dev in ns.developers:  # more reasons to reconcile while the meddlers write
            api.create_service(dev, "busy")
        wait_for(lambda: "conflict" in proc.logs(), timeout=20, what="a conflict to be logged")
    finally:
        stop.set()
        for t in threads:
            t.join()
    vs = wait_for(
        lambda: (
            (v := api.vs(ns.default, "busy-virtual-service"))
            and v["spec"]["hosts"] == ["busy"]
            and len(_routes(v)) == 4
            and v
        ),
        what="final state: hosts restored, three developer routes",
    )
    assert [r["name"] for r in _routes(vs)[:3]] == [f"dev-{d}" for d in ns.developers]
    assert proc.proc is not None and proc.proc.poll() is None, "operator crashed"
    assert proc.metric("virtualservice_operator_conflicts_total") >= 1


def test_adding_a_route_is_one_write_that_keeps_every_route(
    operator: OperatorFactory, api: Api
) -> None:
    import json
    import urllib.request

    ns = operator.namespaces
    api.create_service(ns.default, "one")
    api.create_service(ns.developers[0], "one")
    proc = operator.start()
    vs = wait_for(
        lambda: (v := api.vs(ns.default, "one-virtual-service")) and len(_routes(v)) == 2 and v,
        what="first route",
    )
    wait_for(lambda: proc.idle(1), what="idle")
    rv = vs["metadata"]["resourceVersion"]
    api.create_service(ns.developers[2], "one")
    wait_for(
        lambda: len(_routes(api.vs(ns.default, "one-virtual-service"))) == 3, what="second route"
    )
    wait_for(lambda: proc.idle(2), what="idle")
    # Every version the VirtualService went through since: exactly one, with all routes.
    url = (
        f"{api.cp.url}/apis/networking.istio.io/v1/namespaces/{ns.default}/virtualservices"
        f"?watch=1&resourceVersion={rv}&timeoutSeconds=1&fieldSelector=metadata.name%3Done-virtual-service"
    )
    with urllib.request.urlopen(url, context=api.cp._ssl_context(), timeout=10) as r:
        events = [json.loads(line) for line in r.read().decode().splitlines() if line]
    assert [e["type"] for e in events] == ["MODIFIED"], events
    assert [route.get("name") for route in _routes(events[0]["object"])] == [
        f"dev-{ns.developers[0]}",
        f"dev-{ns.developers[2]}",
        None,
    ]


def test_orphans_left_while_down_are_removed_at_start(
    operator: OperatorFactory, api: Api, control_plane
) -> None:  # type: ignore[no-untyped-def]
    ns = operator.namespaces
    elsewhere = f"old-default-{ns.suffix}"
    unwatched = f"unwatched-{ns.suffix}"
    control_plane.kubectl("create", "namespace", elsewhere)
    control_plane.kubectl("create", "namespace", unwatched)
    managed = operator.ours(**{"managed-by": "virtualservice-operator"})
    theirs = {"managed-by": "virtualservice-operator", "virtualservice-operator/instance": "other"}

    def vs(namespace: str, service: str, labels: dict[str, str]) -> None:
        api.create(
            f"/apis/networking.istio.io/v1/namespaces/{namespace}/virtualservices",
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "VirtualService",
                "metadata": {"name": f"{service}-virtual-service", "labels": labels},
                "spec": {
                    "hosts": [service],
                    "http": [{"route": [{"destination": {"host": service}}]}],
                },
            },
        )

    def placeholder(namespace: str, service: str, owner: str = operator.instance) -> None:
        api.create(
            f"/api/v1/namespaces/{namespace}/services",
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {
                    "name": service,
                    "labels": {
                        "virtualservice-operator/placeholder-service": "true",
                        "virtualservice-operator/instance": owner,
                    },
                    "annotations": {"virtualservice-operator/source": f"{ns.default}/{service}"},
                },
                "spec": {
                    "type": "ExternalName",
                    "externalName": f"{service}.{ns.default}.svc.cluster.local",
                    "ports": [{"port": 80}],
                },
            },
        )

    vs(ns.default, "ghost", managed)  # its Service is gone
    vs(elsewhere, "moved", managed)  # left in an old default namespace
    vs(ns.default, "handmade", {})  # not ours: must stay
    vs(elsewhere, "theirs", theirs)  # another instance's: must stay
    placeholder(unwatched, "theirs", owner="other")  # another instance's: must stay
    placeholder(ns.developers[0], "ghost")  # placeholder for a Service that is gone
    placeholder(unwatched, "ghost")  # placeholder in a namespace no longer listed
    api.create_service(ns.default, "alive")
    operator.start(operator.config(placeholders=True))
    wait_for(
        lambda: api.vs(ns.default, "ghost-virtual-service") is None,
        what="orphan VS in default namespace removed",
    )
    wait_for(
        lambda: api.vs(elsewhere, "moved-virtual-service") is None,
        what="orphan VS elsewhere removed",
    )
    wait_for(
        lambda: api.service(ns.developers[0], "ghost") is None, what="orphan placeholder removed"
    )
    wait_for(
        lambda: api.service(unwatched, "ghost") is None,
        what="placeholder in unwatched namespace removed",
    )
    wait_for(lambda: api.service(ns.developers[0], "alive"), what="placeholder for alive")
    assert api.vs(ns.default, "handmade-virtual-service") is not None
    assert api.vs(elsewhere, "theirs-virtual-service") is not None
    assert api.service(unwatched, "theirs") is not None


def test_second_unmanaged_virtual_service_for_the_same_host_is_reported_when_allowed(
    operator: OperatorFactory, api: Api, kubectl
) -> None:  # type: ignore[no-untyped-def]
    """allowHostConflicts: true, the behaviour before host conflicts held ours back
    (test_host_conflicts.py): ours is created, and the other one is warned about."""
    ns = operator.namespaces
    api.create_service(ns.default, "dup")
    api.create(
        f"/apis/networking.istio.io/v1/namespaces/{ns.default}/virtualservices",
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "legacy-routes"},
            "spec": {"hosts": ["dup"], "http": [{"route": [{"destination": {"host": "dup"}}]}]},
        },
    )
    proc = operator.start(operator.config(allowHostConflicts=True))
    wait_for(lambda: api.vs(ns.default, "dup-virtual-service"), what="ours created")
    wait_for(
        lambda: "legacy-routes" in proc.logs(), what="log line about the second VirtualService"
    )
    wait_for(
        lambda: (
            "legacy-routes"
            in kubectl("get", "events", "-n", ns.default, "--field-selector=type=Warning").stdout
        ),
        what="Warning Event",
    )


def test_baggage_matching(operator: OperatorFactory, api: Api) -> None:
    ns = operator.namespaces
    api.create_service(ns.default, "bag")
    api.create_service(ns.developers[1], "bag")
    operator.start(operator.config(routing={"match": "baggage"}))
    vs = wait_for(
        lambda: (v := api.vs(ns.default, "bag-virtual-service")) and len(_routes(v)) == 2 and v,
        what="route",
    )
    import re

    regex = _routes(vs)[0]["match"][0]["headers"]["baggage"]["regex"]
    assert re.fullmatch(
        regex, f"userId=alice, x-developer={ns.developers[1]};ttl=60, isProduction=false"
    )
    assert not re.fullmatch(regex, f"x-developer={ns.developers[1]}-other")
