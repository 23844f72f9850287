"""The deployment side: every manifest of deployments/** and monitoring/** against the real
kube-apiserver (the chart has its own tests: test_chart.py).

- `kubectl apply --dry-run=server` of every manifest succeeds, then a real apply does;
- the ServiceAccount can do what the operator needs and nothing more (`kubectl auth can-i`),
  with no wildcard anywhere.

The Prometheus Operator's CRDs do not exist here: the ServiceMonitor and PrometheusRule
are checked against stand-in CRDs of the same group, version and kinds (open schema,
the monitoring_crds fixture).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.harness import OPERATOR_NS
from virtualservice_operator_dev.controlplane import REPO_ROOT, ControlPlane

pytestmark = pytest.mark.integration

DEPLOYMENTS = REPO_ROOT / "deployments"
MONITORING = REPO_ROOT / "monitoring"
SA = f"system:serviceaccount:{OPERATOR_NS}:virtualservice-operator"
Obj = dict[str, Any]


# -- helpers ------------------------------------------------------------------------------


def _docs(text: str) -> list[Obj]:
    return [d for d in yaml.safe_load_all(text) if d]


def _load(*paths: Path) -> list[Obj]:
    return [d for p in paths for d in _docs(p.read_text())]


def _manifests() -> list[Path]:
    files = sorted(p for p in DEPLOYMENTS.rglob("*") if p.suffix in (".yaml", ".yml"))
    return [*files, *sorted(MONITORING.glob("*.yaml"))]


@pytest.fixture
def restore_deployment(control_plane: ControlPlane, operator_kubeconfig: Path) -> Iterator[None]:
    """The session's objects as deployments/deployment.yaml has them, after the test too."""
    yield
    control_plane.kubectl("apply", "-f", str(DEPLOYMENTS / "deployment.yaml"))
    control_plane.kubectl("apply", "-f", str(DEPLOYMENTS / "config.yaml"))


# -- the manifests --------------------------------------------------------------------------


def test_every_manifest_applies_dry_run_server_then_for_real(
    control_plane: ControlPlane, monitoring_crds: None, restore_deployment: None
) -> None:
    files = _manifests()
    names = {str(p.relative_to(REPO_ROOT)) for p in files}
    assert {
        "deployments/deployment.yaml",
        "deployments/config.yaml",
        "deployments/networkpolicy.yaml",
        "monitoring/servicemonitor.yaml",
        "monitoring/prometheusrule.yaml",
    } <= names, names
    for path in files:
        out = control_plane.kubectl("apply", "--dry-run=server", "-f", str(path), check=False)
        assert out.returncode == 0, f"{path}: {out.stderr}"
        assert "(server dry run)" in out.stdout, out.stdout
    for path in files:
        out = control_plane.kubectl("apply", "-f", str(path), check=False)
        assert out.returncode == 0, f"{path}: {out.stderr}"
    for path in files:  # every object is there
        out = control_plane.kubectl("get", "-f", str(path), "-o", "name")
        assert len(out.stdout.split()) == len(_load(path)), (path, out.stdout)


# -- RBAC -------------------------------------------------------------------------------------


def _can_i(cp: ControlPlane, *args: str) -> str:
    out = cp.kubectl("auth", "can-i", *args, f"--as={SA}", check=False)
    answer = out.stdout.strip()
    assert answer in ("yes", "no"), (args, out.stdout, out.stderr)
    return answer


NEEDED = [
    ("list", "services", "-A"),
    ("watch", "services", "-A"),
    ("get", "services", "-n", "any-team"),
    ("create", "services", "-n", "any-team"),
    ("update", "services", "-n", "any-team"),
    ("delete", "services", "-n", "any-team"),
    ("list", "virtualservices.networking.istio.io", "-A"),
    ("watch", "virtualservices.networking.istio.io", "-A"),
    ("create", "virtualservices", "-n", "production"),
    ("update", "virtualservices", "-n", "production"),
    ("delete", "virtualservices", "-n", "production"),
    ("get", "namespaces/staging"),
    ("list", "namespaces"),
    ("watch", "namespaces"),
    ("create", "events", "-n", "any-team"),
    ("create", "events.events.k8s.io", "-n", "any-team"),
    ("get", "configmaps", "-n", OPERATOR_NS),
    ("watch", "configmaps", "-n", OPERATOR_NS),
    ("create", "leases.coordination.k8s.io", "-n", OPERATOR_NS),
    ("get", "leases/virtualservice-operator-leader", "-n", OPERATOR_NS),
    ("update", "leases/virtualservice-operator-leader", "-n", OPERATOR_NS),
    # -metrics-secure: who is calling /metrics, and may they?
    ("create", "tokenreviews.authentication.k8s.io"),
    ("create", "subjectaccessreviews.authorization.k8s.io"),
]
REFUSED = [
    *[
        (verb, "secrets", *where)
        for verb in ("get", "list", "watch", "create", "update", "patch", "delete")
        for where in (("-A",), ("-n", OPERATOR_NS), ("-n", "default"))
    ],
    *[(verb, "namespaces") for verb in ("create", "update", "patch", "delete")],
    ("get", "configmaps", "-n", "default"),
    ("list", "configmaps", "-A"),
    ("update", "configmaps", "-n", OPERATOR_NS),
    ("get", "leases/some-other-lease", "-n", OPERATOR_NS),
    ("update", "leases/some-other-lease", "-n", OPERATOR_NS),
    ("create", "leases.coordination.k8s.io", "-n", "default"),
    ("get", "pods", "-A"),
    ("create", "deployments.apps", "-n", OPERATOR_NS),
    ("escalate", "clusterroles.rbac.authorization.k8s.io"),
    ("*", "services", "-n", "default"),
    ("create", "*", "-n", "default"),
    ("get", "tokenreviews.authentication.k8s.io"),
    ("get", "/metrics"),  # the operator serves its metrics; it does not read them
]


def test_service_account_can_do_what_the_operator_needs_and_nothing_more(
    control_plane: ControlPlane, operator_kubeconfig: Path
) -> None:
    assert _can_i(control_plane, "create", "virtualservices") == "yes"  # the guide's own check
    wrong = [a for a in NEEDED if _can_i(control_plane, *a) != "yes"]
    assert not wrong, f"refused but needed: {wrong}"
    wrong = [a for a in REFUSED if _can_i(control_plane, *a) != "no"]
    assert not wrong, f"granted but not needed: {wrong}"


def test_no_wildcard_in_any_role() -> None:
    objs = _load(DEPLOYMENTS / "deployment.yaml")
    roles = [o for o in objs if o["kind"] in ("ClusterRole", "Role")]
    assert {r["metadata"]["name"] for r in roles} >= {
        "virtualservice-operator-role",
        "virtualservice-operator-leader-election",
        "virtualservice-operator-metrics-reader",
    }
    for role in roles:
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                assert not any("*" in v for v in rule.get(field, [])), (
                    role["metadata"]["name"],
                    rule,
                )
            assert "secrets" not in rule.get("resources", [])
    bindings = [o for o in objs if o["kind"] in ("ClusterRoleBinding", "RoleBinding")]
    assert {b["roleRef"]["name"] for b in bindings} == {
        "virtualservice-operator-role",
        "virtualservice-operator-leader-election",
    }
