"""Monitoring proven by a real Prometheus on the node, scraping the operator's Pods.

The chart is installed (two replicas: one leader, one standby) with its ServiceMonitor,
PrometheusRule and NetworkPolicy, into a namespace that enforces the `restricted` Pod
Security Standard; a Prometheus Pod in a `monitoring: enabled` namespace is configured
from the rendered ServiceMonitor and PrometheusRule as the Prometheus Operator would
(tests/node/prometheus.py).

0. The release namespace (the chart's, createNamespace=true) enforces the restricted Pod
   Security Standard: the operator's Pods are admitted, an unhardened Pod is refused.
1. Plain HTTP: both Pods are scraped through the metrics Service's endpoints, the shipped
   rules load and evaluate without error, and every PromQL expression of the dashboard
   parses and returns a series; the leader-only gauges come from one Pod.
2. `metrics.secure=true` (helm upgrade): HTTPS with the ServiceMonitor's `authorization`
   credentials and its CA from the chart's Secret; Prometheus's own ServiceAccount
   (bound to the metrics-reader ClusterRole) scrapes too; a scrape expecting another
   server name fails on the certificate: verification is not skipped.
3. An invalid config makes VirtualServiceOperatorConfigInvalid pending, then firing, with
   the labels Alertmanager routes on; the fixed config resolves it.
4. Scaled to 0: VirtualServiceOperatorDown and VirtualServiceOperatorNoLeader are pending
   with their namespace and job (their `for` of 5 minutes is covered by the promtool
   unit tests, tests/unit/test_alert_rules.py).
5. `helm uninstall`: the chart's pre-delete hook stops the Pods first, so the leader
   releases its Lease and exits 0 before its ServiceAccount and Roles go.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.conftest import monitoring_crds
from tests.integration.harness import Api, wait_for
from tests.node.prometheus import SA_TOKEN, Prometheus, build_image, scrape_config
from tests.node.test_ha_on_node import Helm, _ensure_image, _ensure_namespace
from tests.unit.test_alert_rules import dashboard_expressions
from virtualservice_operator_dev.controlplane import REPO_ROOT
from virtualservice_operator_dev.node import PAUSE_IMAGE, Node

__all__ = ["monitoring_crds"]

RELEASE = "virtualservice-operator"
NS = "vso-monitored"
JOB = f"{RELEASE}-metrics"
SELECTOR = f'job="{JOB}",namespace="{NS}"'
MONITOR_JOB = f"serviceMonitor/{NS}/{RELEASE}/0"
CHART = str(REPO_ROOT / "charts" / "virtualservice-operator")
# Namespaces of this module's own (another instance's Services are not ours to route).
PROD, DEV = "mon-prod", "mon-dev"
VALUES = {
    "replicaCount": 2,
    "serviceMonitor": {"enabled": True},
    "prometheusRule": {"enabled": True},
    "networkPolicy": {"enabled": True},
    "config": {"defaultNamespace": PROD, "developerNamespaces": [DEV]},
}

Obj = dict[str, Any]


class Stack:
    def __init__(self, node: Node, helm: Helm, prometheus: Prometheus, work: Path) -> None:
        self.node, self.helm, self.prometheus, self.work = node, helm, prometheus, work

    def rendered(self, kind: str) -> Obj:
        manifest = self.helm("get", "manifest", RELEASE, "-n", NS)
        return next(d for d in yaml.safe_load_all(manifest) if d and d["kind"] == kind)

    def restart_prometheus(self, extra_jobs: list[Obj] | None = None) -> None:
        files: dict[str, str] = {}
        jobs = scrape_config(self.node, self.rendered("ServiceMonitor"), files)
        self.prometheus.start(
            [*jobs, *(extra_jobs or [])], self.rendered("PrometheusRule")["spec"], files
        )


@pytest.fixture(scope="module")
def stack(
    node: Node, monitoring_crds: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("monitoring")
    api = Api(node)
    # This tree's image, even when the node's containerd has one under the same tag
    # (its storage outlives a node): the test is of this operator's metrics.
    archive = next((REPO_ROOT / ".cache" / "image").glob("virtualservice-operator-*.oci.tar"), None)
    if archive is None:
        _ensure_image(node)  # says to run `make image`
    else:
        node.import_image(archive)
    if not (node.bin_dir / "helm").exists():
        subprocess.run(
            ["bash", str(REPO_ROOT / "hack" / "build-controlplane.sh")],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    prometheus = Prometheus(node, build_image(node, work), f"{RELEASE}-metrics-reader")
    helm = Helm(node, work)
    for ns in (PROD, DEV):
        _ensure_namespace(node, api, ns)
    # The release namespace as the chart renders it (createNamespace=true): it enforces
    # the restricted Pod Security Standard; the API server must admit the Pods under it.
    namespace = helm(
        "template",
        RELEASE,
        CHART,
        "-n",
        NS,
        "--set",
        "createNamespace=true",
        "--show-only",
        "templates/namespace.yaml",
    )
    node.kubectl("apply", "-f", "-", input=namespace)
    # The manifest install of the node tests before this module (deployments/, scaled to
    # 0) leaves its cluster-wide RBAC, with the names this release renders: helm would
    # refuse to adopt them. `kubectl apply` of deployments/ makes them again.
    node.kubectl(
        "delete",
        "clusterrole/virtualservice-operator-role",
        "clusterrole/virtualservice-operator-metrics-reader",
        "clusterrolebinding/virtualservice-operator-rolebinding",
        "--ignore-not-found",
    )
    for name in ("mon-a", "mon-b"):
        if api.service(PROD, name) is None:
            api.create_service(PROD, name)
    values = work / "values.yaml"
    values.write_text(yaml.safe_dump(VALUES))
    helm("install", RELEASE, CHART, "-n", NS, "-f", str(values), "--wait", "--timeout=3m")
    prometheus.setup()
    s = Stack(node, helm, prometheus, work)
    s.restart_prometheus()
    try:
        yield s
    finally:
        node.kubectl("delete", "namespace", "monitoring", PROD, DEV, "--wait=false", check=False)
        if RELEASE in helm("list", "-n", NS, "-q").split():  # the last test uninstalls it
            helm("uninstall", RELEASE, "-n", NS, "--wait", "--timeout=3m")


def _routed(alert: str, severity: str) -> dict[str, str]:
    """An alert's labels: the ones Alertmanager routes on, nothing else."""
    return {"alertname": alert, "severity": severity, "job": JOB, "namespace": NS}


def _fill(expr: str) -> str:
    return expr.replace("$job", JOB).replace("$namespace", NS)


def test_the_namespace_enforces_restricted_and_admits_the_operator(stack: Stack) -> None:
    namespace = json.loads(stack.node.kubectl("get", "namespace", NS, "-o", "json").stdout)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    pods = json.loads(
        stack.node.kubectl("get", "pods", "-n", NS, "-l", f"app={RELEASE}", "-o", "json").stdout
    )["items"]
    assert len(pods) == 2 and all(p["status"]["phase"] == "Running" for p in pods), pods
    # Enforced by the API server, not merely labelled: a Pod without the hardening is refused.
    out = stack.node.kubectl(
        "run",
        "unhardened",
        "-n",
        NS,
        f"--image={PAUSE_IMAGE}",
        "--restart=Never",
        "--dry-run=server",
        check=False,
    )
    assert out.returncode != 0, out.stdout
    assert 'violates PodSecurity "restricted:latest"' in out.stderr, out.stderr


def test_plain_scrape_rules_and_every_dashboard_expression(stack: Stack) -> None:
    p = stack.prometheus
    targets = p.wait_targets_up(MONITOR_JOB, 2)
    assert {t["labels"]["job"] for t in targets} == {JOB}
    assert all(t["scrapeUrl"].startswith("http://") for t in targets), targets

    groups = p.api("rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) >= 7, groups
    for rule in rules:
        assert rule["health"] == "ok" and not rule.get("lastError"), rule
    # With one leader and one standby running, nothing is wrong: no alert fires.
    assert [a for a in p.api("alerts")["alerts"] if a["state"] == "firing"] == []

    def answers(expr: str) -> list[Obj] | None:
        return p.query(expr) or None

    for expr in dashboard_expressions():
        filled = _fill(expr)
        # rate() needs two samples in its window: wait for them, with a deadline.
        series = wait_for(lambda e=filled: answers(e), 60, f"a series for {expr}", 1.0)
        assert series, expr

    # The inventory gauges come from the leader alone: the dashboard's sums count once.
    assert p.query(f"count(up{{{SELECTOR}}} == 1)")[0]["value"][1] == "2"
    leader = p.query(f"leader_election_master_status{{{SELECTOR}}} == 1")
    inventory = p.query(f"virtualservice_operator_managed_virtualservices{{{SELECTOR}}}")
    assert len(leader) == 1 and len(inventory) == 1, (leader, inventory)
    assert inventory[0]["metric"]["pod"] == leader[0]["metric"]["pod"]
    assert float(inventory[0]["value"][1]) >= 2  # mon-a, mon-b (and others' Services)


def test_secure_scrape_verifies_the_operators_ca_with_authorization_credentials(
    stack: Stack,
) -> None:
    stack.helm(
        "upgrade",
        RELEASE,
        CHART,
        "-n",
        NS,
        "--reuse-values",
        "--set",
        "metrics.secure=true",
        "--wait",
        "--timeout=3m",
    )
    stack.node.kubectl(
        "rollout", "status", f"deployment/{RELEASE}", "-n", NS, "--timeout=180s", timeout=190
    )
    endpoint = stack.rendered("ServiceMonitor")["spec"]["endpoints"][0]
    assert endpoint["scheme"] == "https" and "bearerTokenFile" not in endpoint
    assert "insecureSkipVerify" not in endpoint["tlsConfig"]
    files: dict[str, str] = {}
    (monitor,) = scrape_config(stack.node, stack.rendered("ServiceMonitor"), files)
    # Prometheus's own ServiceAccount token (it is bound to the metrics-reader role).
    own = {
        **monitor,
        "job_name": "own-token",
        "authorization": {"type": "Bearer", "credentials_file": SA_TOKEN},
    }
    # The same, expecting a name the certificate does not carry: must fail to verify.
    wrong = {
        **monitor,
        "job_name": "wrong-name",
        "tls_config": {**monitor["tls_config"], "server_name": "elsewhere.example"},
    }
    stack.prometheus.start([monitor, own, wrong], stack.rendered("PrometheusRule")["spec"], files)
    p = stack.prometheus
    targets = p.wait_targets_up(MONITOR_JOB, 2)
    assert all(t["scrapeUrl"].startswith("https://") for t in targets), targets
    p.wait_targets_up("own-token", 2)

    def refused() -> list[Obj] | None:
        wrongs = p.targets("wrong-name")
        return wrongs if len(wrongs) == 2 and all(t["lastError"] for t in wrongs) else None

    for target in wait_for(refused, 60, "the wrong-name scrapes to fail", 1.0):
        assert target["health"] == "down"
        assert "certificate" in target["lastError"], target["lastError"]


def test_invalid_config_alert_goes_pending_then_firing_then_resolves(stack: Stack) -> None:
    p = stack.prometheus
    p.wait_targets_up(MONITOR_JOB, 2)
    name = "VirtualServiceOperatorConfigInvalid"
    config_map = f"{RELEASE}-config"
    good = json.loads(
        stack.node.kubectl("get", "configmap", config_map, "-n", NS, "-o", "json").stdout
    )["data"]["config.yaml"]
    bad = yaml.safe_dump({**yaml.safe_load(good), "developerNamespaces": "staging"})

    def write(text: str) -> None:
        body = json.dumps({"data": {"config.yaml": text}})
        stack.node.kubectl("patch", "configmap", config_map, "-n", NS, "--type=merge", "-p", body)

    write(bad)

    def state(want: str) -> Obj | None:
        return next((a for a in p.alerts(name) if a["state"] == want), None)

    pending = wait_for(lambda: state("pending"), 90, f"{name} pending", 1.0)
    assert pending["labels"] == _routed(name, "critical")
    firing = wait_for(lambda: state("firing"), 120, f"{name} firing (for: 1m)", 1.0)
    assert firing["labels"] == pending["labels"]
    write(good)
    wait_for(lambda: not p.alerts(name), 90, f"{name} resolved", 1.0)


def test_scaled_to_zero_the_down_and_no_leader_alerts_go_pending(stack: Stack) -> None:
    p = stack.prometheus
    stack.node.kubectl("scale", f"deployment/{RELEASE}", "-n", NS, "--replicas=0")
    for name in ("VirtualServiceOperatorDown", "VirtualServiceOperatorNoLeader"):
        alert = wait_for(lambda n=name: p.alerts(n), 90, f"{name} pending", 1.0)[0]
        assert alert["state"] == "pending", alert
        assert alert["labels"] == _routed(name, "critical")


def test_uninstall_stops_the_leader_first_which_releases_its_lease(stack: Stack) -> None:
    """The chart's pre-delete hook scales the Deployment to 0 and waits, so the leader
    ends on SIGTERM while its Role still lets it release the Lease (exit 0)."""
    node = stack.node
    node.kubectl("scale", f"deployment/{RELEASE}", "-n", NS, "--replicas=1")
    lease_path = f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/{RELEASE}-leader"
    api = Api(node)

    def holder() -> str:
        lease = api.get(lease_path) or {}
        return str((lease.get("spec") or {}).get("holderIdentity") or "")

    leader = wait_for(holder, 90, "a leader", 1.0).rsplit("_", 1)[0]
    follow = subprocess.Popen(
        [
            str(node.bin_dir / "kubectl"),
            f"--kubeconfig={node.admin_kubeconfig}",
            "logs",
            "-f",
            leader,
            "-n",
            NS,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        stack.helm("uninstall", RELEASE, "-n", NS, "--wait", "--timeout=3m")
        log_text, _ = follow.communicate(timeout=60)  # ends with the container
    finally:
        follow.kill()
        follow.wait()
    lines = [json.loads(x) for x in log_text.splitlines() if x.startswith("{")]
    assert lines and lines[-1]["msg"] == "stopped", lines[-5:]
    assert lines[-1]["exit_code"] == 0, lines[-5:]
    assert any(x["msg"] == "released leader lease" for x in lines), lines[-5:]
    assert not any(x["msg"] == "lost leadership: stopping at once" for x in lines)
    assert holder() == ""
    # The hook's own objects went with it (hook-succeeded).
    left = node.kubectl(
        "get", "jobs,serviceaccounts,roles,rolebindings", "-n", NS, "-o", "name"
    ).stdout
    assert f"{RELEASE}-uninstall" not in left, left
