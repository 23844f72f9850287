"""Istio's echo app on the mesh (mesh.py): echo Pods, Services for them, and requests
from a proxyless gRPC client in a Pod, with who answered each. Used by the mesh tests
and `make demo-mesh`."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from virtualservice_operator_dev.mesh import ECHO_GRPC_PORT, ECHO_IMAGE, proxyless_env
from virtualservice_operator_dev.node import HARDENED, Node


def echo_pod(
    namespace: str, name: str, app: str, ports: tuple[int, ...] = (ECHO_GRPC_PORT,)
) -> dict[str, Any]:
    """Istio's echo server as a Pod (labelled app=`app`), answering gRPC on `ports` with
    its Pod name (Hostname), version (the namespace) and port; it is also a proxyless gRPC client
    (`kubectl exec ... client xds:///...`) with Istio's agentless bootstrap."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": app}},
        "spec": {
            "containers": [
                {
                    "name": "echo",
                    "image": ECHO_IMAGE,
                    "imagePullPolicy": "Never",
                    "args": [f"--grpc={','.join(map(str, ports))}", f"--version={namespace}"],
                    "env": proxyless_env(namespace),
                    "ports": [{"containerPort": p} for p in ports],
                    "readinessProbe": {"tcpSocket": {"port": ports[0]}, "periodSeconds": 1},
                    "securityContext": HARDENED,
                }
            ]
        },
    }


def grpc_service(
    namespace: str, name: str, ports: tuple[int, ...] = (ECHO_GRPC_PORT,)
) -> dict[str, Any]:
    """A Service for echo Pods labelled app=`name`. Istio routes only ports it knows
    speak HTTP: named grpc(-*)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            # ClusterIP, so that `kubectl apply` over a placeholder (ExternalName) turns
            # it into the team's own Service.
            "type": "ClusterIP",
            "selector": {"app": name},
            "ports": [
                {"name": "grpc" if i == 0 else f"grpc-{p}", "port": p, "targetPort": p}
                for i, p in enumerate(ports)
            ],
        },
    }


def apply(node: Node, *objects: dict[str, Any]) -> None:
    node.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}),
    )


def wait_pods_ready(node: Node, namespace: str, *names: str) -> None:
    for name in names:
        node.kubectl(
            "wait", "--for=condition=Ready", f"pod/{name}", "-n", namespace, "--timeout=120s",
            timeout=130,
        )  # fmt: skip


@dataclass(frozen=True)
class Answer:
    """Who answered one request: the Pod (its name), its version (our echo Pods' is
    their namespace), the port."""

    pod: str
    version: str
    port: int


_FIELD = re.compile(r"^\[(\d+) body\] (\w+)=(.*)$")


def parse_answers(output: str) -> list[Answer]:
    """The echo client's output: per request, `[n body] Field=value` lines."""
    fields: dict[int, dict[str, str]] = {}
    for line in output.splitlines():
        if m := _FIELD.match(line.strip()):
            fields.setdefault(int(m[1]), {}).setdefault(m[2], m[3])
    return [
        Answer(f.get("Hostname", ""), f.get("ServiceVersion", ""), int(f.get("ServicePort", 0)))
        for _, f in sorted(fields.items())
    ]


def call(
    node: Node,
    client: tuple[str, str],
    host: str,
    *,
    port: int = ECHO_GRPC_PORT,
    headers: tuple[str, ...] = (),
    count: int = 1,
) -> list[Answer] | str:
    """`count` gRPC requests from the proxyless client Pod `client` (namespace, name) to
    xds:///host:port, through the routes istiod gives it; the answers, or the client's
    error (a string)."""
    args = [
        "exec", "-n", client[0], client[1], "--", "/usr/local/bin/client",
        f"xds:///{host}:{port}", f"--count={count}", "--timeout=5s",
    ]  # fmt: skip
    for header in headers:
        # The client splits -H values on commas (a CSV list): quoted, a value keeps them.
        args += ["-H", f'"{header}"' if "," in header else header]
    result = node.kubectl(*args, check=False, timeout=90)
    if result.returncode != 0:
        return (result.stderr or result.stdout).strip()[-500:]
    return parse_answers(result.stdout)
