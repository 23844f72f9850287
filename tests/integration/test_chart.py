"""The Helm chart in charts/virtualservice-operator, against the real kube-apiserver.

- `helm lint --strict` is clean; values.schema.json refuses wrong types, unknown log
  levels and unknown keys, naming the value;
- release `virtualservice-operator` in `virtualservice-operator-system` renders the
  operations guide's names and the objects of deployments/*.yaml and monitoring/*.yaml.
  Both exist because the operations guide installs with `kubectl apply -f deployments/`
  (readable files, one per concern, the config apart so that re-applying the Deployment
  keeps it) while the chart serves Helm; dist/install.yaml (`make release`) is the chart
  rendered whole. This test keeps the files equal to the chart, field by field;
- every values combination renders and passes `kubectl apply --dry-run=server`;
- two releases install side by side (`helm install` twice) without a name clash, and
  `helm uninstall` of one leaves nothing of it and does not touch the other;
- rbac.scope=namespaced grants Service writes only in the configured namespaces, with
  cluster-wide reads (`kubectl auth can-i`), rbac.scope=cluster everywhere;
- a values override renders what it says and its config.yaml drives the real operator.

helm is built from its Go module (hack/tools/istio/go.mod) by hack/build-controlplane.sh.
`helm test` needs a kubelet to run its Pod; here its hook is rendered and dry-run only
(tests/node/test_ha_on_node.py runs it on a node).
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import subprocess
import tarfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from tests.integration.conftest import Namespaces, OperatorFactory
from tests.integration.harness import OPERATOR_NS, Api, wait_for
from virtualservice_operator.cli import build_parser
from virtualservice_operator.domain.config import parse_config
from virtualservice_operator_dev.controlplane import REPO_ROOT, ControlPlane

pytestmark = pytest.mark.integration

CHART = REPO_ROOT / "charts" / "virtualservice-operator"
DEPLOYMENTS = REPO_ROOT / "deployments"
MONITORING = REPO_ROOT / "monitoring"
RELEASE = "virtualservice-operator"
# Labels the chart puts on every object; the files carry them only where they say so.
CHART_LABELS = (
    "helm.sh/chart",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
)
# Cluster-wide rules only metrics.secure needs (TokenReview and SubjectAccessReview).
REVIEW_RULES = [
    {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
    {
        "apiGroups": ["authorization.k8s.io"],
        "resources": ["subjectaccessreviews"],
        "verbs": ["create"],
    },
]
# Flags the chart passes that the operator gains in changes made alongside it.
TOGGLES = {
    "networkPolicy": {"enabled": True},
    "serviceMonitor": {"enabled": True},
    "prometheusRule": {"enabled": True},
    "grafanaDashboard": {"enabled": True},
    "podDisruptionBudget": {"enabled": True},
}

Obj = dict[str, Any]
Key = tuple[str, str, str]  # kind, namespace, name
UNINSTALL_HOOK_KINDS = ("ServiceAccount", "Role", "RoleBinding", "Job")


# -- helpers ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def helm(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    path = control_plane.bin_dir / "helm"
    if not path.exists():  # ensure_binaries() only checks the control-plane binaries
        subprocess.run(
            ["bash", str(REPO_ROOT / "hack" / "build-controlplane.sh")],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    assert path.exists(), path
    return Helm(path, control_plane, tmp_path_factory.mktemp("helm"))


class Helm:
    """helm against the test API server, with its own config, cache and data folders."""

    def __init__(self, path: Path, cp: ControlPlane, home: Path) -> None:
        self.path, self.cp = path, cp
        self.env = {
            **os.environ,
            "KUBECONFIG": str(cp.admin_kubeconfig),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_DATA_HOME": str(home / "data"),
        }
        self.values_dir = home

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(
            [str(self.path), *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=self.env,
        )
        if check:
            assert out.returncode == 0, f"helm {' '.join(args)}: {out.stdout}{out.stderr}"
        return out

    def values_file(self, values: Obj) -> Path:
        path = self.values_dir / f"values-{uuid.uuid4().hex[:8]}.yaml"
        path.write_text(yaml.safe_dump(values))
        return path

    def template(
        self, values: Obj | None = None, *sets: str, release: str = RELEASE, namespace: str = ""
    ) -> str:
        args = ["template", release, str(CHART), "--namespace", namespace or OPERATOR_NS]
        if values:
            args += ["--values", str(self.values_file(values))]
        for s in sets:
            args += ["--set", s]
        return self.run(*args).stdout

    def objects(self, values: Obj | None = None, *sets: str, **kw: str) -> dict[Key, Obj]:
        return _by_key(_docs(self.template(values, *sets, **kw)))


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


def _container(objs: dict[Key, Obj], namespace: str = OPERATOR_NS, name: str = RELEASE) -> Obj:
    pod = objs[("Deployment", namespace, name)]["spec"]["template"]["spec"]
    container: Obj = pod["containers"][0]
    return container


def _like_file(chart_obj: Obj, file_obj: Obj) -> Obj:
    """The chart's object without the chart's labels that the file's object lacks."""
    obj = copy.deepcopy(chart_obj)
    labels = obj["metadata"].get("labels") or {}
    for label in CHART_LABELS:
        assert label in labels, f"{_key(obj)} lacks the chart label {label}"
        if label not in (file_obj["metadata"].get("labels") or {}):
            del labels[label]
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


def _rules(role: Obj) -> list[str]:
    return sorted(json.dumps(r, sort_keys=True) for r in role["rules"])


def _dry_run(cp: ControlPlane, text: str) -> None:
    out = cp.kubectl("apply", "--dry-run=server", "-f", "-", input=text, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("(server dry run)") == len(_docs(text)), out.stdout


def _config(ns: Namespaces) -> Obj:
    return {
        "defaultNamespace": ns.default,
        "developerNamespaces": list(ns.developers),
        "enablePlaceholderServices": True,
    }


# -- lint and schema ------------------------------------------------------------------------


def test_chart_lints_clean(helm: Helm) -> None:
    for sets in (
        [],
        [f"{k}.enabled=true" for k in TOGGLES],
        ["rbac.scope=namespaced", "metrics.secure=true", "metrics.certSecret=certs"],
        ["leaderElection.enabled=false", "profiling.enabled=true", "createNamespace=true"],
    ):
        args = ["lint", "--strict", str(CHART), "--namespace", "team-x"]
        out = helm.run(*args, *(a for s in sets for a in ("--set", s)), check=False)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "0 chart(s) failed" in out.stdout, out.stdout


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("replicaCount=abc", "at '/replicaCount': got string, want integer"),
        ("logging.zapLogLevel=verbose", "at '/logging/zapLogLevel': value must be one of"),
        ("leaderElection.enabled=maybe", "at '/leaderElection/enabled': got string, want boolean"),
        ("rbac.scope=everywhere", "at '/rbac/scope': value must be one of"),
        ("metrics.secure=yes", "at '/metrics/secure': got string, want boolean"),
        ("replicaCunt=2", "additional properties 'replicaCunt' not allowed"),
        ("config.defaultNamespace=Not_A_Namespace", "at '/config/defaultNamespace'"),
        ("instance=-bad-", "at '/instance'"),
        ("metrics.certSecret=certs", "metrics.certSecret is set but metrics.secure is false"),
        (
            "rbac.scope=namespaced,config.create=false",
            "list the namespaces the operator writes in rbac.namespaces",
        ),
        (
            "rbac.scope=namespaced,config.create=false,rbac.namespaces={staging}",
            "rbac.namespaces must include config.defaultNamespace (production)",
        ),
    ],
)
def test_bad_values_are_refused_naming_the_value(helm: Helm, setting: str, message: str) -> None:
    out = helm.run("template", RELEASE, str(CHART), "--set", setting, check=False)
    assert out.returncode != 0, out.stdout
    assert message in out.stderr, out.stderr


# -- the default release: the guide's names, the files' objects -----------------------------


def test_default_release_has_the_guides_names(helm: Helm) -> None:
    objs = helm.objects(None, *(f"{k}.enabled=true" for k in TOGGLES))
    names = {(kind, name) for kind, _, name in objs}
    assert {
        ("Deployment", "virtualservice-operator"),
        ("ServiceAccount", "virtualservice-operator"),
        ("ClusterRole", "virtualservice-operator-role"),
        ("ClusterRoleBinding", "virtualservice-operator-rolebinding"),
        ("ConfigMap", "virtualservice-operator-config"),
        ("NetworkPolicy", "virtualservice-operator-netpol"),
        ("ClusterRole", "virtualservice-operator-metrics-reader"),
        ("Service", "virtualservice-operator-metrics"),
    } <= names, names
    assert all(ns in ("", OPERATOR_NS) for _, ns, _ in objs)
    deployment = objs[("Deployment", OPERATOR_NS, RELEASE)]
    assert deployment["spec"]["selector"] == {"matchLabels": {"app": "virtualservice-operator"}}
    assert deployment["spec"]["template"]["metadata"]["labels"]["app"] == RELEASE
    assert _container(objs)["name"] == "manager"
    for obj in objs.values():
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == RELEASE, _key(obj)
        assert labels["app.kubernetes.io/name"] == "virtualservice-operator", _key(obj)
        assert labels["app.kubernetes.io/managed-by"] == "Helm", _key(obj)
    # The operator's defaults are the guide's names: no flag needed to find them.
    command = _container(objs)["command"]
    assert not [f for f in command if f.startswith(("-config-map", "-leader-election-id"))]


def test_default_release_renders_the_objects_of_deployments_yaml(helm: Helm) -> None:
    # Both exist on purpose: the operations guide installs with `kubectl apply -f
    # deployments/deployment.yaml` (no helm needed), while `make release` renders
    # dist/install.yaml from the chart. This test keeps the hand-written files equal to
    # what the chart renders, so neither drifts.
    chart = helm.objects(None, "createNamespace=true")
    files = _by_key(_load(DEPLOYMENTS / "deployment.yaml", DEPLOYMENTS / "config.yaml"))
    extra = set(chart) - set(files)
    assert extra <= {
        ("ClusterRole", "", f"{RELEASE}-metrics-reader"),
        ("Pod", OPERATOR_NS, f"{RELEASE}-test-readyz"),  # the `helm test` hook
        # The pre-delete hook that stops the operator before `helm uninstall` deletes it.
        *((kind, OPERATOR_NS, f"{RELEASE}-uninstall") for kind in UNINSTALL_HOOK_KINDS),
    }, extra
    secure_role = helm.objects(None, "metrics.secure=true")[("ClusterRole", "", f"{RELEASE}-role")]
    for key, from_file in files.items():
        assert key in chart, f"the chart does not render {key}"
        chart_obj, file_obj = _like_file(chart[key], from_file), copy.deepcopy(from_file)
        if key[0] == "ConfigMap":
            # Same settings; the chart writes config.yaml with toYaml, so compare the data.
            assert yaml.safe_load(chart_obj["data"]["config.yaml"]) == yaml.safe_load(
                file_obj["data"]["config.yaml"]
            )
            chart_obj["data"] = file_obj["data"] = None
        if key == ("ClusterRole", "", f"{RELEASE}-role"):
            # The chart grants the review rules only with metrics.secure; the file always.
            chart_rules, file_rules = _rules(secure_role), _rules(file_obj)
            assert set(file_rules) <= set(chart_rules), (file_rules, chart_rules)
            assert set(chart_rules) - set(file_rules) <= {
                json.dumps(r, sort_keys=True) for r in REVIEW_RULES
            }
            chart_obj["rules"] = file_obj["rules"] = None
        if key[0] == "Service":
            # The chart's Service also exposes 8081 for `helm test`.
            ports = chart_obj["spec"]["ports"]
            assert [p["name"] for p in ports] == ["metrics", "health"]
            chart_obj["spec"]["ports"] = ports[:1]
        _same(chart_obj, file_obj)
    container = _container(chart)
    assert container["command"][:2] == ["virtualservice-operator", "run"]
    assert container["args"] == ["-zap-log-level=info", "-zap-development=false"]
    loaded = parse_config(
        chart[("ConfigMap", OPERATOR_NS, f"{RELEASE}-config")]["data"]["config.yaml"]
    )
    assert loaded.config.default_namespace == "production"


def test_default_release_renders_the_monitoring_files(helm: Helm) -> None:
    chart = helm.objects(None, "serviceMonitor.enabled=true", "prometheusRule.enabled=true")
    for from_file in _load(MONITORING / "servicemonitor.yaml", MONITORING / "prometheusrule.yaml"):
        _same(_like_file(chart[_key(from_file)], from_file), from_file)
    policy = helm.objects(None, "networkPolicy.enabled=true")[
        ("NetworkPolicy", OPERATOR_NS, f"{RELEASE}-netpol")
    ]
    (from_file,) = _load(DEPLOYMENTS / "networkpolicy.yaml")
    for field in ("podSelector", "policyTypes", "egress"):
        assert policy["spec"][field] == from_file["spec"][field], field


def test_one_version_chart_image_and_labels(helm: Helm) -> None:
    from virtualservice_operator import __version__

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    objs = helm.objects()
    assert chart["appVersion"] == __version__
    assert _container(objs)["image"].endswith(f":v{__version__}")
    assert {o["metadata"]["labels"]["app.kubernetes.io/version"] for o in objs.values()} == {
        __version__
    }
    file_image = _container(_by_key(_load(DEPLOYMENTS / "deployment.yaml")))["image"]
    assert _container(objs)["image"] == file_image
    # The packaged chart carries the version in its name and its Chart.yaml.
    out_dir = helm.values_dir / "package"
    helm.run("package", str(CHART), "--destination", str(out_dir))
    (package,) = out_dir.glob("*.tgz")
    assert package.name == f"virtualservice-operator-{__version__}.tgz"
    with tarfile.open(package) as tar:
        packaged = tar.extractfile("virtualservice-operator/Chart.yaml")
        assert packaged is not None
        assert yaml.safe_load(packaged.read())["appVersion"] == __version__
        assert "virtualservice-operator/values.schema.json" in tar.getnames()


# -- monitoring --------------------------------------------------------------------------------


def test_alerts_exist_for_what_is_deployed_and_link_their_runbook(helm: Helm) -> None:
    def alerts(*sets: str) -> dict[str, Obj]:
        rule = helm.objects(None, "prometheusRule.enabled=true", *sets)[
            ("PrometheusRule", OPERATOR_NS, RELEASE)
        ]
        return {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}

    with_leader = alerts()
    without_leader = alerts("leaderElection.enabled=false")
    assert "VirtualServiceOperatorNoLeader" in with_leader
    assert set(with_leader) - set(without_leader) == {"VirtualServiceOperatorNoLeader"}
    anchors = {
        re.sub(r"[^a-z0-9-]", "", h.lower().replace(" ", "-"))
        for h in re.findall(r"^#+ (.+)$", (REPO_ROOT / "docs" / "alerts.md").read_text(), re.M)
    }
    for name, rule in with_leader.items():
        url = rule["annotations"]["runbook_url"]
        assert url.startswith("https://") and "/docs/alerts.md#" in url, url
        assert url.split("#")[1] in anchors, f"{name}: no section {url} in docs/alerts.md"
        # Only this release's series: its metrics Service is the scrape job.
        assert f'job="{RELEASE}-metrics",namespace="{OPERATOR_NS}"' in rule["expr"], name
    other = helm.objects(None, "prometheusRule.enabled=true", release="blue", namespace="team-b")
    rule = other[("PrometheusRule", "team-b", "blue-virtualservice-operator")]
    assert 'job="blue-virtualservice-operator-metrics",namespace="team-b"' in str(rule)


def test_dashboard_is_the_bare_model_delivered_for_grafanas_sidecar(helm: Helm) -> None:
    text = (MONITORING / "grafana-dashboard.json").read_text()
    model = json.loads(text)
    assert "dashboard" not in model and "overwrite" not in model  # not the HTTP-API wrapper
    assert model["title"] == "VirtualService Operator" and model["panels"]
    assert (CHART / "files" / "grafana-dashboard.json").read_text() == text
    objs = helm.objects(None, "grafanaDashboard.enabled=true")
    cm = objs[("ConfigMap", OPERATOR_NS, f"{RELEASE}-dashboard")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["virtualservice-operator.json"]) == model
    elsewhere = helm.objects(
        None, "grafanaDashboard.enabled=true,grafanaDashboard.namespace=grafana"
    )
    assert ("ConfigMap", "grafana", f"{RELEASE}-dashboard") in elsewhere


# -- every combination, on the server -----------------------------------------------------------


COMBINATIONS: dict[str, Callable[[Namespaces], Obj]] = {
    "defaults": lambda ns: {"config": _config(ns)},
    "everything on": lambda ns: {"config": _config(ns), **TOGGLES},
    "namespaced rbac": lambda ns: {"config": _config(ns), "rbac": {"scope": "namespaced"}},
    "namespaced rbac, own config": lambda ns: {
        "config": {"create": False, "defaultNamespace": ns.default},
        "rbac": {"scope": "namespaced", "namespaces": [ns.default, ns.developers[0]]},
    },
    "secure metrics with a certificate, profiling": lambda ns: {
        "config": _config(ns),
        "metrics": {"secure": True, "certSecret": "operator-metrics-tls"},
        "profiling": {"enabled": True},
        "serviceMonitor": {"enabled": True},
        "networkPolicy": {"enabled": True},
    },
    "no leader election, spread, budget": lambda ns: {
        "config": _config(ns),
        "leaderElection": {"enabled": False},
        "replicaCount": 3,
        "prometheusRule": {"enabled": True},
        "podDisruptionBudget": {"enabled": True, "minAvailable": 2},
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
            }
        ],
    },
    "existing service account, instance, overrides": lambda ns: {
        "config": _config(ns),
        "serviceAccount": {"create": False, "name": "platform-operators"},
        "instance": "blue",
        "fullnameOverride": "vso",
        "logging": {"zapLogLevel": "debug", "zapDevelopment": True},
        "podDisruptionBudget": {"enabled": True, "maxUnavailable": "50%"},
    },
    "release namespace object": lambda ns: {"config": _config(ns), "createNamespace": True},
}


@pytest.mark.parametrize("combination", list(COMBINATIONS))
def test_every_values_combination_dry_runs_on_the_server(
    control_plane: ControlPlane,
    helm: Helm,
    monitoring_crds: None,
    namespaces: Namespaces,
    combination: str,
) -> None:
    release_ns = f"vso-{namespaces.suffix}"
    namespaces.create(release_ns)
    values = COMBINATIONS[combination](namespaces)
    text = helm.template(values, release=f"r{namespaces.suffix}", namespace=release_ns)
    _dry_run(control_plane, text)
    for role in (d for d in _docs(text) if d["kind"] in ("ClusterRole", "Role")):
        for rule in role["rules"]:
            assert not any("*" in v for field in rule.values() for v in field), rule
            assert "secrets" not in rule.get("resources", []), rule
    # The command line is one the operator accepts.
    deployment = next(d for d in _docs(text) if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    _, unknown = build_parser().parse_known_args([*container["command"][1:], *container["args"]])
    assert unknown == []


def test_secure_metrics_profiling_and_instance_flags(helm: Helm) -> None:
    plain = helm.objects()
    assert not [f for f in _container(plain)["command"] if "secure" in f or "profil" in f]
    assert not [f for f in _container(plain)["command"] if f.startswith("-instance")]
    role = plain[("ClusterRole", "", f"{RELEASE}-role")]
    assert "tokenreviews" not in str(role) and "subjectaccessreviews" not in str(role)
    secure = helm.objects(
        {
            "metrics": {"secure": True, "certSecret": "tls"},
            "profiling": {"enabled": True},
            "instance": "blue",
            "serviceMonitor": {"enabled": True},
        }
    )
    container = _container(secure)
    path = "/etc/virtualservice-operator/metrics-certs"
    assert {
        "-metrics-secure=true",
        "-enable-profiling=true",
        "-instance=blue",
        f"-metrics-cert-path={path}",
    } <= set(container["command"])
    assert {"name": "metrics-certs", "mountPath": path, "readOnly": True} in container[
        "volumeMounts"
    ]
    pod = secure[("Deployment", OPERATOR_NS, RELEASE)]["spec"]["template"]["spec"]
    assert {"name": "metrics-certs", "secret": {"secretName": "tls"}} in pod["volumes"]
    rules = _rules(secure[("ClusterRole", "", f"{RELEASE}-role")])
    assert {json.dumps(r, sort_keys=True) for r in REVIEW_RULES} <= set(rules)
    endpoint = secure[("ServiceMonitor", OPERATOR_NS, RELEASE)]["spec"]["endpoints"][0]
    reader = secure[("ClusterRole", "", f"{RELEASE}-metrics-reader")]
    assert reader["rules"] == [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]
    # The certificate verified against the CA of its Secret, for the Service's name; the
    # token from the authorization field (bearerTokenFile is deprecated).
    host = f"{RELEASE}-metrics.{OPERATOR_NS}.svc"
    assert endpoint["scheme"] == "https" and "bearerTokenFile" not in endpoint
    assert endpoint["tlsConfig"] == {
        "ca": {"secret": {"name": "tls", "key": "ca.crt"}},
        "serverName": host,
    }
    assert endpoint["authorization"] == {
        "type": "Bearer",
        "credentials": {"name": f"{RELEASE}-metrics-scraper-token", "key": "token"},
    }
    token = secure[("Secret", OPERATOR_NS, f"{RELEASE}-metrics-scraper-token")]
    assert token["type"] == "kubernetes.io/service-account-token"
    scraper = token["metadata"]["annotations"]["kubernetes.io/service-account.name"]
    binding = secure[("ClusterRoleBinding", "", f"{RELEASE}-metrics-scraper")]
    assert binding["roleRef"]["name"] == f"{RELEASE}-metrics-reader"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": scraper, "namespace": OPERATOR_NS}
    ]


def test_uninstall_hook_stops_the_deployment_with_rights_on_its_scale_only(helm: Helm) -> None:
    objs = helm.objects()
    name = f"{RELEASE}-uninstall"
    hook = {kind: objs[(kind, OPERATOR_NS, name)] for kind in UNINSTALL_HOOK_KINDS}
    for kind, obj in hook.items():
        annotations = obj["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "pre-delete", kind
        assert "hook-succeeded" in annotations["helm.sh/hook-delete-policy"], kind
    weights = {k: int(o["metadata"]["annotations"]["helm.sh/hook-weight"]) for k, o in hook.items()}
    assert weights["Job"] > max(weights[k] for k in ("ServiceAccount", "Role", "RoleBinding"))
    assert hook["Role"]["rules"] == [
        {
            "apiGroups": ["apps"],
            "resources": ["deployments/scale"],
            "resourceNames": [RELEASE],
            "verbs": ["patch"],
        },
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    ]
    pod = hook["Job"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == name
    assert pod["containers"][0]["image"] == _container(objs)["image"]
    assert "app" not in hook["Job"]["spec"]["template"]["metadata"]["labels"]  # not waited on
    compile(pod["containers"][0]["command"][2], "pre-delete hook", "exec")


def test_image_by_digest(helm: Helm) -> None:
    digest = "sha256:" + "0123456789abcdef" * 4
    objs = helm.objects(None, f"image.digest={digest}")
    image = f"harbor.intent.ai/library/virtualservice-operator@{digest}"
    assert _container(objs)["image"] == image
    job = objs[("Job", OPERATOR_NS, f"{RELEASE}-uninstall")]["spec"]["template"]["spec"]
    assert job["containers"][0]["image"] == image
    out = helm.run("template", RELEASE, str(CHART), "--set", "image.digest=sha256:abc", check=False)
    assert out.returncode != 0 and "at '/image/digest'" in out.stderr, out.stderr


def test_secure_metrics_without_a_certificate_secret_gets_a_ca_signed_one(helm: Helm) -> None:
    objs = helm.objects(None, "metrics.secure=true", "serviceMonitor.enabled=true")
    name = f"{RELEASE}-metrics-cert"
    secret = objs[("Secret", OPERATOR_NS, name)]
    assert secret["type"] == "kubernetes.io/tls"
    pem = {k: base64.b64decode(v) for k, v in secret["data"].items()}
    ca = x509.load_pem_x509_certificate(pem["ca.crt"])
    cert = x509.load_pem_x509_certificate(pem["tls.crt"])
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"{RELEASE}-metrics.{OPERATOR_NS}.svc" in names.get_values_for_type(x509.DNSName)
    pod = objs[("Deployment", OPERATOR_NS, RELEASE)]["spec"]["template"]["spec"]
    assert {"name": "metrics-certs", "secret": {"secretName": name}} in pod["volumes"]
    endpoint = objs[("ServiceMonitor", OPERATOR_NS, RELEASE)]["spec"]["endpoints"][0]
    assert endpoint["tlsConfig"]["ca"] == {"secret": {"name": name, "key": "ca.crt"}}
    assert "insecureSkipVerify" not in str(objs)
    # A tlsConfig value is merged over the default; an authorization value replaces it.
    custom = helm.objects(
        {
            "metrics": {"secure": True},
            "serviceMonitor": {
                "enabled": True,
                "tlsConfig": {"serverName": "metrics.example"},
                "authorization": {"type": "Bearer", "credentials": {"name": "t", "key": "k"}},
            },
        }
    )
    endpoint = custom[("ServiceMonitor", OPERATOR_NS, RELEASE)]["spec"]["endpoints"][0]
    assert endpoint["tlsConfig"]["serverName"] == "metrics.example"
    assert endpoint["tlsConfig"]["ca"] == {"secret": {"name": name, "key": "ca.crt"}}
    assert endpoint["authorization"]["credentials"] == {"name": "t", "key": "k"}
    assert ("Secret", OPERATOR_NS, f"{RELEASE}-metrics-scraper-token") not in custom


def test_network_policy_admits_metrics_only_from_selected_namespaces(helm: Helm) -> None:
    policy = helm.objects(None, "networkPolicy.enabled=true")[
        ("NetworkPolicy", OPERATOR_NS, f"{RELEASE}-netpol")
    ]["spec"]
    assert policy["podSelector"] == {"matchLabels": {"app": RELEASE}}
    metrics, health = policy["ingress"]
    assert metrics == {
        "from": [{"namespaceSelector": {"matchLabels": {"monitoring": "enabled"}}}],
        "ports": [{"protocol": "TCP", "port": 8080}],
    }
    assert health == {"ports": [{"protocol": "TCP", "port": 8081}]}  # probes, from anywhere
    custom = helm.objects(
        {
            "networkPolicy": {
                "enabled": True,
                "metricsNamespaceSelector": {"matchLabels": {"a": "b"}},
            }
        }
    )[("NetworkPolicy", OPERATOR_NS, f"{RELEASE}-netpol")]["spec"]
    assert custom["ingress"][0]["from"] == [{"namespaceSelector": {"matchLabels": {"a": "b"}}}]


def test_options_budget_spread_service_account_and_test_hook(helm: Helm) -> None:
    objs = helm.objects(
        {
            "podDisruptionBudget": {"enabled": True},
            "topologySpreadConstraints": [
                {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}
            ],
            "serviceAccount": {"create": False, "name": "existing"},
        }
    )
    budget = objs[("PodDisruptionBudget", OPERATOR_NS, RELEASE)]["spec"]
    assert budget == {"maxUnavailable": 1, "selector": {"matchLabels": {"app": RELEASE}}}
    pod = objs[("Deployment", OPERATOR_NS, RELEASE)]["spec"]["template"]["spec"]
    assert pod["topologySpreadConstraints"] == [
        {
            "maxSkew": 1,
            "topologyKey": "zone",
            "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app": RELEASE}},
        }
    ]
    assert pod["serviceAccountName"] == "existing"
    # Only the uninstall hook's own (its Job may not scale the Deployment as the operator).
    assert [k for k in objs if k[0] == "ServiceAccount"] == [
        ("ServiceAccount", OPERATOR_NS, f"{RELEASE}-uninstall")
    ]
    binding = objs[("ClusterRoleBinding", "", f"{RELEASE}-rolebinding")]
    assert binding["subjects"][0]["name"] == "existing"
    # The helm test hook: /readyz through the Service's health port.
    with_hooks = _by_key(_docs(helm.template()))
    test_pod = with_hooks[("Pod", OPERATOR_NS, f"{RELEASE}-test-readyz")]
    assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    # The Service's address from the kubelet's Service variables: no cluster DNS needed.
    assert test_pod["spec"]["enableServiceLinks"] is True
    assert test_pod["spec"]["containers"][0]["command"][-1] == (
        "http://$(VIRTUALSERVICE_OPERATOR_METRICS_SERVICE_HOST)"
        ":$(VIRTUALSERVICE_OPERATOR_METRICS_SERVICE_PORT_HEALTH)/readyz"
    )
    service = with_hooks[("Service", OPERATOR_NS, f"{RELEASE}-metrics")]
    assert {"name": "health", "port": 8081, "targetPort": "health", "protocol": "TCP"} in service[
        "spec"
    ]["ports"]


def test_another_namespace_and_release_name(helm: Helm) -> None:
    objs = helm.objects({"config": {"create": False}}, release="blue", namespace="ops")
    assert not [k for k in objs if k[0] == "ConfigMap"]
    namespaced = [k for k in objs if k[0] not in ("ClusterRole", "ClusterRoleBinding")]
    assert namespaced and all(k[1] == "ops" for k in namespaced), namespaced
    fullname = "blue-virtualservice-operator"
    binding = objs[("ClusterRoleBinding", "", f"{fullname}-rolebinding")]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": fullname, "namespace": "ops"}]
    command = _container(objs, "ops", fullname)["command"]
    assert {
        "-config-map-namespace=ops",
        f"-config-map-name={fullname}-config",
        f"-leader-election-id={fullname}-leader",
    } <= set(command)
    role = objs[("Role", "ops", f"{fullname}-leader-election")]
    assert [f"{fullname}-leader"] in [r.get("resourceNames") for r in role["rules"]]
    args = build_parser().parse_args([*command[1:], *_container(objs, "ops", fullname)["args"]])
    assert (args.config_map_namespace, args.leader_election_id) == ("ops", f"{fullname}-leader")


# -- helm install, twice -------------------------------------------------------------------------


def _release_objects(cp: ControlPlane, release: str) -> dict[str, str]:
    """name -> resourceVersion of every object labelled with the release, in any namespace."""
    kinds = (
        "deployments,services,serviceaccounts,configmaps,roles,rolebindings,networkpolicies,"
        "poddisruptionbudgets,servicemonitors,prometheusrules"
    )
    selector = f"app.kubernetes.io/instance={release}"
    out: dict[str, str] = {}
    for args in ((kinds, "-A"), ("clusterroles,clusterrolebindings",)):
        listed = cp.kubectl("get", *args, "-l", selector, "-o", "json").stdout
        for item in json.loads(listed)["items"]:
            meta = item["metadata"]
            name = f"{item['kind']}/{meta.get('namespace', '')}/{meta['name']}"
            out[name] = meta["resourceVersion"]
    return out


def test_two_releases_install_side_by_side_and_uninstall_leaves_nothing(
    control_plane: ControlPlane, helm: Helm, monitoring_crds: None, namespaces: Namespaces
) -> None:
    ns = namespaces
    a, b = f"team-a-{ns.suffix}", f"team-b-{ns.suffix}"
    namespaces.create(a, b)
    # Overlapping developer namespaces: each release has its own Role there.
    values = {
        a: {
            **TOGGLES,
            "config": {"defaultNamespace": ns.default, "developerNamespaces": ns.developers[:2]},
            "rbac": {"scope": "namespaced"},
        },
        b: {
            **TOGGLES,
            "config": {
                "defaultNamespace": ns.developers[2],
                "developerNamespaces": ns.developers[1:2],
            },
            "rbac": {"scope": "namespaced"},
        },
    }
    for release in (a, b):
        out = helm.run(
            "install",
            release,
            str(CHART),
            "-n",
            release,
            "-f",
            str(helm.values_file(values[release])),
        )
        # NOTES.txt speaks of this release's own objects.
        assert (
            f"kubectl get deployment {release}-virtualservice-operator -n {release}" in out.stdout
        )
    listed = json.loads(helm.run("list", "-A", "-o", "json").stdout)
    assert {(r["name"], r["namespace"], r["status"]) for r in listed} >= {
        (a, a, "deployed"),
        (b, b, "deployed"),
    }
    objects_a, objects_b = _release_objects(control_plane, a), _release_objects(control_plane, b)
    rendered = {
        r: len(
            [
                d
                for d in _docs(helm.template(values[r], release=r, namespace=r))
                if "helm.sh/hook" not in (d["metadata"].get("annotations") or {})
            ]
        )
        for r in (a, b)
    }
    assert (len(objects_a), len(objects_b)) == (rendered[a], rendered[b])
    assert not set(objects_a) & set(objects_b)
    # The shared developer namespace holds a Role of each release.
    roles = control_plane.kubectl("get", "roles", "-n", ns.developers[1], "-o", "name").stdout
    assert {
        f"role.rbac.authorization.k8s.io/{r}-virtualservice-operator-role" for r in (a, b)
    } <= set(roles.split())

    # No kubelet runs the pre-delete hook's Job here (tests/node/test_monitoring_on_node.py
    # runs it): without --no-hooks helm would wait for it until its timeout.
    helm.run("uninstall", a, "-n", a, "--no-hooks")
    assert _release_objects(control_plane, a) == {}
    assert _release_objects(control_plane, b) == objects_b  # untouched, same resourceVersions
    secrets = control_plane.kubectl("get", "secrets", "-n", a, "-l", "owner=helm", "-o", "name")
    assert secrets.stdout.strip() == ""  # the release record went too
    helm.run("uninstall", b, "-n", b, "--no-hooks")
    assert _release_objects(control_plane, b) == {}


# -- RBAC scope ---------------------------------------------------------------------------------


@pytest.fixture
def apply(control_plane: ControlPlane) -> Iterator[Callable[[str], None]]:
    """kubectl apply, undone after the test: other tests list every binding in the cluster."""
    applied: list[str] = []

    def run(text: str) -> None:
        applied.append(text)
        control_plane.kubectl("apply", "-f", "-", input=text)

    yield run
    for text in reversed(applied):
        control_plane.kubectl("delete", "--ignore-not-found", "--wait=false", "-f", "-", input=text)


def _can_i(cp: ControlPlane, who: str, *args: str) -> str:
    out = cp.kubectl("auth", "can-i", *args, f"--as={who}", check=False)
    answer = out.stdout.strip()
    assert answer in ("yes", "no"), (args, out.stdout, out.stderr)
    return answer


def test_rbac_scope_namespaced_and_cluster_with_kubectl_auth_can_i(
    control_plane: ControlPlane, helm: Helm, namespaces: Namespaces, apply: Callable[[str], None]
) -> None:
    ns = namespaces
    d, dev, other = ns.default, ns.developers[0], f"elsewhere-{ns.suffix}"
    namespaces.create(other)
    config = {"defaultNamespace": d, "developerNamespaces": [dev]}
    sa = {}
    for scope in ("namespaced", "cluster"):
        release = f"{scope[:4]}-{ns.suffix}"
        namespaces.create(release)
        text = helm.template(
            {"config": config, "rbac": {"scope": scope}}, release=release, namespace=release
        )
        apply(text)
        sa[scope] = f"system:serviceaccount:{release}:{release}-virtualservice-operator"

    both = [
        ("list", "services", "-A"),
        ("watch", "services", "-A"),
        ("get", "services", "-n", other),
        ("list", "virtualservices.networking.istio.io", "-A"),
        ("watch", "virtualservices.networking.istio.io", "-A"),
        *[
            (verb, "services", "-n", n)
            for verb in ("create", "update", "patch", "delete")
            for n in (d, dev)
        ],
        *[
            (verb, "virtualservices.networking.istio.io", "-n", d)
            for verb in ("create", "update", "delete")
        ],
        ("create", "events", "-n", dev),
        ("create", "events.events.k8s.io", "-n", d),
    ]
    cluster_only = [
        *[(verb, "services", "-n", other) for verb in ("create", "update", "patch", "delete")],
        ("create", "virtualservices.networking.istio.io", "-n", other),
        ("create", "virtualservices.networking.istio.io", "-n", dev),
        ("create", "events", "-n", other),
    ]
    neither = [
        ("get", "secrets", "-n", d),
        ("create", "tokenreviews.authentication.k8s.io"),  # only with metrics.secure
        ("get", "pods", "-A"),
    ]
    for scope, who in sa.items():
        granted = [a for a in both if _can_i(control_plane, who, *a) != "yes"]
        assert not granted, f"{scope}: refused but needed: {granted}"
        refused = [a for a in neither if _can_i(control_plane, who, *a) != "no"]
        assert not refused, f"{scope}: granted but not needed: {refused}"
        expected = "yes" if scope == "cluster" else "no"
        wrong = [a for a in cluster_only if _can_i(control_plane, who, *a) != expected]
        assert not wrong, f"{scope}: expected {expected} for {wrong}"


def test_metrics_reader_role_grants_get_on_metrics(
    control_plane: ControlPlane, helm: Helm, namespaces: Namespaces, apply: Callable[[str], None]
) -> None:
    release = f"reader-{namespaces.suffix}"
    namespaces.create(release)
    reader = helm.objects({"config": _config(namespaces)}, release=release, namespace=release)[
        ("ClusterRole", "", f"{release}-virtualservice-operator-metrics-reader")
    ]
    apply(yaml.safe_dump(reader))
    scraper = f"system:serviceaccount:{release}:prometheus"
    assert _can_i(control_plane, scraper, "get", "/metrics") == "no"
    binding = control_plane.kubectl(
        "create",
        "clusterrolebinding",
        f"{release}-scrape",
        f"--clusterrole={release}-virtualservice-operator-metrics-reader",
        f"--serviceaccount={release}:prometheus",
        "--dry-run=client",
        "-o",
        "yaml",
    ).stdout
    apply(binding)
    assert _can_i(control_plane, scraper, "get", "/metrics") == "yes"
    assert _can_i(control_plane, scraper, "get", "/debug/pprof/heap") == "no"


# -- a values override drives the real operator ----------------------------------------------------


def test_chart_values_override(
    control_plane: ControlPlane, helm: Helm, operator: OperatorFactory, api: Api
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
    chart = helm.objects(values)
    monitor = chart[("ServiceMonitor", OPERATOR_NS, RELEASE)]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"][0]["interval"] == "15s"
    deployment = chart[("Deployment", OPERATOR_NS, RELEASE)]
    pod = deployment["spec"]["template"]
    container = _container(chart)
    assert deployment["spec"]["replicas"] == 2
    assert container["image"] == "registry.example/vso:v9.9.9"
    assert container["imagePullPolicy"] == "Always"
    assert container["args"] == ["-zap-log-level=debug", "-zap-development=true"]
    assert container["command"][-1] == "-max-concurrent-reconciles=4"
    assert container["resources"] == values["resources"]
    assert pod["metadata"]["annotations"]["example.com/scrape"] == "true"
    assert all(o["metadata"]["labels"]["team"] == "platform" for o in chart.values())
    args = build_parser().parse_args([*container["command"][1:], *container["args"]])
    assert (args.leader_elect, args.zap_log_level, args.max_concurrent_reconciles) == (
        True,
        "debug",
        4,
    )

    # The config the values produced drives the real operator: custom header, placeholder label.
    text = chart[("ConfigMap", OPERATOR_NS, f"{RELEASE}-config")]["data"]["config.yaml"]
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
