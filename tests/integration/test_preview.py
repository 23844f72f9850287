"""A safe first rollout: `run -dry-run=true` computes everything and writes nothing (it
logs and counts what it would write), and `serviceSelector` opts Services in."""

from __future__ import annotations

import json

import pytest

from tests.integration.conftest import OperatorFactory
from tests.integration.harness import OPERATOR_NS, Api, wait_for
from virtualservice_operator import cli
from virtualservice_operator.domain.constants import LEASE_NAME

pytestmark = pytest.mark.integration

# Not "leases": the API server renews its own identity Lease every 10 s, which would make
# the count flaky; the operator's Lease is checked by itself instead.
RESOURCES = ("services", "virtualservices", "events")
LEASE_PATH = f"/apis/coordination.k8s.io/v1/namespaces/{OPERATOR_NS}/leases/{LEASE_NAME}"


def test_dry_run_writes_nothing_and_counts_what_it_would_write(
    operator: OperatorFactory, api: Api, capsys: pytest.CaptureFixture[str]
) -> None:
    ns = operator.namespaces
    d, dev = ns.default, ns.developers[0]
    for name in ("cart", "shop"):
        api.create_service(d, name)
    api.create_service(dev, "cart")
    # The preview before any operator runs: `status` lists what the first run would write.
    api.write_config(operator.config_map, operator.config(placeholders=True))
    capsys.readouterr()
    kubeconfig = str(operator.cp.admin_kubeconfig)
    args = ["--kubeconfig", kubeconfig, "--config-map-name", operator.config_map]
    assert cli.main(["status", "-o", "json", *args]) == 0
    preview = {r["service"]: r["actions"] for r in json.loads(capsys.readouterr().out)}
    assert len(preview["cart"]) == 3 and len(preview["shop"]) == 4, preview
    assert preview["cart"][0].startswith(f"create VirtualService {d}/cart-virtual-service")

    before = api.write_count(RESOURCES)
    lease_before = api.get(LEASE_PATH)  # None, or a Lease an earlier test left behind
    # -leader-elect too: a dry run never takes the Lease (a real leader keeps leading).
    proc = operator.start(
        operator.config(placeholders=True), extra_args=["-dry-run=true", "-leader-elect"]
    )
    wait_for(lambda: proc.swept() and proc.idle(2), what="the dry run's passes")
    assert api.write_count(RESOURCES) == before  # nothing: no object, no Event
    assert api.get(LEASE_PATH) == lease_before  # the Lease neither taken nor renewed
    assert api.vs(d, "cart-virtual-service") is None
    # 2 VirtualServices; placeholders: cart in 2 namespaces, shop in 3.
    counted = {
        (verb, kind): proc.metric(
            "virtualservice_operator_dry_run_writes_total", verb=verb, kind=kind
        )
        for verb, kind in (("create", "VirtualService"), ("create", "Service"))
    }
    assert counted == {("create", "VirtualService"): 2, ("create", "Service"): 5}
    assert proc.metric("virtualservice_operator_writes_total") == 0
    lines = [x["msg"] for x in proc.log_lines() if x["msg"].startswith("dry-run: would ")]
    assert f"dry-run: would create VirtualService {d}/cart-virtual-service" in lines
    assert f"dry-run: would create Service {ns.developers[1]}/cart" in lines
    assert len(lines) == 7, lines


def test_service_selector_opts_services_in_and_is_validated_on_reload(
    operator: OperatorFactory, api: Api, capsys: pytest.CaptureFixture[str]
) -> None:
    ns = operator.namespaces
    d, dev = ns.default, ns.developers[0]
    api.create_service(d, "cart", labels={"mesh": "on"})
    api.create_service(d, "shop")
    api.create_service(d, "legacy", labels={"mesh": "on", "tier": "old"})
    selector = {
        "matchLabels": {"mesh": "on"},
        "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["old"]}],
    }
    proc = operator.start(operator.config(placeholders=True, serviceSelector=selector))
    wait_for(lambda: api.service(dev, "cart"), what="cart's placeholder")
    wait_for(proc.idle, what="idle")
    assert api.vs(d, "cart-virtual-service") is not None
    assert api.vs(d, "shop-virtual-service") is None
    assert api.vs(d, "legacy-virtual-service") is None
    # explain says why.
    capsys.readouterr()
    args = ["--kubeconfig", str(operator.cp.admin_kubeconfig), "--config-map-name"]
    cli.main(["explain", "legacy", *args, operator.config_map])
    out = capsys.readouterr().out
    assert (
        f"Service {d}/legacy is not selected by serviceSelector (mesh=on,tier notin (old))" in out
    )

    # A Service labelled in: it gets its VirtualService; labelled out: it loses it.
    api.patch(f"/api/v1/namespaces/{d}/services/shop", {"metadata": {"labels": {"mesh": "on"}}})
    wait_for(lambda: api.vs(d, "shop-virtual-service"), what="shop selected")
    api.patch(f"/api/v1/namespaces/{d}/services/cart", {"metadata": {"labels": {"mesh": None}}})
    wait_for(lambda: api.vs(d, "cart-virtual-service") is None, what="cart deselected")
    wait_for(lambda: api.service(dev, "cart") is None, what="cart's placeholder gone")

    # An invalid selector on reload: refused, naming the field; the last good one kept.
    bad = {"matchExpressions": [{"key": "tier", "operator": "In"}]}
    api.write_config(operator.config_map, operator.config(placeholders=True, serviceSelector=bad))
    line = wait_for(
        lambda: next((x for x in proc.log_lines() if x["msg"].startswith("config rejected")), None),
        what="the reload refused",
    )
    assert "serviceSelector.matchExpressions[0]: In needs values" in line["error"]
    assert proc.metric("virtualservice_operator_config_valid") == 0
    # Reload to no selector at all: every Service again.
    api.write_config(operator.config_map, operator.config(placeholders=True))
    wait_for(lambda: api.vs(d, "legacy-virtual-service"), what="every Service selected")
    wait_for(lambda: api.vs(d, "cart-virtual-service"), what="cart again")
