"""`make demo-mesh`: the operator's routes followed by real requests, on a node with Istio.

1. start the mesh (mesh.py: the one-node Kubernetes, CoreDNS, istiod with its webhook);
2. install the operator as the README says (the CRD line skipped: Istio owns it);
3. run Istio's echo app as `checkout` in production and in staging, and a proxyless
   gRPC client (routes from istiod, no Envoy) in production;
4. show the VirtualService the operator wrote, then a request with no header (answered
   in production) and one with `x-developer: staging` (answered in staging);
5. stop everything.

Where this machine cannot run a node, it says why in one line and exits 1.
"""

from __future__ import annotations

import sys
import time

from virtualservice_operator_dev.controlplane import ensure_binaries
from virtualservice_operator_dev.echo import Answer, apply, call, echo_pod, grpc_service
from virtualservice_operator_dev.echo import wait_pods_ready as wait_ready
from virtualservice_operator_dev.install import install_with_istio, load_image, operator_image
from virtualservice_operator_dev.mesh import ISTIO_VERSION, Mesh
from virtualservice_operator_dev.node import install_runtime, node_running, unavailable_reason

NAMESPACES = ("production", "staging", "dev-team-a", "dev-team-b")  # deployments/config.yaml
HOST = "checkout.production.svc.cluster.local"
CLIENT = ("production", "client")


def _say(title: str) -> None:
    bold = "\033[1m" if sys.stdout.isatty() else ""
    reset = "\033[0m" if bold else ""
    print(f"\n{bold}== {title}{reset}", flush=True)


def _request(mesh: Mesh, headers: tuple[str, ...], want: str, timeout: float = 60) -> Answer:
    """One request through istiod's routes, repeated until `want` answers (istiod pushes
    a route a moment after the operator writes it); printed as the client prints it."""
    shown = " ".join(f"-H '{h}'" for h in headers)
    print(f"$ kubectl exec -n production client -- client xds:///{HOST}:7070 {shown}")
    deadline = time.monotonic() + timeout
    while True:
        got = call(mesh, CLIENT, HOST, headers=headers)
        if isinstance(got, list) and got and got[0].pod == want:
            answer = got[0]
            print(f"answered by Pod {answer.pod} (version {answer.version}, port {answer.port})")
            return answer
        if time.monotonic() > deadline:
            raise TimeoutError(f"demo-mesh: no answer from {want} (last: {got!r})")
        time.sleep(0.5)


def show(mesh: Mesh) -> None:
    """Steps 2 to 4 on a started mesh."""
    print(f"ready in {mesh.start_seconds:.1f}s; istiod's webhook denies bad VirtualServices")
    _say("Installing the operator as the README says (Istio owns the CRD: that line skipped)")
    if not load_image(mesh):
        raise RuntimeError(f"{operator_image()} is not built: run `make image` first")
    for ns in NAMESPACES:
        mesh.kubectl("create", "namespace", ns)
    install_with_istio(mesh)
    print(mesh.kubectl("get", "pods", "-n", "virtualservice-operator-system").stdout)

    _say("checkout in production and in staging (Istio's echo app), a client in production")
    pods = [
        echo_pod("production", "checkout-production", "checkout"),
        echo_pod("staging", "checkout-staging", "checkout"),
        echo_pod("production", "client", "client"),
    ]
    apply(mesh, *pods)
    # staging's first: once production's exists, the operator puts a placeholder in staging.
    apply(mesh, grpc_service("staging", "checkout"))
    apply(mesh, grpc_service("production", "checkout"))
    for pod in pods:
        wait_ready(mesh, pod["metadata"]["namespace"], pod["metadata"]["name"])
    print(mesh.kubectl("get", "pods,services", "-n", "production").stdout)

    _say("A request with no header: the template's route, to production")
    _request(mesh, (), "checkout-production")
    _say("The VirtualService the operator wrote (istiod's webhook admitted it)")
    print("$ kubectl get virtualservice checkout-virtual-service -n production -o yaml")
    vs = mesh.kubectl(
        "get", "virtualservice", "checkout-virtual-service", "-n", "production", "-o", "yaml"
    ).stdout
    print(vs[vs.index("spec:") :].rstrip())
    _say("The same request with x-developer: staging: the developer route, to staging")
    _request(mesh, ("x-developer: staging",), "checkout-staging")


def main() -> int:
    reason = unavailable_reason() or (
        "a node is already running here (make cluster-down)" if node_running() else None
    )
    if reason is not None:
        print(f"make demo-mesh: this machine cannot run the mesh: {reason}", file=sys.stderr)
        return 1
    _say(f"Starting a node with CoreDNS and Istio (istio.io/istio {ISTIO_VERSION})")
    install_runtime()
    mesh = Mesh(bin_dir=ensure_binaries())
    mesh.start()
    try:
        show(mesh)
    finally:
        _say("Stopping the mesh")
        mesh.stop()
    print("done: nothing left running")
    return 0


if __name__ == "__main__":
    sys.exit(main())
