"""Istio meets the operator: a live istiod (`make mesh`) judges every VirtualService the
operator writes with its validating webhook, and real gRPC requests from proxyless
clients (Istio's echo app, routes from istiod's xDS) follow those routes. Each routing
test asserts which Pod answered.

The tests share one install (the README's lines) and run in this file's order; each
world is built on the one before (deployments/config.yaml's namespaces: production and
the developer namespaces staging, dev-team-a, dev-team-b).
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from typing import Any

import pytest
import yaml

from tests.conftest import FIGURES
from tests.integration.harness import wait_for
from tests.mesh.conftest import DEFAULT_NS, routed_to
from tests.node.world import config_for, differences, shipped_config
from virtualservice_operator.domain.instance import DEFAULT_INSTANCE
from virtualservice_operator_dev.echo import (
    Answer,
    apply,
    call,
    echo_pod,
    grpc_service,
    wait_pods_ready,
)
from virtualservice_operator_dev.install import OPERATOR_NS
from virtualservice_operator_dev.mesh import (
    DEFAULT_VALIDATOR,
    ECHO_GRPC_PORT,
    ISTIO_NAMESPACE,
    build,
    failure_policy,
    webhook_denial,
)
from virtualservice_operator_dev.node import Node

SHOP = f"shop.{DEFAULT_NS}.svc.cluster.local"
CLIENT = (DEFAULT_NS, "client")
SECOND_PORT = 7071
# A template with what teams add to it: a timeout and retries on the default route.
CUSTOM_TEMPLATE = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: "${serviceName}-virtual-service"
  namespace: "${defaultNamespace}"
  labels:
    managed-by: virtualservice-operator
spec:
  hosts:
  - ${serviceName}
  http:
  - route:
    - destination:
        host: ${serviceName}.${defaultNamespace}.svc.cluster.local
    timeout: 10s
    retries:
      attempts: 3
      perTryTimeout: 2s
      retryOn: unavailable,cancelled
"""


def set_config(node: Node, **changes: Any) -> str:
    """deployments/config.yaml's config with `changes` (camelCase keys), applied to the
    operator's ConfigMap (it reloads); the config text."""
    config = yaml.safe_load(shipped_config())
    config.update(changes)
    text = yaml.safe_dump(config, sort_keys=False)
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "virtualservice-operator-config", "namespace": OPERATOR_NS},
        "data": {"config.yaml": text},
    }
    apply(node, configmap)
    return text


def operator_in_line(node: Node, text: str) -> None:
    """Everything `text` asks for exists as asked: every VirtualService the operator
    wrote got past istiod's webhook (at failurePolicy Fail nothing else gets in)."""
    config = config_for(text, DEFAULT_INSTANCE)
    wait_for(lambda: differences(node, config).in_line, 90, "the operator in line", interval=1)
    assert failure_policy(node) == "Fail"


def vs_http(node: Node, name: str) -> list[dict[str, Any]]:
    vs = json.loads(
        node.kubectl("get", "virtualservice", name, "-n", DEFAULT_NS, "-o", "json").stdout
    )
    return list(vs["spec"]["http"])


@pytest.fixture(scope="module")
def world(installed: Node) -> Node:
    """shop in production with real Services in staging and dev-team-a (dev-team-b gets a
    placeholder); an echo Pod behind each; the proxyless client Pods."""
    node = installed
    pods = [
        echo_pod(DEFAULT_NS, "shop-production", "shop"),
        echo_pod("staging", "shop-staging", "shop"),
        echo_pod("dev-team-a", "shop-dev-team-a", "shop"),
        echo_pod(DEFAULT_NS, "client", "client"),
        echo_pod("dev-team-b", "client", "client"),
    ]
    apply(node, *pods)
    apply(node, *(grpc_service(ns, "shop") for ns in (DEFAULT_NS, "staging", "dev-team-a")))
    for pod in pods:
        wait_pods_ready(node, pod["metadata"]["namespace"], pod["metadata"]["name"])
    wait_for(
        lambda: (
            node.kubectl("get", "service", "shop", "-n", "dev-team-b", check=False).returncode == 0
        ),
        60,
        "placeholder shop in dev-team-b",
    )
    return node


def test_istiod_webhook_in_force(mesh: Node) -> None:
    """Istio's base chart's webhook, patched by istiod to failurePolicy Fail, denies a
    VirtualService its CRD schema admits (a regex that is not RE2), with istiod's message."""
    message = webhook_denial(mesh)
    assert message is not None and 'admission webhook "validation.istio.io" denied' in message
    assert "regex" in message, message
    assert failure_policy(mesh) == "Fail"
    pods = mesh.kubectl("get", "pods", "-n", ISTIO_NAMESPACE, "-o", "name").stdout.split()
    assert [p for p in pods if p.startswith("pod/istiod-")], pods
    webhooks = mesh.kubectl("get", "validatingwebhookconfiguration", "-o", "name").stdout
    assert (
        f"validatingwebhookconfiguration.admissionregistration.k8s.io/{DEFAULT_VALIDATOR}"
        in webhooks
    )


def test_header_routes(world: Node) -> None:
    """No header: production. x-developer: N for each N that runs shop: N's Pod. An
    unknown value, and a namespace with only a placeholder: production."""
    text = set_config(world)
    operator_in_line(world, text)
    answers = routed_to(world, CLIENT, SHOP, "shop-production")
    assert answers == [Answer("shop-production", DEFAULT_NS, ECHO_GRPC_PORT)] * 3, answers
    for ns in ("staging", "dev-team-a"):
        routed_to(world, CLIENT, SHOP, f"shop-{ns}", headers=(f"x-developer: {ns}",))
    for value in ("dev-team-b", "nobody", "Staging"):
        routed_to(world, CLIENT, SHOP, "shop-production", headers=(f"x-developer: {value}",))


def test_placeholder_reaches_the_default_namespace(world: Node) -> None:
    """A client in dev-team-b (which has no shop of its own) calls shop there: the
    placeholder (an ExternalName with shop's ports) takes it to production's Pod, through
    istiod's routes and through cluster DNS alike."""
    client = ("dev-team-b", "client")
    routed_to(world, client, "shop.dev-team-b.svc.cluster.local", "shop-production")
    result = world.kubectl(
        "exec", "-n", "dev-team-b", "client", "--", "/usr/local/bin/client",
        f"grpc://shop.dev-team-b.svc.cluster.local:{ECHO_GRPC_PORT}", "--count=1", "--timeout=5s",
        check=False, timeout=60,
    )  # fmt: skip
    assert "Hostname=shop-production" in result.stdout, result.stderr[-1000:]


def test_two_ports_each_routed_by_its_own_route(world: Node) -> None:
    """A two-port Service: the operator writes a route per port (match port, destination
    port); a request on each port with the header reaches staging on that same port."""
    ports = (ECHO_GRPC_PORT, SECOND_PORT)
    pods = [
        echo_pod(DEFAULT_NS, "duo-production", "duo", ports),
        echo_pod("staging", "duo-staging", "duo", ports),
    ]
    apply(world, *pods)
    apply(world, grpc_service(DEFAULT_NS, "duo", ports), grpc_service("staging", "duo", ports))
    for pod in pods:
        wait_pods_ready(world, pod["metadata"]["namespace"], pod["metadata"]["name"])
    host = f"duo.{DEFAULT_NS}.svc.cluster.local"
    header = ("x-developer: staging",)
    wait_for(lambda: len(vs_http(world, "duo-virtual-service")) == 3, 60, "a route per port")
    for port in ports:
        answers = routed_to(world, CLIENT, host, "duo-staging", port=port, headers=header)
        assert {a.port for a in answers} == {port}
        answers = routed_to(world, CLIENT, host, "duo-production", port=port)
        assert {a.port for a in answers} == {port}


def test_developer_service_created_then_deleted_while_requests_flow(world: Node) -> None:
    """dev-team-b starts shop while requests with its header flow: they move to its Pod;
    its Service deleted, they move back to production. Every request is answered by one
    of the two (the placeholder keeps shop resolvable throughout): none fails."""
    apply(world, echo_pod("dev-team-b", "shop-dev-team-b", "shop"))
    wait_pods_ready(world, "dev-team-b", "shop-dev-team-b")
    header = ("x-developer: dev-team-b",)
    routed_to(world, CLIENT, SHOP, "shop-production", headers=header)
    seen: list[tuple[float, list[Answer] | str]] = []
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            seen.append((time.monotonic(), call(world, CLIENT, SHOP, headers=header)))

    sender = threading.Thread(target=traffic, daemon=True)
    sender.start()
    try:
        # kubectl apply over the placeholder: the team's real Service replaces it.
        created = time.monotonic()
        apply(world, grpc_service("dev-team-b", "shop"))
        moved = wait_for(
            lambda: next(
                (t for t, a in seen if t > created and a and not isinstance(a, str)
                 and a[0].pod == "shop-dev-team-b"),
                None,
            ),
            90, "a request answered by dev-team-b's Pod", interval=0.2,
        )  # fmt: skip
        deleted = time.monotonic()
        world.kubectl("delete", "service", "shop", "-n", "dev-team-b")
        back = wait_for(
            lambda: next(
                (t for t, a in seen if t > deleted and a and not isinstance(a, str)
                 and a[0].pod == "shop-production"),
                None,
            ),
            90, "requests back on production", interval=0.2,
        )  # fmt: skip
    finally:
        stop.set()
        sender.join(timeout=120)
    failed = [a for _, a in seen if isinstance(a, str) or not a]
    assert not failed, failed[:3]
    assert moved is not None and back is not None
    FIGURES["mesh: developer Service created -> first request routed to it"] = (
        f"{moved - created:.1f} s (client: a new xDS client per request)"
    )
    FIGURES["mesh: developer Service deleted -> requests back on default"] = (
        f"{back - deleted:.1f} s"
    )
    world.kubectl("delete", "pod", "shop-dev-team-b", "-n", "dev-team-b", "--wait=false")


def test_baggage_mode(world: Node) -> None:
    """routing.match: baggage: the member x-developer=staging among others reaches
    staging; a near miss (stagingX) stays on production."""
    text = set_config(world, routing={"match": "baggage"})
    operator_in_line(world, text)
    member = ("baggage: team=shop,x-developer=staging,sampled=1",)
    routed_to(world, CLIENT, SHOP, "shop-staging", headers=member)
    routed_to(world, CLIENT, SHOP, "shop-production", headers=("baggage: x-developer=stagingX",))
    routed_to(world, CLIENT, SHOP, "shop-production", headers=("x-developer: staging",))


def test_customised_template_with_retries_and_timeout(world: Node) -> None:
    """A template with a timeout and retries: admitted by istiod, and routing still holds."""
    text = set_config(world, virtualServiceTemplate=CUSTOM_TEMPLATE)
    operator_in_line(world, text)
    default_route = vs_http(world, "shop-virtual-service")[-1]
    assert default_route["retries"]["attempts"] == 3 and default_route["timeout"] == "10s"
    routed_to(world, CLIENT, SHOP, "shop-staging", headers=("x-developer: staging",))
    routed_to(world, CLIENT, SHOP, "shop-production")


@pytest.fixture(scope="module")
def analysis(world: Node) -> list[dict[str, Any]]:
    """`istioctl analyze` (same module as istiod) on the live cluster, all namespaces: the
    messages about the operator's objects (its VirtualServices, its placeholders)."""
    istioctl = build() / "istioctl"
    result = subprocess.run(
        [str(istioctl), "analyze", "--kubeconfig", str(world.admin_kubeconfig), "-A", "-o", "json"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    # Exit codes: 0 nothing found, 79 warnings or info only, 3 errors (istioctl's docs).
    assert result.returncode in (0, 79, 3), result.stderr
    messages: list[dict[str, Any]] = json.loads(result.stdout or "[]")
    FIGURES["mesh: istioctl analyze messages (all kinds)"] = str(len(messages))
    placeholders = {f"Service {ns}/shop" for ns in ("dev-team-b",)}
    return [
        m
        for m in messages
        if m.get("origin", "").startswith("VirtualService ") or m.get("origin") in placeholders
    ]


def _multi_port_default_route(message: dict[str, Any]) -> bool:
    return message.get("code") == "IST0112" and "duo-virtual-service" in message.get("origin", "")


def test_istioctl_analyze_reports_nothing_for_the_operators_objects(
    analysis: list[dict[str, Any]],
) -> None:
    others = [m for m in analysis if not _multi_port_default_route(m)]
    assert others == [], json.dumps(others, indent=1)[:3000]


@pytest.mark.xfail(
    strict=True,
    reason="the template's own (default) route names no destination port; for a Service "
    "with several ports istioctl reports IST0112 (Error) on it: the operator adds ports "
    "only to the developer routes it writes",
)
def test_istioctl_analyze_multi_port_default_route(analysis: list[dict[str, Any]]) -> None:
    assert [m for m in analysis if _multi_port_default_route(m)] == []
