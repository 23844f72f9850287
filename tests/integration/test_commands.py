"""`explain` and `status` against a real API server and the real operator process."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.integration.conftest import OperatorFactory
from tests.integration.harness import Api, wait_for
from virtualservice_operator import cli
from virtualservice_operator_dev.controlplane import ControlPlane

pytestmark = pytest.mark.integration


def _cli(
    capsys: pytest.CaptureFixture[str], cp: ControlPlane, operator: OperatorFactory, *args: str
) -> tuple[int, str]:
    capsys.readouterr()  # drop what earlier calls printed
    code = cli.main(
        [*args, "--kubeconfig", str(cp.admin_kubeconfig), "--config-map-name", operator.config_map]
    )
    return code, capsys.readouterr().out


def _status(
    capsys: pytest.CaptureFixture[str], cp: ControlPlane, operator: OperatorFactory
) -> dict[str, Any]:
    code, out = _cli(capsys, cp, operator, "status", "-o", "json")
    assert code == 0, out
    return {row["service"]: row for row in json.loads(out)}


def test_explain_and_status_of_a_converged_name_then_drift(
    operator: OperatorFactory,
    api: Api,
    control_plane: ControlPlane,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ns = operator.namespaces
    d, (dev0, dev1, dev2) = ns.default, ns.developers
    api.create_service(ns.default, "basket")
    api.create_service(dev0, "basket")
    proc = operator.start(operator.config(placeholders=True))
    wait_for(lambda: api.service(dev2, "basket"), what="placeholders")

    def converged() -> bool:
        return _cli(capsys, control_plane, operator, "status", "--check")[0] == 0

    wait_for(converged, what="status --check: everything in sync")
    code, out = _cli(capsys, control_plane, operator, "status")
    row = next(line for line in out.splitlines() if line.startswith("basket "))
    assert f"{d}/basket-virtual-service" in row
    assert f"dev-{dev0}" in row and f"{dev1},{dev2}" in row and row.endswith("in sync")
    assert out.splitlines()[0].split() == [
        "SERVICE",
        "VIRTUALSERVICE",
        "DEVELOPER",
        "ROUTES",
        "PLACEHOLDERS",
        "SYNC",
    ]
    record = _status(capsys, control_plane, operator)["basket"]
    assert record == {
        "service": "basket",
        "virtualServices": [f"{d}/basket-virtual-service"],
        "developerRoutes": [f"dev-{dev0}"],
        "placeholders": [dev1, dev2],
        "inSync": True,
        "actions": [],
    }

    # explain: every namespace, the routes, in sync, and the operator's Events.
    def explained() -> str | None:
        code, out = _cli(capsys, control_plane, operator, "explain", "basket")
        return out if code == 0 and "VirtualServiceCreated" in out else None

    out = wait_for(explained, what="explain basket with the operator's Event")
    assert f"Config (ConfigMap virtualservice-operator-system/{operator.config_map})" in out
    rows = {
        line.split()[0]: " ".join(line.split()[1:])
        for line in out.splitlines()
        if line.startswith("  ")
    }
    assert rows[d] == "default real (ClusterIP, ports http-80:80)"
    assert rows[dev0] == "developer real (ClusterIP, ports http-80:80): routed"
    assert rows[dev1] == rows[dev2] == f"developer placeholder -> basket.{d}.svc.cluster.local"
    assert rows[f"dev-{dev0}"] == f"x-developer={dev0} basket.{dev0}.svc.cluster.local"
    assert rows["(template)"] == f"* basket.{d}.svc.cluster.local"
    assert f"placeholder -> basket.{d}.svc.cluster.local" in out
    assert "  managed\n" in out
    assert "in sync: a reconcile now would write nothing" in out
    assert "Why nothing happens" not in out

    # Drift: with the operator stopped, a new Service and a lost developer Service.
    assert proc.stop() == 0
    api.create_service(d, "cart")
    assert api.delete_service(dev0, "basket") == 200
    code, out = _cli(capsys, control_plane, operator, "explain", "basket")
    assert code == 1
    assert "drift: a reconcile now would" in out
    assert f"- create Service {dev0}/basket: placeholder for {d}/basket missing" in out
    assert f"- update VirtualService {d}/basket-virtual-service" in out
    code, out = _cli(capsys, control_plane, operator, "explain", "cart")
    assert code == 1
    assert f"- create VirtualService {d}/cart-virtual-service: not found" in out
    statuses = _status(capsys, control_plane, operator)  # exit 0 without --check
    assert statuses["cart"]["inSync"] is False and statuses["cart"]["virtualServices"] == []
    assert statuses["basket"]["inSync"] is False and len(statuses["basket"]["actions"]) == 2
    code, out = _cli(capsys, control_plane, operator, "status", "--check")
    assert code == 1
    assert "(missing)" in out and "drift (2 actions)" in out


def test_explain_says_why_nothing_happens(
    operator: OperatorFactory,
    api: Api,
    control_plane: ControlPlane,
    kubectl: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ns = operator.namespaces
    d, dev0 = ns.default, ns.developers[0]
    other = f"other-{ns.suffix}"
    ns.create(other)
    system_name = f"sys-{ns.suffix}"
    api.create_service("kube-system", system_name)
    api.create_service(other, "elsewhere")
    api.create_service(d, "excl", labels={"virtualservice-operator/exclude": "true"})
    api.create_service(dev0, "devonly")
    api.create_service(d, "plain")
    api.create_service(d, "unm")
    api.create(
        f"/apis/networking.istio.io/v1/namespaces/{d}/virtualservices",
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "unm-virtual-service", "namespace": d},
            "spec": {
                "hosts": ["unm"],
                "http": [{"route": [{"destination": {"host": "elsewhere"}}]}],
            },
        },
    )
    operator.start(operator.config(placeholders=False))
    wait_for(lambda: api.vs(d, "plain-virtual-service"), what="plain's VirtualService")

    def reasons(name: str) -> str:
        code, out = _cli(capsys, control_plane, operator, "explain", name)
        assert code == 0, out  # nothing to do: in sync
        assert "in sync" in out
        return out.split("Why nothing happens\n", 1)[1]

    system = reasons(system_name)
    assert "kube-system is a system namespace: its Services are never acted on" in system
    assert (
        f"{other} is neither defaultNamespace nor in developerNamespaces: not watched"
        in reasons("elsewhere")
    )
    # The reasons desired state gives (Desired.notes), as the operator's logs give them.
    nothing = ": nothing is made for this name"
    excluded = f"excluded by label virtualservice-operator/exclude=true on {d}/excl{nothing}"
    assert excluded in reasons("excl")
    assert f"ignored: 'kubernetes' is the API server's own Service{nothing}" in reasons(
        "kubernetes"
    )
    assert f"dev-only: no Service devonly in default namespace {d}{nothing}" in reasons("devonly")
    assert "placeholders are off (enablePlaceholderServices: false): none in" in reasons("plain")
    unmanaged = reasons("unm")
    assert f"VirtualService {d}/unm-virtual-service is unmanaged" in unmanaged
    out = _cli(capsys, control_plane, operator, "explain", "unm")[1]
    assert "NOT managed (no label managed-by=virtualservice-operator)" in out
    assert "warning: VirtualService" in out and "left alone" in out
    wait_for(
        lambda: (
            "UnmanagedVirtualService" in _cli(capsys, control_plane, operator, "explain", "unm")[1]
        ),
        what="the operator's Warning Event about the unmanaged VirtualService",
    )


def test_errors_exit_3(
    operator: OperatorFactory,
    api: Api,
    control_plane: ControlPlane,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = cli.main(
        [
            "status",
            "--kubeconfig",
            str(control_plane.admin_kubeconfig),
            "--config-map-name",
            "no-such-config",
        ]
    )
    assert code == 3
    assert (
        "ConfigMap virtualservice-operator-system/no-such-config not found"
        in capsys.readouterr().err
    )
    api.write_config(operator.config_map, "defaultNamespace: Bad\n")
    capsys.readouterr()
    code = cli.main(
        [
            "explain",
            "x",
            "--kubeconfig",
            str(control_plane.admin_kubeconfig),
            "--config-map-name",
            operator.config_map,
        ]
    )
    assert code == 3
    assert (
        "holds an invalid config (the operator keeps its last good one)" in capsys.readouterr().err
    )


def test_explain_with_the_operators_own_credentials(
    operator: OperatorFactory, api: Api, capsys: pytest.CaptureFixture[str]
) -> None:
    """Inside the pod (`kubectl exec ... -- virtualservice-operator explain`), the
    ServiceAccount may create Events but not list them: the rest is still explained."""
    api.write_config(operator.config_map, operator.config())
    api.create_service(operator.namespaces.default, "web")
    code = cli.main(
        [
            "explain",
            "web",
            "--kubeconfig",
            str(operator.kubeconfig),
            "--config-map-name",
            operator.config_map,
        ]
    )
    out = capsys.readouterr().out
    assert code == 1  # no operator running: the VirtualService is still to be created
    assert "- create VirtualService" in out
    assert "cannot list Events: forbidden for these credentials" in out
