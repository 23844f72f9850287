"""What only a real cluster shows: Pods running, a garbage collector, namespaces that
really go away, and a node that leaves nothing behind when it stops.

The tests share one node and run in this file's order; the last one stops it.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FIGURES
from tests.integration.conftest import OperatorFactory
from tests.integration.harness import Api, sample_sum, wait_for
from tests.node.conftest import cannot_run, node_command
from virtualservice_operator.runtime.metrics import parse_exposition
from virtualservice_operator_dev.install import (
    load_image,
    operator_image,
    run_readme_install,
    user_env,
)
from virtualservice_operator_dev.node import (
    HARDENED,
    NODE_IP,
    NODE_NAME,
    PAUSE_IMAGE,
    POD_CIDR,
    Node,
    leftovers,
)
from virtualservice_operator_dev.ociimage import ImageFile, write_image

__all__ = ["run_readme_install", "user_env"]  # the guide's tests install the same way

KUBECTL_IMAGE = "registry.local/kubectl:test"


def _pod(name: str, image: str, args: list[str] | None = None, **spec: Any) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "main",
        "image": image,
        "imagePullPolicy": "Never",
        "securityContext": HARDENED,
    }
    if args:
        container["args"] = args
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [container], **spec},
    }


def _phase(api: Api, name: str) -> str:
    pod = api.get(f"/api/v1/namespaces/default/pods/{name}")
    return str(pod["status"].get("phase", "")) if pod else ""


def test_node_is_ready_with_its_address(node: Node, api: Api) -> None:
    n = api.get(f"/api/v1/nodes/{NODE_NAME}")
    addresses = {a["type"]: a["address"] for a in n["status"]["addresses"]}
    assert addresses["InternalIP"] == NODE_IP
    assert n["status"]["nodeInfo"]["kubeletVersion"] == "v1.35.4"
    assert n["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")


def test_hardened_pod_runs_and_gets_a_pod_address(node: Node, api: Api) -> None:
    api.create("/api/v1/namespaces/default/pods", _pod("pause", PAUSE_IMAGE))
    wait_for(lambda: _phase(api, "pause") == "Running", 90, "pause Pod Running")
    pod = api.get("/api/v1/namespaces/default/pods/pause")
    assert ipaddress.ip_address(pod["status"]["podIP"]) in ipaddress.ip_network(POD_CIDR)
    assert api.delete("/api/v1/namespaces/default/pods/pause") == 200


def test_pod_reaches_api_server_through_kubernetes_service(node: Node, tmp_path: Path) -> None:
    """kubectl in a Pod, with in-cluster config only (the `kubernetes` Service's ClusterIP
    and the projected ServiceAccount token); `kubectl logs` reads what it printed."""
    archive = tmp_path / "kubectl.tar"
    write_image(
        archive, KUBECTL_IMAGE, [ImageFile(node.bin_dir / "kubectl", "kubectl")], ["/kubectl"]
    )
    node.import_image(archive)
    pod = _pod("in-cluster", KUBECTL_IMAGE, ["version", "-o", "json"], restartPolicy="Never")
    node.kubectl("create", "-f", "-", input=json.dumps(pod))
    api = Api(node)
    wait_for(
        lambda: _phase(api, "in-cluster") in ("Succeeded", "Failed"), 120, "in-cluster Pod done"
    )
    logs = node.kubectl("logs", "-n", "default", "in-cluster").stdout
    assert _phase(api, "in-cluster") == "Succeeded", logs
    assert json.loads(logs)["serverVersion"]["gitVersion"] == "v1.35.4"
    node.kubectl("delete", "pod", "-n", "default", "in-cluster", "--wait=false")


def _owned_by(vs: dict[str, Any], svc: dict[str, Any]) -> bool:
    refs = vs["metadata"].get("ownerReferences") or []
    return any(r["uid"] == svc["metadata"]["uid"] and r["kind"] == "Service" for r in refs)


def _probes_succeeded(node: Node, pod: str) -> bool:
    """The kubelet's own count of successful liveness and readiness probes of `pod`."""
    scrape = parse_exposition(node.api_get(f"/api/v1/nodes/{NODE_NAME}/proxy/metrics/probes"))
    return all(
        sample_sum(scrape, "prober_probe_total", pod=pod, probe_type=kind, result="successful") > 0
        for kind in ("Liveness", "Readiness")
    )


def _top(node: Node, namespace: str, pod: str) -> tuple[str, str]:
    """`kubectl top pod -n NAMESPACE` once metrics-server has figures for `pod`: (CPU, memory)."""

    def top() -> str:
        result = node.kubectl("top", "pod", "-n", namespace, check=False)
        return result.stdout if result.returncode == 0 and pod in result.stdout else ""

    out = wait_for(top, 240, f"kubectl top pod -n {namespace}", interval=2)
    line = next(line for line in out.splitlines() if line.startswith(pod))
    cpu, memory = line.split()[1:3]
    assert cpu.endswith("m") and memory.endswith("Mi"), out
    return cpu, memory


def test_literal_install_runs_the_operator_as_a_pod(node: Node, api: Api) -> None:
    """The README's install lines, as written, on this still fresh node with the image
    `make image` loaded: the Deployment becomes Available, the kubelet serves both probes,
    and the operator in the Pod (in-cluster config, only its RBAC) does its work; then the
    guide's first looks at it (`get pods`, `logs`, `top pod`), literally."""
    # Imported again even when containerd has the reference: it keeps images from earlier
    # nodes, and that one may be an older build.
    if not load_image(node):
        cannot_run(f"the operator's image {operator_image()} is not built: run `make image`")
    run_readme_install(user_env(node))
    ns = "virtualservice-operator-system"
    node.kubectl(
        "rollout",
        "status",
        "deployment/virtualservice-operator",
        "-n",
        ns,
        "--timeout=180s",
        timeout=200,
    )
    pod = node.kubectl(
        "get",
        "pods",
        "-n",
        ns,
        "-l",
        "app=virtualservice-operator",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ).stdout
    wait_for(
        lambda: _probes_succeeded(node, pod),
        60,
        "the kubelet's liveness and readiness probes succeed",
        interval=1,
    )

    # The config's namespaces (deployments/config.yaml): production and three developer ones.
    for name in ("production", "staging", "dev-team-a", "dev-team-b"):
        node.kubectl("create", "namespace", name)
    svc = api.create_service("production", "shop")
    vs = wait_for(lambda: api.vs("production", "shop-virtual-service"), 60, "VirtualService")
    assert _owned_by(vs, svc)
    wait_for(lambda: api.service("dev-team-a", "shop"), 60, "placeholder")
    assert api.delete_service("production", "shop") == 200
    wait_for(
        lambda: (
            api.vs("production", "shop-virtual-service") is None
            and all(api.service(d, "shop") is None for d in ("staging", "dev-team-a", "dev-team-b"))
        ),
        60,
        "VirtualService and placeholders gone",
    )
    status = node.kubectl("get", "pod", pod, "-n", ns, "-o", "json").stdout
    container = json.loads(status)["status"]["containerStatuses"][0]
    assert container["ready"] and container["restartCount"] == 0

    # The guide's first look at a running operator, literally.
    pods = node.kubectl("get", "pods", "-n", ns).stdout
    assert pod in pods and "1/1" in pods and "Running" in pods, pods
    logs = node.kubectl("logs", "-n", ns, "deployment/virtualservice-operator").stdout
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert any(line.get("msg") == "VirtualService created" for line in lines), logs[-2000:]
    assert all({"level", "timestamp", "msg"} <= line.keys() for line in lines)
    cpu, memory = _top(node, ns, pod)
    FIGURES["operator Pod after the install (kubectl top pod)"] = f"{cpu} CPU, {memory}"

    # The tests below run the operator as a process, with their own namespaces; this one
    # would sweep their placeholders (outside its config) as orphans.
    node.kubectl("scale", "deployment/virtualservice-operator", "-n", ns, "--replicas=0")
    wait_for(
        lambda: not node.kubectl("get", "pods", "-n", ns, "-o", "name").stdout.strip(),
        120,
        "operator Pod gone",
    )


def test_kubectl_top_pod_through_metrics_server(node: Node) -> None:
    """metrics-server (a Pod from its own module) serves metrics.k8s.io via the aggregator:
    it reached the kubelet's Summary API, checking its certificate against the cluster CA."""
    _top(node, "kube-system", "metrics-server")


def test_service_deleted_while_operator_down_garbage_collector_removes_virtual_service(
    operator: OperatorFactory, api: Api
) -> None:
    """The ownerReference alone removes the VirtualService (the garbage collector, with no
    operator running); the placeholders, in other namespaces, no ownerReference can reach:
    the operator removes those when it is back."""
    ns = operator.namespaces
    svc = api.create_service(ns.default, "gc")
    proc = operator.start(operator.config(placeholders=True))
    vs = wait_for(lambda: api.vs(ns.default, "gc-virtual-service"), 60, "VirtualService")
    assert _owned_by(vs, svc)
    for dev in ns.developers:
        wait_for(lambda dev=dev: api.service(dev, "gc"), 60, f"placeholder in {dev}")
    assert proc.stop() == 0

    assert api.delete_service(ns.default, "gc") == 200
    wait_for(
        lambda: api.vs(ns.default, "gc-virtual-service") is None,
        60,
        "garbage collector deletes the VirtualService",
    )
    assert all(api.service(dev, "gc") is not None for dev in ns.developers)

    operator.start(write_config=False)
    for dev in ns.developers:
        wait_for(lambda dev=dev: api.service(dev, "gc") is None, 60, f"placeholder in {dev} gone")
    assert api.vs(ns.default, "gc-virtual-service") is None


def test_service_deleted_with_operator_running_leaves_nothing(
    operator: OperatorFactory, api: Api
) -> None:
    ns = operator.namespaces
    api.create_service(ns.default, "gone")
    api.create_service(ns.developers[0], "gone")
    operator.start(operator.config(placeholders=True))
    wait_for(lambda: api.vs(ns.default, "gone-virtual-service"), 60, "VirtualService")
    wait_for(lambda: api.service(ns.developers[1], "gone"), 60, "placeholder")

    assert api.delete_service(ns.default, "gone") == 200

    def nothing_left() -> bool:
        vss = api.get(f"/apis/networking.istio.io/v1/namespaces/{ns.default}/virtualservices")
        placeholders = [
            s
            for dev in ns.developers
            for s in api.get(f"/api/v1/namespaces/{dev}/services")["items"]
            if s["metadata"]["name"] == "gone" and s["spec"]["type"] == "ExternalName"
        ]
        return not vss["items"] and not placeholders

    wait_for(nothing_left, 60, "no VirtualService and no placeholder left")
    assert api.service(ns.developers[0], "gone") is not None  # the team's own Service stays


def test_deleting_a_developer_namespace_does_not_wedge_the_operator(
    operator: OperatorFactory, api: Api
) -> None:
    ns = operator.namespaces
    doomed = ns.developers[1]
    api.create_service(ns.default, "web")
    api.create_service(doomed, "api")  # a real Service, deleted with its namespace
    proc = operator.start(operator.config(placeholders=True))
    wait_for(lambda: api.service(doomed, "web"), 60, "placeholder in the doomed namespace")

    assert api.delete(f"/api/v1/namespaces/{doomed}") == 200
    # The namespace controller empties it while the operator would put the placeholder back.
    wait_for(lambda: api.get(f"/api/v1/namespaces/{doomed}") is None, 120, "namespace gone")

    api.create_service(ns.default, "after")
    wait_for(lambda: api.vs(ns.default, "after-virtual-service"), 60, "operator still works")
    wait_for(lambda: api.service(ns.developers[0], "after"), 60, "and still makes placeholders")
    assert proc.ready()


@pytest.mark.node_last
def test_cluster_down_leaves_nothing_behind(node_dir: Path) -> None:
    """Last of every node test (tests/node/conftest.py orders them): `make cluster-down`; no process, mount, interface, cgroup or iptables rule
    of the node remains."""
    down = node_command(node_dir, "down")
    assert down.returncode == 0, down.stderr
    assert "node stopped" in down.stdout
    assert {k: v for k, v in leftovers().items() if v} == {}
