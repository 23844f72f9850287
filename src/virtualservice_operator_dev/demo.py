"""`make demo`: the whole story on a local control plane, in about a minute.

1. start etcd + kube-apiserver (built once, cached), install Istio's VirtualService CRD
   (from the istio.io/api Go module pinned in hack/istio), the operator's manifests (its
   ServiceAccount and RBAC) and the guide's ConfigMap;
2. create the sample: namespaces production, staging, dev-team-a, dev-team-b and a few
   Services (one of them in a developer namespace);
3. run the operator with its ServiceAccount's token (the RBAC we ship, nothing more);
4. show the VirtualServices, routes and placeholders it made, and
   `virtualservice-operator status`;
5. a developer deploys their own `checkout` in dev-team-b over the placeholder: show the
   new route appear, and `status` again;
6. stop the operator (SIGTERM) and the control plane.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import yaml

from virtualservice_operator.commands.inspect import (
    NameState,
    describe_route,
    load_config,
    load_view,
    with_client,
)
from virtualservice_operator.commands.output import table
from virtualservice_operator.commands.status import judged
from virtualservice_operator.domain.constants import CONFIG_MAP_NAME, OPERATOR_NAMESPACE
from virtualservice_operator.kube.client import KubeClient
from virtualservice_operator_dev.controlplane import (
    REPO_ROOT,
    ControlPlane,
    ensure_binaries,
    free_port,
)
from virtualservice_operator_dev.istio import istio_api_version
from virtualservice_operator_dev.operator import spawn_operator

NAMESPACES = ("production", "staging", "dev-team-a", "dev-team-b")

SAMPLE = """
apiVersion: v1
kind: Service
metadata: {name: frontend, namespace: production}
spec: {selector: {app: frontend}, ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: production}
spec:
  selector: {app: cart}
  ports: [{name: http, port: 80}, {name: grpc, port: 9090}]
---
apiVersion: v1
kind: Service
metadata: {name: checkout, namespace: production}
spec: {selector: {app: checkout}, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: staging}
spec:
  selector: {app: cart}
  ports: [{name: http, port: 80}, {name: grpc, port: 9090}]
---
apiVersion: v1
kind: Service
metadata: {name: frontend, namespace: dev-team-a}
spec: {selector: {app: frontend}, ports: [{name: http, port: 80}]}
"""

DEVELOPER_SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: checkout, namespace: dev-team-b}
spec: {type: ClusterIP, selector: {app: checkout}, ports: [{name: http, port: 80}]}
"""


def _say(title: str) -> None:
    bold = "\033[1m" if sys.stdout.isatty() else ""
    reset = "\033[0m" if bold else ""
    print(f"\n{bold}== {title}{reset}", flush=True)


def _show(cp: ControlPlane, *args: str) -> str:
    print(f"$ kubectl {' '.join(args)}")
    out = cp.kubectl(*args).stdout
    print(out.rstrip(), flush=True)
    return out


def _wait(check: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"demo: timed out waiting for {what}")
        time.sleep(0.1)


def _routes(cp: ControlPlane, name: str) -> list[str]:
    result = cp.kubectl(
        "get", "virtualservice", name, "-n", "production", "-o", "yaml", check=False
    )
    if result.returncode != 0:
        return []
    vs = yaml.safe_load(result.stdout)
    return [str(r.get("name", "default")) for r in vs["spec"].get("http", [])]


def _route_table(cp: ControlPlane) -> None:
    """The routes of every managed VirtualService, read as `status` reads the cluster (the
    operator's cache, filled by one list) and described as `explain` describes them."""

    async def read(client: KubeClient) -> list[NameState]:
        config = await load_config(client, OPERATOR_NAMESPACE, CONFIG_MAP_NAME)
        return list(judged(await load_view(client, config)))

    rows = []
    for state in with_client(str(cp.admin_kubeconfig), read):
        for vs in state.managed_virtual_services():
            for route in (vs.get("spec") or {}).get("http") or []:
                rows.append([vs["metadata"]["name"], *describe_route(route)])
    print("\n".join(table(["VIRTUALSERVICE", "ROUTE", "MATCH", "DESTINATION"], rows)), flush=True)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "virtualservice_operator.cli", *args]
    return subprocess.run(
        command, capture_output=True, text=True, check=False, env={**os.environ, "NO_COLOR": "1"}
    )


def _status(cp: ControlPlane, *extra: str) -> subprocess.CompletedProcess[str]:
    return _cli("status", f"--kubeconfig={cp.admin_kubeconfig}", *extra)


def _show_status(cp: ControlPlane) -> None:
    """`virtualservice-operator status`, once every name is in sync (`--check` exits 0);
    the table shown is the one that `--check` printed."""
    last: list[subprocess.CompletedProcess[str]] = []

    def in_sync() -> bool:
        last[:] = [_status(cp, "--check")]
        return last[0].returncode == 0

    _wait(in_sync, "status --check to report everything in sync")
    print("$ virtualservice-operator status")
    print((last[0].stdout + last[0].stderr).rstrip(), flush=True)


def main() -> int:
    _say("Building (once) and starting the local control plane: etcd + kube-apiserver")
    with ControlPlane(bin_dir=ensure_binaries()) as cp:
        print(f"kube-apiserver at {cp.url}, ready in {cp.start_seconds:.1f}s")
        print(f"admin kubeconfig: {cp.admin_kubeconfig}")
        print(f"Istio's VirtualService CRD installed, from istio.io/api {istio_api_version()}")
        _say("Installing the operator's manifests (ServiceAccount, RBAC) and the guide's ConfigMap")
        cp.kubectl("apply", "-f", str(REPO_ROOT / "deployments" / "deployment.yaml"))
        cp.kubectl("apply", "-f", str(REPO_ROOT / "deployments" / "config.yaml"))
        print(
            cp.kubectl(
                "get",
                "configmap",
                "virtualservice-operator-config",
                "-n",
                "virtualservice-operator-system",
                "-o",
                "jsonpath={.data.config\\.yaml}",
            ).stdout
        )

        _say("The sample: namespaces and Services")
        for ns in NAMESPACES:
            cp.kubectl("create", "namespace", ns)
        cp.kubectl("apply", "-f", "-", input=SAMPLE)
        _say("The config, judged by Istio's schema offline and by the cluster (a dry run)")
        print("$ virtualservice-operator check-config --server deployments/config.yaml")
        checked = _cli(
            "check-config",
            "--server",
            f"--kubeconfig={cp.admin_kubeconfig}",
            str(REPO_ROOT / "deployments" / "config.yaml"),
        )
        print((checked.stdout + checked.stderr).rstrip(), flush=True)
        if checked.returncode != 0:
            raise RuntimeError(f"check-config --server exited {checked.returncode}")
        _show(
            cp,
            "get",
            "services",
            "-A",
            "-l",
            "!virtualservice-operator/placeholder-service",
            "--field-selector=metadata.namespace!=default",
        )

        _say(
            "Running the operator with its ServiceAccount (the RBAC in deployments/deployment.yaml)"
        )
        kubeconfig = cp.service_account_kubeconfig(
            "virtualservice-operator-system", "virtualservice-operator"
        )
        log_path = cp.work_dir / "operator.log"
        metrics_port, health_port = free_port(), free_port()
        operator = spawn_operator(
            kubeconfig,
            metrics_port,
            health_port,
            log_path,
            "-leader-elect=true",
            "-zap-log-level=info",
        )
        try:
            _wait(
                # cart has two ports: a developer route and the template's route per port.
                lambda: (
                    len(_routes(cp, "cart-virtual-service")) == 4
                    and len(_routes(cp, "frontend-virtual-service")) == 2
                ),
                "the operator to converge",
            )
            _wait(
                lambda: (
                    cp.kubectl(
                        "get", "service", "checkout", "-n", "dev-team-b", check=False
                    ).returncode
                    == 0
                ),
                "placeholders",
            )
            _show(cp, "get", "virtualservices", "-A", "-l", "managed-by=virtualservice-operator")
            _say(
                "Routes: developer routes first (header x-developer), the template's route last "
                "(cart has two ports: each route once per port)"
            )
            _route_table(cp)
            _say(
                "Placeholders: ExternalName Services in developer namespaces that lack the Service"
            )
            _show(
                cp,
                "get",
                "services",
                "-A",
                "-l",
                "virtualservice-operator/placeholder-service=true",
            )
            _say("The operator's own view: virtualservice-operator status (read-only)")
            _show_status(cp)

            _say(
                "A developer deploys their own checkout in dev-team-b (apply over the placeholder)"
            )
            print("$ kubectl apply -f checkout-dev-team-b.yaml")
            print(cp.kubectl("apply", "-f", "-", input=DEVELOPER_SERVICE).stdout.rstrip())
            _wait(lambda: len(_routes(cp, "checkout-virtual-service")) == 2, "the new route")
            _route_table(cp)
            _show_status(cp)
            _show(cp, "get", "lease", "-n", "virtualservice-operator-system")
            _say("Operator log (JSON lines; the last few)")
            for line in log_path.read_text().splitlines()[-8:]:
                print(line)
        finally:
            _say("Stopping the operator (SIGTERM: finishes work in flight, releases the Lease)")
            operator.send_signal(signal.SIGTERM)
            code = operator.wait(timeout=20)
            print(f"operator exited with {code}")
    _say("Done: control plane stopped, nothing left running")
    return 0


if __name__ == "__main__":
    sys.exit(main())
