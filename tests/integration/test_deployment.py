"""The deployment side: every manifest of deployments/** and monitoring/**, and the Helm
chart in charts/virtualservice-operator, against the real kube-apiserver.

- `kubectl apply --dry-run=server` of every manifest succeeds, then a real apply does;
- the chart's default rendering holds the same objects as deployments/deployment.yaml
  and deployments/config.yaml, field by field (labels Helm adds aside), and its toggles
  render deployments/networkpolicy.yaml and monitoring/*.yaml;
- a values override renders what it says, is accepted by the API server, and its
  config.yaml drives the real operator;
- the ServiceAccount can do what the operator needs and nothing more (`kubectl auth can-i`),
  with no wildcard anywhere.

helm is built from its Go module (hack/controlplane/helm) by hack/build-controlplane.sh.
The Prometheus Operator's CRDs do not exist here: the ServiceMonitor and PrometheusRule
are checked against stand-in CRDs of the same group, version and kinds (open schema).
"""

from __future__ import annotations

import copy
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.conftest import OperatorFactory
from tests.integration.harness import OPERATOR_NS, Api, wait_for
from virtualservice_operator.config import parse_config
from virtualservice_operator_dev.controlplane import REPO_ROOT, ControlPlane

pytestmark = pytest.mark.integration

DEPLOYMENTS = REPO_ROOT / "deployments"
MONITORING = REPO_ROOT / "monitoring"
CHART = REPO_ROOT / "charts" / "virtualservice-operator"
SA = f"system:serviceaccount:{OPERATOR_NS}:virtualservice-operator"
# Labels the chart adds to every object's metadata (and only there): not in the files.
HELM_LABELS = ("helm.sh/chart", "app.kubernetes.io/managed-by")
ALL_TOGGLES = (
    "networkPolicy.enabled=true",
    "serviceMonitor.enabled=true",
    "prometheusRule.enabled=true",
)

Obj = dict[str, Any]
Key = tuple[str, str, str]  # kind, namespace, name


# -- helpers ------------------------------------------------------------------------------


def _docs(text: str) -> list[Obj]:
    return [d for d in yaml.safe_load_all(text) if d]


def _load(*paths: Path) -> list[Obj]:
    return [d for p in paths for d in _docs(p.read_text())]


def _key(obj: Obj) -> Key:
    return obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


def _by_key(objs: list[Obj]) -> dict[Key, Obj]:
    out = {_key(o): o for o in objs}
    assert len(out) == len(objs), "duplicate objects"
    return out


def _manifests() -> list[Path]:
    files = sorted(p for p in DEPLOYMENTS.rglob("*") if p.suffix in (".yaml", ".yml"))
    return [*files, *sorted(MONITORING.glob("*.yaml"))]


@pytest.fixture(scope="module")
def helm(control_plane: ControlPlane) -> Path:
    path = control_plane.bin_dir / "helm"
    if not path.exists():  # ensure_binaries() only checks the control-plane binaries
        subprocess.run(
            ["bash", str(REPO_ROOT / "hack" / "build-controlplane.sh")],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    assert path.exists(), path
    return path


def _render(
    helm: Path, *sets: str, values: Path | None = None, namespace: str | None = None
) -> str:
    cmd = [str(helm), "template", "virtualservice-operator", str(CHART)]
    if namespace:
        cmd += ["--namespace", namespace]
    if values:
        cmd += ["--values", str(values)]
    for s in sets:
        cmd += ["--set", s]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _without_helm_labels(obj: Obj) -> Obj:
    obj = copy.deepcopy(obj)
    labels = obj["metadata"].get("labels") or {}
    for label in HELM_LABELS:
        assert labels.pop(label, None) is not None, f"{_key(obj)} lacks the chart label {label}"
    return obj


def _same(chart_obj: Obj, file_obj: Obj) -> None:
    """Field-by-field: report the first differing path rather than two whole dumps."""

    def walk(a: Any, b: Any, path: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            assert a.keys() == b.keys(), f"{path}: keys {sorted(a)} != {sorted(b)}"
            for k in a:
                walk(a[k], b[k], f"{path}.{k}")
        elif isinstance(a, list) and isinstance(b, list):
            assert len(a) == len(b), f"{path}: {len(a)} items != {len(b)}"
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                walk(x, y, f"{path}[{i}]")
        else:
            assert a == b, f"{path}: chart {a!r} != file {b!r}"

    walk(chart_obj, file_obj, "/".join(_key(file_obj)))


def _config_of(cm: Obj) -> Obj:
    loaded: Obj = yaml.safe_load(cm["data"]["config.yaml"])
    return loaded


def _apply(cp: ControlPlane, text: str, *extra: str) -> str:
    return cp.kubectl("apply", *extra, "-f", "-", input=text).stdout


@pytest.fixture(scope="module")
def monitoring_crds(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Stand-ins for the Prometheus Operator's ServiceMonitor and PrometheusRule CRDs."""
    directory = tmp_path_factory.mktemp("monitoring-crds")
    for kind, plural in (
        ("ServiceMonitor", "servicemonitors"),
        ("PrometheusRule", "prometheusrules"),
    ):
        crd = {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.monitoring.coreos.com"},
            "spec": {
                "group": "monitoring.coreos.com",
                "names": {
                    "kind": kind,
                    "listKind": f"{kind}List",
                    "plural": plural,
                    "singular": kind.lower(),
                },
                "scope": "Namespaced",
                "versions": [
                    {
                        "name": "v1",
                        "served": True,
                        "storage": True,
                        "schema": {
                            "openAPIV3Schema": {
                                "type": "object",
                                "properties": {
                                    "spec": {
                                        "type": "object",
                                        "x-kubernetes-preserve-unknown-fields": True,
                                    }
                                },
                            }
                        },
                    }
                ],
            },
        }
        (directory / f"{plural}.yaml").write_text(yaml.safe_dump(crd))
    control_plane.install_crds(directory)


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


# -- the chart --------------------------------------------------------------------------------


def test_chart_defaults_are_deployment_yaml_and_config_yaml(helm: Path) -> None:
    chart = _by_key(_docs(_render(helm)))
    files = _by_key(_load(DEPLOYMENTS / "deployment.yaml", DEPLOYMENTS / "config.yaml"))
    assert sorted(chart) == sorted(files), "the chart renders other objects than the files"
    for key, from_file in files.items():
        chart_obj, file_obj = _without_helm_labels(chart[key]), copy.deepcopy(from_file)
        if key[0] == "ConfigMap":
            # Same settings; the chart writes config.yaml with toYaml, so compare the data.
            assert _config_of(chart_obj) == _config_of(file_obj)
            chart_obj["data"] = file_obj["data"] = None
        _same(chart_obj, file_obj)
    # Parts the issue names, spelled out (the walk above already compared them).
    container = chart[("Deployment", OPERATOR_NS, "virtualservice-operator")]["spec"]["template"][
        "spec"
    ]["containers"][0]
    assert container["command"][:2] == ["virtualservice-operator", "run"]
    assert container["args"] == ["-zap-log-level=info", "-zap-development=false"]
    assert container["resources"] == {
        "limits": {"cpu": "500m", "memory": "256Mi"},
        "requests": {"cpu": "50m", "memory": "128Mi"},
    }
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    # The chart's default config is valid for the operator, with no unknown keys.
    loaded = parse_config(
        chart[("ConfigMap", OPERATOR_NS, "virtualservice-operator-config")]["data"]["config.yaml"]
    )
    assert loaded.config.default_namespace == "production"


def test_chart_toggles_render_networkpolicy_and_monitoring_files(helm: Path) -> None:
    base = _by_key(_docs(_render(helm)))
    chart = _by_key(_docs(_render(helm, *ALL_TOGGLES)))
    files = _by_key(_load(DEPLOYMENTS / "networkpolicy.yaml", *sorted(MONITORING.glob("*.yaml"))))
    assert sorted(set(chart) - set(base)) == sorted(files)
    for key, file_obj in files.items():
        _same(_without_helm_labels(chart[key]), file_obj)
    for toggle in ALL_TOGGLES:  # each alone adds exactly its object
        added = set(_by_key(_docs(_render(helm, toggle)))) - set(base)
        assert len(added) == 1, (toggle, added)


def test_chart_dry_run_server_then_apply(
    control_plane: ControlPlane, helm: Path, monitoring_crds: None, restore_deployment: None
) -> None:
    for rendered in (_render(helm), _render(helm, *ALL_TOGGLES)):
        out = _apply(control_plane, rendered, "--dry-run=server")
        assert out.count("(server dry run)") == len(_docs(rendered)), out
    out = _apply(control_plane, _render(helm, *ALL_TOGGLES))
    assert len(out.strip().splitlines()) == len(_docs(_render(helm, *ALL_TOGGLES))), out
    deployment = control_plane.kubectl(
        "get", "deployment", "virtualservice-operator", "-n", OPERATOR_NS, "-o", "yaml"
    ).stdout
    assert (
        yaml.safe_load(deployment)["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    )


def test_chart_values_override(
    control_plane: ControlPlane, helm: Path, operator: OperatorFactory, api: Api, tmp_path: Path
) -> None:
    ns = operator.namespaces
    values = {
        "image": {"repository": "registry.example/vso", "tag": "v9.9.9", "pullPolicy": "Always"},
        "replicaCount": 2,
        "logging": {"zapLogLevel": "debug", "zapDevelopment": True},
        "extraFlags": ["-max-concurrent-reconciles=4"],
        "resources": {
            "limits": {"cpu": "1", "memory": "512Mi"},
            "requests": {"cpu": "100m", "memory": "256Mi"},
        },
        "commonLabels": {"team": "platform"},
        "podAnnotations": {"example.com/scrape": "true"},
        "createNamespace": False,
        "config": {
            "defaultNamespace": ns.default,
            "developerNamespaces": ns.developers[:2],
            "enablePlaceholderServices": True,
            "virtualServiceTemplate": "",  # the operator's built-in template
            "routing": {"header": "x-team"},
            "placeholder": {"labels": {"owner": "platform"}},
        },
        "networkPolicy": {"enabled": True},
        "serviceMonitor": {
            "enabled": True,
            "labels": {"release": "kube-prometheus-stack"},
            "interval": "15s",
        },
    }
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    rendered = _render(helm, values=values_file)
    chart = _by_key(_docs(rendered))
    assert ("Namespace", "", OPERATOR_NS) not in chart
    assert ("NetworkPolicy", OPERATOR_NS, "virtualservice-operator-netpol") in chart
    monitor = chart[("ServiceMonitor", OPERATOR_NS, "virtualservice-operator")]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"][0]["interval"] == "15s"
    deployment = chart[("Deployment", OPERATOR_NS, "virtualservice-operator")]
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["metadata"]["labels"]["app.kubernetes.io/version"] == "v9.9.9"
    assert container["image"] == "registry.example/vso:v9.9.9"
    assert container["imagePullPolicy"] == "Always"
    assert container["args"] == ["-zap-log-level=debug", "-zap-development=true"]
    assert container["command"][-1] == "-max-concurrent-reconciles=4"
    assert container["resources"] == values["resources"]
    assert pod["metadata"]["annotations"]["example.com/scrape"] == "true"
    assert all(o["metadata"]["labels"]["team"] == "platform" for o in chart.values())
    assert deployment["spec"]["selector"] == {"matchLabels": {"app": "virtualservice-operator"}}
    # The operator's command line in the chart is one the operator accepts.
    from virtualservice_operator.cli import build_parser

    args = build_parser().parse_args([*container["command"][1:], *container["args"]])
    assert (args.leader_elect, args.zap_log_level, args.max_concurrent_reconciles) == (
        True,
        "debug",
        4,
    )

    out = _apply(control_plane, rendered, "--dry-run=server")
    assert out.count("(server dry run)") == len(chart), out

    # The config the values produced drives the real operator: custom header, placeholder label.
    text = chart[("ConfigMap", OPERATOR_NS, "virtualservice-operator-config")]["data"][
        "config.yaml"
    ]
    assert "virtualServiceTemplate" not in yaml.safe_load(text)
    assert parse_config(text).config.routing.header == "x-team"
    api.create_service(ns.default, "web")
    api.create_service(ns.developers[0], "web")
    operator.start(text)
    vs = wait_for(
        lambda: (
            (v := api.vs(ns.default, "web-virtual-service"))
            and len(v["spec"].get("http") or []) == 2
            and v
        ),
        what="a developer route",
    )
    assert vs["spec"]["http"][0]["match"][0]["headers"]["x-team"] == {"exact": ns.developers[0]}
    placeholder = wait_for(lambda: api.service(ns.developers[1], "web"), what="placeholder")
    assert placeholder["metadata"]["labels"]["owner"] == "platform"


def test_chart_in_another_namespace_points_the_operator_there(helm: Path) -> None:
    chart = _by_key(
        _docs(
            _render(
                helm, "namespace=", "config.create=false", "createNamespace=false", namespace="ops"
            )
        )
    )
    assert ("ConfigMap", "ops", "virtualservice-operator-config") not in chart
    namespaced = [k for k in chart if k[0] not in ("ClusterRole", "ClusterRoleBinding")]
    assert namespaced and all(k[1] == "ops" for k in namespaced), namespaced
    binding = chart[("ClusterRoleBinding", "", "virtualservice-operator-rolebinding")]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "virtualservice-operator", "namespace": "ops"}
    ]
    container = chart[("Deployment", "ops", "virtualservice-operator")]["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert "-config-map-namespace=ops" in container["command"]


def test_chart_prometheus_rules_are_monitoring_file(helm: Path) -> None:
    """The rules are kept in the chart's files/ (no Helm escaping of Prometheus'
    {{ $value }}): they must stay the same as monitoring/prometheusrule.yaml."""
    rule = _by_key(_docs(_render(helm, "prometheusRule.enabled=true")))[
        ("PrometheusRule", OPERATOR_NS, "virtualservice-operator")
    ]
    assert rule["spec"] == _load(MONITORING / "prometheusrule.yaml")[0]["spec"]


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


def test_no_wildcard_in_any_role(helm: Path) -> None:
    objs = [*_load(DEPLOYMENTS / "deployment.yaml"), *_docs(_render(helm, *ALL_TOGGLES))]
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


def test_chart_lints_clean(helm: Path) -> None:
    out = subprocess.run(
        [str(helm), "lint", "--strict", str(CHART), "--set", ",".join(ALL_TOGGLES)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 chart(s) failed" in out.stdout, out.stdout
