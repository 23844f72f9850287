"""The operations guide's kubectl commands, run as written, against the real
kube-apiserver with the real operator running (its ServiceAccount, its RBAC).

The operator under test reads a per-test ConfigMap (`operator.config_map`); the guide's
commands name `virtualservice-operator-config`. Each ConfigMap command is run both ways:
literally on the real name (the command works and does what it says to the object), and
on the test's name (the running operator does what the guide promises). Shell pipes
(`| grep ...`, `> file`) are done in Python on kubectl's output.

Commands that need a pod, a kubelet or a controller-manager (logs, rollout status, top,
port-forward, exec) are mapped to the tests that cover the same behaviour in
docs/guide-commands.md, which test_guide_commands_doc_covers_the_guide keeps complete.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.conftest import OperatorFactory
from tests.integration.harness import OPERATOR_NS, Api, OperatorProcess, wait_for
from virtualservice_operator.cli import build_parser
from virtualservice_operator.domain.config import parse_config
from virtualservice_operator_dev.controlplane import REPO_ROOT, ControlPlane

pytestmark = pytest.mark.integration

NS = OPERATOR_NS
SA = "system:serviceaccount:virtualservice-operator-system:virtualservice-operator"
CONFIG = "virtualservice-operator-config"
PLACEHOLDER = "virtualservice-operator/placeholder-service=true"
MANAGED = "managed-by=virtualservice-operator"
GUIDE = REPO_ROOT.parent / "shared" / "spec" / "operations-guide.md"
DOC = REPO_ROOT / "docs" / "guide-commands.md"
# Short leader-election timings, so that a Lease left by an earlier run frees up fast.
LEADER_ARGS = ["-leader-elect=true", "-lease-duration=4s", "-renew-deadline=3s", "-retry-period=1s"]

# "2. Configuration Setup": the heredoc as the shell hands it to kubectl (\$ -> $).
GUIDE_CONFIG_HEREDOC = r"""apiVersion: v1
kind: ConfigMap
metadata:
  name: virtualservice-operator-config
  namespace: virtualservice-operator-system
data:
  config.yaml: |
    defaultNamespace: "production"
    developerNamespaces:
      - "staging"
      - "dev-team-a"
      - "dev-team-b"
    enablePlaceholderServices: true
    virtualServiceTemplate: |
      apiVersion: networking.istio.io/v1beta1
      kind: VirtualService
      metadata:
        name: "\${serviceName}-virtual-service"
        namespace: "\${defaultNamespace}"
        labels:
          managed-by: virtualservice-operator
      spec:
        hosts:
        - \${serviceName}
        http:
        - route:
          - destination:
              host: \${serviceName}.\${defaultNamespace}.svc.cluster.local
""".replace("\\$", "$")

# "3. Placeholder Services Issues / Enable placeholder services", verbatim.
GUIDE_PLACEHOLDER_PATCH = (
    '{"data":{"config.yaml":"defaultNamespace: \\"default\\"\\ndeveloperNamespaces:\\n  - \\"dev\\"\\n'
    'enablePlaceholderServices: true\\nvirtualServiceTemplate: |..."}}'
)
GUIDE_DEBUG_PATCH = '{"spec":{"template":{"spec":{"containers":[{"name":"manager","args":["-zap-log-level=debug"]}]}}}}'


# -- helpers ------------------------------------------------------------------------------


# The guide's metric names ("Key Metrics to Monitor"), go_goroutines aside: not a Go
# process (docs/monitoring.md, "What to watch").
GUIDE_METRICS = (
    "controller_runtime_reconcile_total",
    "controller_runtime_reconcile_errors_total",
    "controller_runtime_reconcile_time_seconds",
    "workqueue_adds_total",
    "workqueue_depth",
    "workqueue_longest_running_processor_seconds",
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
)


def grep(text: str, pattern: str, after: int = 0, ignore_case: bool = False) -> list[str]:
    """`grep [-i] [-A after] PATTERN` (basic regex: `\\|` is alternation)."""
    regex = re.compile(pattern.replace("\\|", "|"), re.IGNORECASE if ignore_case else 0)
    lines = text.splitlines()
    keep: set[int] = set()
    for i, line in enumerate(lines):
        if regex.search(line):
            keep.update(range(i, min(i + after + 1, len(lines))))
    return [lines[i] for i in sorted(keep)]


def table(text: str) -> list[dict[str, str]]:
    """kubectl's default table output as rows keyed by column header."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return []
    headers = lines[0].split()
    return [dict(zip(headers, line.split(), strict=False)) for line in lines[1:]]


def settled(proc: OperatorProcess, since: float) -> bool:
    """More reconciles than `since`, and nothing queued or running."""
    return (
        proc.metric("controller_runtime_reconcile_total") > since
        and proc.metric("workqueue_depth") == 0
        and proc.metric("controller_runtime_active_workers") == 0
    )


def routes(vs: dict[str, Any] | None) -> list[dict[str, Any]]:
    return list((vs or {}).get("spec", {}).get("http") or [])


def ours(rows: list[dict[str, str]], namespaces: list[str]) -> set[tuple[str, str]]:
    return {(r["NAMESPACE"], r["NAME"]) for r in rows if r["NAMESPACE"] in namespaces}


def default_template() -> str:
    cfg: dict[str, Any] = yaml.safe_load(
        yaml.safe_load(GUIDE_CONFIG_HEREDOC)["data"]["config.yaml"]
    )
    return str(cfg["virtualServiceTemplate"])


@pytest.fixture
def k(control_plane: ControlPlane) -> Any:
    def run(*args: str, ok: bool = True, **kw: Any) -> Any:
        out = control_plane.kubectl(*args, check=False, **kw)
        if ok:
            assert out.returncode == 0, f"kubectl {' '.join(args)}: {out.stderr}"
        return out

    return run


@pytest.fixture
def guide_setup(control_plane: ControlPlane, operator_kubeconfig: Path) -> Iterator[None]:
    """Guide steps 2-3 on the session's control plane (the namespace exists already), and
    the session's objects back as deployments/ has them afterwards."""
    control_plane.kubectl("apply", "-f", "-", input=GUIDE_CONFIG_HEREDOC)
    control_plane.kubectl("apply", "-f", str(REPO_ROOT / "deployments" / "deployment.yaml"))
    yield
    control_plane.kubectl("apply", "-f", str(REPO_ROOT / "deployments" / "deployment.yaml"))
    control_plane.kubectl("apply", "-f", "-", input=GUIDE_CONFIG_HEREDOC)


# -- Deployment: a fresh cluster, the guide's names, end to end -----------------------------------


def test_install_verify_and_recover_on_a_fresh_cluster(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    """Guide 1-4 and "Recovery from Corruption", literally, on a control plane of its own
    (where `create namespace` is the first command), with the operator reading the real
    ConfigMap virtualservice-operator-config and holding the real Lease."""
    cp = ControlPlane(bin_dir=control_plane.bin_dir, work_dir=tmp_path / "cp")
    cp.start()
    procs: list[OperatorProcess] = []
    try:

        def k(*args: str, **kw: Any) -> Any:
            out = cp.kubectl(*args, check=False, **kw)
            assert out.returncode == 0, f"kubectl {' '.join(args)}: {out.stderr}"
            return out

        api = Api(cp)
        # 1. Namespace Preparation
        k("create", "namespace", "virtualservice-operator-system")
        k("label", "namespace", "virtualservice-operator-system", "monitoring=enabled")
        # 2. Configuration Setup
        assert (
            "configmap/virtualservice-operator-config created"
            in k("apply", "-f", "-", input=GUIDE_CONFIG_HEREDOC).stdout
        )
        # 3. Deploy Operator (over the namespace created by hand)
        k("apply", "-f", str(REPO_ROOT / "deployments" / "deployment.yaml"))
        k("get", "pods", "-n", NS)  # no kubelet: no pods; the operator runs as a process below
        # 4. Verify Installation
        assert (
            "virtualservice-operator"
            in k("get", "deployment", "virtualservice-operator", "-n", NS).stdout
        )
        assert k("auth", "can-i", "create", "virtualservices", f"--as={SA}").stdout.strip() == "yes"
        namespace = yaml.safe_load(k("get", "namespace", NS, "-o", "yaml").stdout)
        assert namespace["metadata"]["labels"]["monitoring"] == "enabled", (
            "apply dropped the hand-set label"
        )

        for name in ("production", "staging", "dev-team-a", "dev-team-b"):
            k("create", "namespace", name)
        api.create_service("production", "web")
        api.create_service("staging", "web")
        kubeconfig = cp.service_account_kubeconfig(
            NS, "virtualservice-operator", tmp_path / "sa.kubeconfig"
        )

        def start() -> OperatorProcess:
            procs.append(
                OperatorProcess(
                    cp, kubeconfig, CONFIG, tmp_path / f"operator-{len(procs)}.log", LEADER_ARGS
                ).start()
            )
            return procs[-1]

        def converged() -> bool:
            vs = api.vs("production", "web-virtual-service")
            return len(routes(vs)) == 2 and all(
                api.service(ns, "web") for ns in ("dev-team-a", "dev-team-b")
            )

        proc = start()
        wait_for(converged, 30, "VirtualService with the staging route and two placeholders")
        # `kubectl logs ... | grep -i config`: the operator's stdout names its config.
        assert grep(proc.logs(), "config", ignore_case=True)
        lease = k("get", "lease", "-n", NS).stdout
        assert "virtualservice-operator-leader" in lease, lease
        k("get", "configmap", CONFIG, "-n", NS)

        # Recovery from Corruption
        k("delete", "deployment", "virtualservice-operator", "-n", NS)
        assert proc.stop() == 0  # the pod goes with its Deployment
        deleted = k("delete", "virtualservices", "-A", "-l", MANAGED).stdout
        assert "web-virtual-service" in deleted, deleted
        deleted = k("delete", "services", "-A", "-l", PLACEHOLDER).stdout
        assert deleted.count("deleted") == 2, deleted
        assert api.vs("production", "web-virtual-service") is None
        k("apply", "-f", str(REPO_ROOT / "deployments" / "deployment.yaml"))
        k("get", "pods", "-n", NS)
        start()
        wait_for(converged, 30, "recovered: VirtualService and placeholders back")
    finally:
        for p in procs:
            p.stop()
        cp.stop()


# -- Maintenance ------------------------------------------------------------------------------


def test_config_edit_validate_and_hot_reload(
    k: Any,
    operator: OperatorFactory,
    api: Api,
    guide_setup: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ns = operator.namespaces
    api.create_service(ns.default, "shop")
    proc = operator.start(operator.config(placeholders=False))
    # `kubectl edit` with an editor that changes one value, as a person would.
    editor = tmp_path / "editor.py"
    editor.write_text(
        "import os, sys\n"
        "p = sys.argv[-1]; t = open(p).read()\n"
        "assert os.environ['VSO_FROM'] in t, t\n"
        "open(p, 'w').write(t.replace(os.environ['VSO_FROM'], os.environ['VSO_TO']))\n"
    )
    monkeypatch.setenv("KUBE_EDITOR", f"{sys.executable} {editor}")
    monkeypatch.setenv("VSO_FROM", "enablePlaceholderServices: true")
    monkeypatch.setenv("VSO_TO", "enablePlaceholderServices: false")
    assert "edited" in k("edit", "configmap", CONFIG, "-n", NS).stdout
    real = yaml.safe_load(k("get", "configmap", CONFIG, "-n", NS, "-o", "yaml").stdout)
    assert "enablePlaceholderServices: false" in real["data"]["config.yaml"]

    monkeypatch.setenv("VSO_FROM", "enablePlaceholderServices: false")
    monkeypatch.setenv("VSO_TO", "enablePlaceholderServices: true")
    k("edit", "configmap", operator.config_map, "-n", NS)
    # `kubectl logs ... | grep -i "config reloaded"`
    wait_for(
        lambda: grep(proc.logs(), "config reloaded", ignore_case=True),
        what="config reloaded in the log",
    )
    wait_for(
        lambda: all(api.service(d, "shop") for d in ns.developers),
        what="placeholders after the edit",
    )

    # Configuration Validation: both commands are client-side and touch nothing.
    new_config = tmp_path / "new-config.yaml"
    new_config.write_text(
        (REPO_ROOT / "deployments" / "examples" / "staging-config.yaml").read_text()
    )
    out = k("apply", "--dry-run=client", "-f", str(new_config)).stdout
    assert "configmap/virtualservice-operator-config" in out and "(dry run)" in out, out
    raw = "defaultNamespace: staging\ndeveloperNamespaces: [qa]\nenablePlaceholderServices: true\n"
    new_config.write_text(raw)
    out = k(
        "create",
        "configmap",
        "test-config",
        f"--from-file=config.yaml={new_config}",
        "-n",
        NS,
        "--dry-run=client",
        "-o",
        "yaml",
    ).stdout
    made = yaml.safe_load(out)
    assert (made["kind"], made["metadata"]["name"], made["data"]["config.yaml"]) == (
        "ConfigMap",
        "test-config",
        raw,
    )
    parse_config(made["data"]["config.yaml"])  # what the operator would accept
    assert "NotFound" in k("get", "configmap", "test-config", "-n", NS, ok=False).stderr
    # Multi-Environment Deployment: the guide's two ConfigMaps are valid configs.
    for example in ("staging-config.yaml", "production-config.yaml"):
        cm = yaml.safe_load((REPO_ROOT / "deployments" / "examples" / example).read_text())
        parse_config(cm["data"]["config.yaml"])


def test_rolling_update_resources_and_debug_logging_commands(
    k: Any, operator: OperatorFactory, guide_setup: None
) -> None:
    operator.start()
    deploy = ("deployment", "virtualservice-operator", "-n", NS)
    image = "harbor.intent.ai/library/virtualservice-operator:v1.3.1"
    out = k(
        "set", "image", "deployment/virtualservice-operator", f"manager={image}", "-n", NS
    ).stdout
    assert "image updated" in out, out
    jsonpath = "{.spec.template.spec.containers[0].image}"
    assert k("get", *deploy, "-o", f"jsonpath={jsonpath}").stdout == image
    # Security Scanning: `kubectl get deployment ... -o yaml | grep image:`
    assert grep(k("get", *deploy, "-o", "yaml").stdout, "image:") == [f"        image: {image}"]
    k("rollout", "history", "deployment/virtualservice-operator", "-n", NS)
    out = k("rollout", "restart", "deployment/virtualservice-operator", "-n", NS).stdout
    assert "restarted" in out, out

    # Check resource limits: `kubectl describe deployment ... | grep -A 10 "Limits\|Requests"`
    described = grep(k("describe", *deploy).stdout, "Limits\\|Requests", after=10)
    text = "\n".join(described)
    assert re.search(
        r"Limits:\s+cpu:\s+500m\s+memory:\s+256Mi\s+Requests:\s+cpu:\s+50m\s+memory:\s+128Mi", text
    ), text
    # ... which is the guide's "Resource Optimization" block.
    container = yaml.safe_load(k("get", *deploy, "-o", "yaml").stdout)["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert container["resources"] == {
        "limits": {"cpu": "500m", "memory": "256Mi"},
        "requests": {"cpu": "50m", "memory": "128Mi"},
    }
    assert container["args"] == [
        "-zap-log-level=info",
        "-zap-development=false",
    ]  # guide "Log Levels"

    # Enable debug logging: the strategic-merge patch replaces args; command keeps the rest.
    assert "patched" in k("patch", *deploy, "--patch", GUIDE_DEBUG_PATCH).stdout
    container = yaml.safe_load(k("get", *deploy, "-o", "yaml").stdout)["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert container["args"] == ["-zap-log-level=debug"]
    args = build_parser().parse_args([*container["command"][1:], *container["args"]])
    assert (
        args.zap_log_level,
        args.leader_elect,
        args.metrics_bind_address,
        args.health_probe_bind_address,
    ) == ("debug", True, ":8080", ":8081")

    # Ensure only one operator instance / Complete Operator Shutdown
    for replicas in ("1", "0", "1"):
        assert (
            "scaled"
            in k(
                "scale", "deployment", "virtualservice-operator", f"--replicas={replicas}", "-n", NS
            ).stdout
        )
        assert k("get", *deploy, "-o", "jsonpath={.spec.replicas}").stdout == replicas
    k("get", "pods", "-n", NS)


def test_backup_and_restore_round_trip(
    k: Any, operator: OperatorFactory, api: Api, guide_setup: None, tmp_path: Path
) -> None:
    ns = operator.namespaces
    api.create_service(ns.default, "web")
    proc = operator.start()
    wait_for(lambda: api.vs(ns.default, "web-virtual-service"), what="VirtualService")

    def backup(*args: str) -> str:
        return str(k("get", *args, "-o", "yaml").stdout)

    config_backup = tmp_path / "config-backup.yaml"
    config_backup.write_text(backup("configmap", CONFIG, "-n", NS))
    test_config_backup = tmp_path / "test-config-backup.yaml"
    test_config_backup.write_text(backup("configmap", operator.config_map, "-n", NS))
    deployment_backup = tmp_path / "deployment-backup.yaml"
    deployment_backup.write_text(backup("deployment", "virtualservice-operator", "-n", NS))
    role_yaml = backup("clusterrole", "virtualservice-operator-role")
    binding_yaml = backup("clusterrolebinding", "virtualservice-operator-rolebinding")
    rbac_backup = tmp_path / "rbac-backup.yaml"
    rbac_backup.write_text(role_yaml)  # >
    with rbac_backup.open("a") as f:  # >>
        f.write(binding_yaml)
    before = {
        p: yaml.safe_load(p.read_text())
        for p in (config_backup, test_config_backup, deployment_backup)
    }

    k("delete", "configmap", CONFIG, operator.config_map, "-n", NS)
    k("delete", "deployment", "virtualservice-operator", "-n", NS)
    k("delete", "clusterrole", "virtualservice-operator-role")
    k("delete", "clusterrolebinding", "virtualservice-operator-rolebinding")
    wait_for(
        lambda: "config map deleted" in proc.logs(),
        what="the operator to notice its ConfigMap gone",
    )
    try:
        # Disaster Recovery
        k("apply", "-f", str(config_backup))
        k("apply", "-f", str(test_config_backup))
        k("apply", "-f", str(deployment_backup))
        # GUIDE DEFECT: `get -o yaml >> rbac-backup.yaml` appends the second object with no
        # `---` between them: one YAML document with every key twice, which kubectl reads
        # as a ClusterRoleBinding with `rules`, and the API server refuses. Neither object
        # comes back. Documented in docs/guide-commands.md with the fix, tested here:
        literal = k("apply", "-f", str(rbac_backup), ok=False)
        assert literal.returncode != 0 and 'unknown field "rules"' in literal.stderr, literal
        assert (
            "NotFound" in k("get", "clusterrole", "virtualservice-operator-role", ok=False).stderr
        )
        # The fix: a document separator between the two objects (`echo --- >> rbac-backup.yaml`).
        fixed = tmp_path / "rbac-backup-fixed.yaml"
        fixed.write_text(role_yaml + "---\n" + binding_yaml)
        k("apply", "-f", str(fixed))
    except BaseException:  # the session's RBAC back whatever happened
        k("apply", "-f", str(REPO_ROOT / "deployments" / "deployment.yaml"))
        raise

    # Verify restoration: the same objects, and the operator still at work.
    for old in before.values():
        kind, name = old["kind"], old["metadata"]["name"]
        now = yaml.safe_load(backup(kind.lower(), name, "-n", NS))
        field = "data" if kind == "ConfigMap" else "spec"
        assert now[field] == old[field], (kind, name)
        assert now["metadata"]["uid"] != old["metadata"]["uid"]  # really re-created
    role = yaml.safe_load(backup("clusterrole", "virtualservice-operator-role"))
    binding = yaml.safe_load(backup("clusterrolebinding", "virtualservice-operator-rolebinding"))
    assert role["rules"] and binding["subjects"][0]["name"] == "virtualservice-operator"
    k("get", "pods", "-n", NS)
    api.create_service(ns.developers[0], "web")
    wait_for(
        lambda: len(routes(api.vs(ns.default, "web-virtual-service"))) == 2,
        30,
        "a route added after the restore",
    )
    assert proc.proc is not None and proc.proc.poll() is None


# -- Troubleshooting ----------------------------------------------------------------------------


def test_placeholder_commands(
    k: Any, operator: OperatorFactory, api: Api, guide_setup: None
) -> None:
    ns = operator.namespaces
    api.create_service(ns.default, "shop")
    api.create_service(ns.developers[0], "shop")
    proc = operator.start(operator.config(placeholders=False))
    wait_for(
        lambda: len(routes(api.vs(ns.default, "shop-virtual-service"))) == 2,
        what="one developer route",
    )

    def cm_yaml(name: str) -> str:
        return str(k("get", "configmap", name, "-n", NS, "-o", "yaml").stdout)

    # Check if feature is enabled: `... -o yaml | grep enablePlaceholderServices`
    # (kubectl apply's last-applied annotation matches too: the first line is the data.)
    assert (
        grep(cm_yaml(CONFIG), "enablePlaceholderServices")[0].strip()
        == "enablePlaceholderServices: true"
    )
    assert (
        grep(cm_yaml(operator.config_map), "enablePlaceholderServices")[0].strip()
        == "enablePlaceholderServices: false"
    )

    # Enable placeholder services: the guide's patch, verbatim, on the real name...
    k("patch", "configmap", CONFIG, "-n", NS, "--patch", GUIDE_PLACEHOLDER_PATCH)
    expected = json.loads(GUIDE_PLACEHOLDER_PATCH)["data"]["config.yaml"]
    assert yaml.safe_load(cm_yaml(CONFIG))["data"]["config.yaml"] == expected
    # ...and on the test's: `|...` is the guide's ellipsis, not YAML, so the running
    # operator refuses it, says so (log, Warning Event) and changes nothing.
    k("patch", "configmap", operator.config_map, "-n", NS, "--patch", GUIDE_PLACEHOLDER_PATCH)
    wait_for(lambda: grep(proc.logs(), "config rejected"), what="the rejection in the log")
    assert grep(proc.logs(), "error", ignore_case=True)  # `kubectl logs ... | grep -i error`
    events = k("get", "events", "-n", NS, "--sort-by=.lastTimestamp").stdout
    assert any(
        "InvalidConfig" in line and operator.config_map in line for line in events.splitlines()
    ), events
    listed = k("get", "services", "-A", "-l", PLACEHOLDER).stdout
    assert not ours(table(listed), ns.developers), listed

    # The same patch with the guide's elisions filled in for this test: placeholders appear.
    config = (
        f'defaultNamespace: "{ns.default}"\ndeveloperNamespaces:\n'
        + "".join(f'  - "{d}"\n' for d in ns.developers)
        + "enablePlaceholderServices: true\nvirtualServiceTemplate: |\n"
        + "".join(f"  {line}\n" for line in default_template().splitlines())
    )
    k(
        "patch",
        "configmap",
        operator.config_map,
        "-n",
        NS,
        "--patch",
        json.dumps({"data": {"config.yaml": config}}),
    )
    wait_for(lambda: grep(proc.logs(), "config reloaded"), what="config reloaded")
    wanted = {(ns.developers[1], "shop"), (ns.developers[2], "shop")}

    # List placeholder services
    def listed_placeholders() -> set[tuple[str, str]]:
        return ours(table(k("get", "services", "-A", "-l", PLACEHOLDER).stdout), ns.developers)

    wait_for(lambda: listed_placeholders() == wanted, what="two placeholders listed")
    rows = [
        r
        for r in table(k("get", "services", "-A", "-l", PLACEHOLDER).stdout)
        if r["NAMESPACE"] in ns.developers
    ]
    assert {r["TYPE"] for r in rows} == {"ExternalName"}
    # Check placeholder service annotations: `... -o yaml | grep annotations -A 5`
    shown = grep(
        k("get", "service", "shop", "-n", ns.developers[1], "-o", "yaml").stdout,
        "annotations",
        after=5,
    )
    assert any(f"{ns.default}/shop" in line for line in shown), shown

    # Clean up orphaned placeholder services: with the operator running, the ones still
    # wanted come straight back (new objects).
    uids = {d: api.service(d, "shop")["metadata"]["uid"] for d, _ in wanted}
    out = k("delete", "services", "-l", PLACEHOLDER, "-A").stdout
    assert all(f'service "shop" deleted from {d} namespace' in out for d, _ in wanted), out
    wait_for(
        lambda: all(
            (s := api.service(d, "shop")) and s["metadata"]["uid"] != uids[d] for d, _ in wanted
        ),
        what="placeholders recreated",
    )

    # Force placeholder service recreation: `rollout restart` (accepted; no pods to restart
    # here) == a new operator process, which converges from scratch.
    assert (
        "restarted"
        in k("rollout", "restart", "deployment/virtualservice-operator", "-n", NS).stdout
    )
    assert proc.stop() == 0
    k("delete", "services", "-l", PLACEHOLDER, "-A")
    assert listed_placeholders() == set()
    operator.start(write_config=False)
    wait_for(lambda: listed_placeholders() == wanted, what="placeholders back after the restart")


def test_virtualservice_troubleshooting_commands_on_my_service(
    k: Any, operator: OperatorFactory, api: Api, guide_setup: None
) -> None:
    """Sections 2 and 4 with the guide's own names: my-service in the default namespace
    (no -n, as written), placeholders in dev-namespace."""
    k("create", "namespace", "dev-namespace", ok=False)  # may exist from an earlier run
    api.create_service("default", "my-service", labels={"app": "my-service"})
    proc = operator.start(
        operator.config(
            placeholders=True, defaultNamespace="default", developerNamespaces=["dev-namespace"]
        )
    )
    try:
        vs = wait_for(
            lambda: api.vs("default", "my-service-virtual-service"),
            what="my-service-virtual-service",
        )
        wait_for(
            lambda: api.service("dev-namespace", "my-service"), what="placeholder in dev-namespace"
        )

        # Check if services are in monitored namespaces: `kubectl get services -A | grep my-service`
        found = grep(k("get", "services", "-A").stdout, "my-service")
        assert {line.split()[0] for line in found} == {"default", "dev-namespace"}, found
        # `kubectl logs ... | grep my-service`: the operator's log names the Service.
        assert grep(proc.logs(), "my-service")
        # Verify service is not a system service: `... -o yaml | grep labels`
        assert grep(k("get", "service", "my-service", "-o", "yaml").stdout, "labels") == [
            "  labels:"
        ]
        # Check service labels for exclusion
        assert (
            "labeled"
            in k("label", "service", "my-service", "app.kubernetes.io/name=my-service").stdout
        )
        # Verify namespace configuration
        assert "config.yaml" in k("get", "configmap", CONFIG, "-n", NS, "-o", "yaml").stdout
        # Check VirtualService resource version: `... -o yaml | grep resourceVersion`
        shown = grep(
            k("get", "virtualservice", "my-service-virtual-service", "-o", "yaml").stdout,
            "resourceVersion",
        )
        assert shown and shown[0].strip().startswith("resourceVersion:"), shown
        # Check placeholder service annotations (section 3, the guide's names)
        shown = grep(
            k("get", "service", "my-service", "-n", "dev-namespace", "-o", "yaml").stdout,
            "annotations",
            after=5,
        )
        assert any("default/my-service" in line for line in shown), shown
        # Manually resolve conflicts: delete it, the operator recreates it.
        assert "deleted" in k("delete", "virtualservice", "my-service-virtual-service").stdout
        wait_for(
            lambda: (
                (v := api.vs("default", "my-service-virtual-service"))
                and v["metadata"]["uid"] != vs["metadata"]["uid"]
            ),
            what="my-service-virtual-service recreated",
        )
        # Check for multiple operator instances / Check leader election
        k("get", "pods", "-n", NS)
        k("get", "lease", "-n", NS)
    finally:
        api.delete_service("default", "my-service")
        wait_for(
            lambda: (
                api.vs("default", "my-service-virtual-service") is None
                and api.service("dev-namespace", "my-service") is None
            ),
            what="my-service's VirtualService and placeholder removed",
        )


def test_emergency_cleanup_and_shutdown(
    k: Any, operator: OperatorFactory, api: Api, guide_setup: None
) -> None:
    ns = operator.namespaces
    api.create_service(ns.default, "web")
    api.create_service(ns.developers[0], "web")
    proc = operator.start()
    wait_for(
        lambda: len(routes(api.vs(ns.default, "web-virtual-service"))) == 2,
        what="one developer route",
    )
    mine = (ns.default, "web-virtual-service")

    def listed() -> set[tuple[str, str]]:
        return ours(table(k("get", "virtualservices", "-A", "-l", MANAGED).stdout), [ns.default])

    # List all managed VirtualServices
    assert listed() == {mine}
    # Remove operator management (allows manual management)
    out = k("label", "virtualservices", "-A", "managed-by-", "-l", MANAGED).stdout
    assert "web-virtual-service unlabeled" in out, out
    assert listed() == set()
    # Hands off: a new developer Service does not change the VirtualService; a Warning says why.
    since = proc.metric("controller_runtime_reconcile_total")
    api.create_service(ns.developers[1], "web")
    wait_for(lambda: settled(proc, since), what="the operator to look at web")
    wait_for(
        lambda: "UnmanagedVirtualService" in k("get", "events", "-n", ns.default).stdout,
        what="a Warning Event about the unmanaged VirtualService",
    )
    vs = api.vs(ns.default, "web-virtual-service")
    assert len(routes(vs)) == 2 and "managed-by" not in (vs["metadata"].get("labels") or {})
    # Delete all managed VirtualServices: the unlabelled one is not among them.
    k("delete", "virtualservices", "-A", "-l", MANAGED)
    assert api.vs(ns.default, "web-virtual-service") is not None
    # Label back: managed again (README "Rules worth knowing").
    k("label", "virtualservice", "web-virtual-service", "-n", ns.default, MANAGED)
    wait_for(
        lambda: len(routes(api.vs(ns.default, "web-virtual-service"))) == 3,
        what="managed again: two routes",
    )

    # Complete Operator Shutdown: scale to 0 (accepted) == the operator process ends.
    assert (
        "scaled"
        in k("scale", "deployment", "virtualservice-operator", "--replicas=0", "-n", NS).stdout
    )
    assert proc.stop() == 0
    k("get", "pods", "-n", NS)  # Verify shutdown
    assert listed() == {mine}
    out = k("delete", "virtualservices", "-A", "-l", MANAGED).stdout
    assert "web-virtual-service" in out
    assert (
        listed() == set() and api.vs(ns.default, "web-virtual-service") is None
    )  # stays gone: nobody runs
    k("scale", "deployment", "virtualservice-operator", "--replicas=1", "-n", NS)


# -- Security and operator status -----------------------------------------------------------


def test_rbac_review_leader_lease_and_served_ports(
    k: Any, operator: OperatorFactory, api: Api, guide_setup: None
) -> None:
    ns = operator.namespaces
    api.create_service(ns.default, "web")
    proc = operator.start(extra_args=LEADER_ARGS)
    # Check leader election: the Lease of the guide's namespace, held by the running operator.
    holder = wait_for(
        lambda: (
            k(
                "get",
                "lease",
                "virtualservice-operator-leader",
                "-n",
                NS,
                "-o",
                "jsonpath={.spec.holderIdentity}",
                ok=False,
            ).stdout
        ),
        30,
        "the operator to hold the Lease",
    )
    rows = table(k("get", "lease", "-n", NS).stdout)
    assert {"NAME": "virtualservice-operator-leader", "HOLDER": holder} in [
        {"NAME": r["NAME"], "HOLDER": r.get("HOLDER")} for r in rows
    ]
    wait_for(lambda: api.vs(ns.default, "web-virtual-service"), what="the leader at work")

    # Verify RBAC permissions
    assert k("auth", "can-i", "create", "virtualservices", f"--as={SA}").stdout.strip() == "yes"
    assert k("auth", "can-i", "get", "secrets", f"--as={SA}", ok=False).stdout.strip() == "no"
    # Review current permissions
    described = k("describe", "clusterrole", "virtualservice-operator-role").stdout
    rules = {
        r.split()[0]: r for r in grep(described, r"^\s+\S+\s+\[") if not r.strip().startswith("-")
    }
    assert set(rules) == {
        "services",
        "virtualservices.networking.istio.io",
        "events",
        "events.events.k8s.io",
        "namespaces",  # read only: which configured namespaces exist
        "tokenreviews.authentication.k8s.io",  # -metrics-secure
        "subjectaccessreviews.authorization.k8s.io",
    }, described
    assert "*" not in described and "secrets" not in described
    assert "[get list watch create update patch delete]" in rules["services"]
    # Audit service account usage: `... -o wide | grep virtualservice-operator`
    lines = grep(
        k("get", "rolebindings,clusterrolebindings", "-A", "-o", "wide").stdout,
        "virtualservice-operator",
    )
    assert len(lines) == 2, lines
    assert any("ClusterRole/virtualservice-operator-role" in line for line in lines)
    assert any("Role/virtualservice-operator-leader-election" in line for line in lines)
    assert all(line.rstrip().endswith(f"{NS}/virtualservice-operator") for line in lines), lines

    # port-forward + curl: the ports are served directly by the process.
    assert proc.get("health", "/healthz")[0] == 200
    assert proc.get("health", "/readyz")[0] == 200
    body = proc.metrics()
    for name in GUIDE_METRICS:
        assert grep(body, name), name  # `curl .../metrics | grep NAME`

    # Shutdown releases the Lease at once (the rolling update's hand-over).
    assert proc.stop() == 0
    assert (
        k(
            "get",
            "lease",
            "virtualservice-operator-leader",
            "-n",
            NS,
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ).stdout
        == ""
    )


# -- the doc ---------------------------------------------------------------------------------


def guide_commands(text: str) -> list[str]:
    """Every command line of the guide's ```bash blocks (comments and blanks dropped)."""
    commands: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        lines = block.splitlines()
        i = 0
        while i < len(lines):
            line = lines[i].strip()
            i += 1
            if not line or line.startswith("#"):
                continue
            if "<<EOF" in line:  # the heredoc's body is not a command
                while i < len(lines) and lines[i].strip() != "EOF":
                    i += 1
                i += 1
            while line.endswith("\\") and i < len(lines):
                line = line[:-1].strip() + " " + lines[i].strip()
                i += 1
            commands.append(line)
    return commands


def test_guide_commands_doc_covers_the_guide() -> None:
    doc = DOC.read_text()
    rows = [line for line in doc.splitlines() if line.startswith("| `")]
    # The first cell's code span; `\|` is a pipe escaped for the Markdown table.
    documented = {row.split("`")[1].replace("\\|", "|") for row in rows}
    # Every test the doc names exists.
    tests_text = "\n".join(p.read_text() for p in (REPO_ROOT / "tests").rglob("test_*.py"))
    named = set(re.findall(r"::(test_\w+)", doc))
    assert len(named) >= 20, named
    missing_tests = sorted(n for n in named if not re.search(rf"def {n}\(", tests_text))
    assert not missing_tests, missing_tests
    if not GUIDE.exists():
        pytest.skip(
            f"{GUIDE} not found (shared/ is beside the repository in CI and on the machines)"
        )
    missing = [c for c in guide_commands(GUIDE.read_text()) if c not in documented]
    assert not missing, f"guide commands missing from {DOC.name}: {missing}"
