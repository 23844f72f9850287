"""The one-node Kubernetes of node.py with Istio on it (`make mesh`): cluster DNS and
istiod, installed as a user installs them, and nothing of Envoy.

- CoreDNS (hack/tools/prometheus/coredns, from its Go module) as the kube-dns Service at
  CLUSTER_DNS_IP, the address the kubelet writes into every Pod's resolv.conf.
- Istio from the `istio.io/istio` module at the version hack/tools/istio/go.mod pins
  (hack/build-mesh.sh builds istiod, istioctl and the echo app): Istio's own charts from
  that module, installed with helm as Istio's docs say (`base`: the CRDs and the
  `istiod-default-validator` webhook; `istio-discovery`: istiod), with istiod's image
  built here from the static binary (no registry: imported, never pulled).
- Ready when istiod's webhook denies a known-bad VirtualService: from then on every
  Istio object written to the cluster is judged by istiod, as on a user's cluster.

Proxyless gRPC clients (PROXYLESS_ENV: Istio's agentless bootstrap, the
`grpc-simple` injection template's, as an environment variable) get their routes from
istiod's xDS server; Istio's echo app (ECHO_IMAGE) serves and sends the requests.

Command line (`make mesh`; `make cluster-down` stops it like a node):
    python -m virtualservice_operator_dev.mesh up|serve [--dir .cluster]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from virtualservice_operator_dev import controlplane
from virtualservice_operator_dev.controlplane import REPO_ROOT, _wait_until, ensure_binaries
from virtualservice_operator_dev.gotools import ISTIO_MODULE, module_version
from virtualservice_operator_dev.node import Node, install_runtime, unavailable_reason
from virtualservice_operator_dev.ociimage import ImageFile, write_image

ISTIO_VERSION = module_version("istio.io/istio")
ISTIO_NAMESPACE = "istio-system"
CLUSTER_DNS_IP = "10.0.0.10"  # in SERVICE_CIDR, as kubeadm's <range>.10
# Tags may not hold '+': the pseudo-version fits as it is.
PILOT_IMAGE = f"localhost/istio/pilot:{ISTIO_VERSION}"
ECHO_IMAGE = f"localhost/istio/echo:{ISTIO_VERSION}"
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-mesh.sh"
COREDNS_MANIFEST = REPO_ROOT / "hack" / "node" / "coredns.yaml"
DEFAULT_VALIDATOR = "istiod-default-validator"  # from Istio's base chart
XDS_PORT = 15010  # istiod's plaintext xDS (grpc-simple's server_uri)
ECHO_GRPC_PORT = 7070

# A VirtualService that Istio's CRD schema admits and istiod's validation denies (an
# RE2 regex that does not compile): the webhook is in force once it is refused.
KNOWN_BAD = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "VirtualService",
    "metadata": {"name": "istio-webhook-probe"},
    "spec": {
        "hosts": ["istio-webhook-probe"],
        "http": [
            {
                "match": [{"headers": {"x-probe": {"regex": "("}}}],
                "route": [{"destination": {"host": "istio-webhook-probe"}}],
            }
        ],
    },
}


def cache_dir() -> Path:
    return Path(os.environ.get("VSO_CACHE_DIR", REPO_ROOT / ".cache"))


def coredns_version() -> str:
    return module_version("github.com/coredns/coredns")


def coredns_image() -> str:
    return f"localhost/coredns/coredns:{coredns_version()}"


def build() -> Path:
    """Build (or find cached) Istio's binaries and CoreDNS; the Istio binaries' folder.
    Each build prints its time on stderr."""
    out = subprocess.run(
        ["nice", "-n", "10", "bash", str(BUILD_SCRIPT)],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    return Path(out.stdout.strip().splitlines()[-1])


def istio_module() -> Path:
    """The istio.io/istio module's folder in Go's module cache (downloaded and checked
    against the checksum database if absent): Istio's charts come from there."""
    out = subprocess.run(
        ["go", "mod", "download", "-json", f"istio.io/istio@{ISTIO_VERSION}"],
        cwd=ISTIO_MODULE,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "GOFLAGS": "-mod=mod"},
    )
    return Path(json.loads(out.stdout)["Dir"])


def charts() -> tuple[Path, Path]:
    """Istio's `base` and `istiod` (istio-discovery) charts."""
    module = istio_module() / "manifests" / "charts"
    return module / "base", module / "istio-control" / "istio-discovery"


def _image(name: str, files: list[ImageFile], entrypoint: list[str]) -> Path:
    """An image archive of static binaries, written once per reference into the cache."""
    safe = name.replace("/", "_").replace(":", "_")
    archive = cache_dir() / "image" / f"{safe}.oci.tar"
    if not archive.exists():
        tmp = archive.with_suffix(".tmp")
        write_image(tmp, name, files, entrypoint)
        tmp.rename(archive)
    return archive


def images(istio_bin: Path) -> list[Path]:
    """istiod's image (the binary where Istio's own image has it, so its chart's
    arguments apply), the echo app's, CoreDNS's."""
    coredns = istio_bin / "coredns"
    return [
        _image(
            PILOT_IMAGE,
            [ImageFile(istio_bin / "pilot-discovery", "usr/local/bin/pilot-discovery")],
            ["/usr/local/bin/pilot-discovery"],
        ),
        _image(
            ECHO_IMAGE,
            [
                ImageFile(istio_bin / "server", "usr/local/bin/server"),
                ImageFile(istio_bin / "client", "usr/local/bin/client"),
            ],
            ["/usr/local/bin/server"],
        ),
        _image(coredns_image(), [ImageFile(coredns, "coredns")], ["/coredns"]),
    ]


def helm(node: Node, *args: str, timeout: float = 300) -> str:
    result = subprocess.run(
        [str(node.bin_dir / "helm"), "--kubeconfig", str(node.admin_kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"helm {' '.join(args[:2])} failed: {result.stderr.strip()}")
    return result.stdout


def webhook_denial(node: Node, namespace: str = "default") -> str | None:
    """istiod's message refusing KNOWN_BAD (a server-side dry run), or None while the
    webhook admits it (not ready: `failurePolicy: Ignore` until istiod patches it)."""
    status, body = node.api(
        "POST",
        f"/apis/networking.istio.io/v1/namespaces/{namespace}/virtualservices?dryRun=All",
        KNOWN_BAD,
    )
    message = body.get("message", "") if isinstance(body, dict) else str(body)
    # Not "failed calling webhook": that is an error reaching istiod, not its judgement.
    denied = 'admission webhook "validation.istio.io" denied the request'
    return message if status >= 400 and denied in message else None


def install_dns(node: Node, timeout: float) -> None:
    manifest = COREDNS_MANIFEST.read_text()
    manifest = manifest.replace("COREDNS_IMAGE", coredns_image())
    manifest = manifest.replace("CLUSTER_DNS_IP", CLUSTER_DNS_IP)
    node.kubectl("apply", "-f", "-", input=manifest)
    node.kubectl(
        "rollout", "status", "deployment/coredns", "-n", "kube-system",
        f"--timeout={int(timeout)}s", timeout=timeout + 10,
    )  # fmt: skip


def install_istio(node: Node, timeout: float) -> None:
    """Istio's charts, as its helm install guide does: base, then istiod; then wait for
    istiod's webhook to be in force."""
    base, istiod = charts()
    wait = ["--wait", f"--timeout={int(timeout)}s"]
    helm(node, "upgrade", "--install", "istio-base", str(base), "-n", ISTIO_NAMESPACE,
         "--create-namespace", *wait, timeout=timeout + 30)  # fmt: skip
    helm(
        node, "upgrade", "--install", "istiod", str(istiod), "-n", ISTIO_NAMESPACE,
        "--set", f"image={PILOT_IMAGE}",
        "--set", "global.imagePullPolicy=Never",
        # One node: one istiod, no HorizontalPodAutoscaler.
        "--set", "autoscaleEnabled=false",
        *wait, timeout=timeout + 30,
    )  # fmt: skip
    # istiod patches in the webhook's CA, then turns it to `Fail` once its own dry run of a
    # bad object is denied: from then on nothing Istio's validation refuses gets in.
    _wait_until(
        lambda: webhook_denial(node) is not None and failure_policy(node) == "Fail",
        timeout,
        "istiod's webhook in force (a bad object denied, failurePolicy Fail)",
    )


def failure_policy(node: Node) -> str | None:
    """The failurePolicy of `istiod-default-validator`, None while it has none yet."""
    path = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/"
    status, body = node.api("GET", path + DEFAULT_VALIDATOR)
    webhooks = body.get("webhooks", []) if status == 200 else []
    policies = {w.get("failurePolicy") for w in webhooks}
    return policies.pop() if len(policies) == 1 else None


class Mesh(Node):
    """A node with cluster DNS and Istio's control plane (start() installs them)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cluster_dns=CLUSTER_DNS_IP, **kwargs)

    def start(self, timeout: float = 300.0) -> None:
        began = time.monotonic()
        istio_bin = build()
        super().start(timeout)
        try:
            step = time.monotonic()
            for archive in images(istio_bin):
                self.import_image(archive)
            install_dns(self, timeout)
            self.timings["dns"] = time.monotonic() - step
            step = time.monotonic()
            install_istio(self, timeout)
            self.timings["istio"] = time.monotonic() - step
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began


def xds_bootstrap(namespace: str, ip: str, pod: str, server: str) -> str:
    """Istio's agentless bootstrap (the `grpc-simple` template's): xDS from istiod at
    `server`, plaintext; a node id of type sidecar with the client's IP and Pod name;
    the namespace in the node's metadata (without it istiod takes it from the id)."""
    return json.dumps(
        {
            "xds_servers": [
                {
                    "server_uri": server,
                    "channel_creds": [{"type": "insecure"}],
                    "server_features": ["xds_v3"],
                }
            ],
            "node": {
                "id": f"sidecar~{ip}~{pod}.{namespace}~{namespace}.svc.cluster.local",
                "metadata": {"GENERATOR": "grpc", "NAMESPACE": namespace},
            },
        }
    )


def proxyless_env(namespace: str) -> list[dict[str, Any]]:
    """A container's environment for a proxyless gRPC client: the bootstrap given inline
    (grpc-go and grpcio read GRPC_XDS_BOOTSTRAP_CONFIG), istiod found by cluster DNS. The
    kubelet expands $(POD_IP) and $(POD_NAME) when it starts the container."""
    field = {"POD_IP": "status.podIP", "POD_NAME": "metadata.name"}
    server = f"dns:///istiod.{ISTIO_NAMESPACE}.svc:{XDS_PORT}"
    bootstrap = xds_bootstrap(namespace, "$(POD_IP)", "$(POD_NAME)", server)
    return [
        *({"name": k, "valueFrom": {"fieldRef": {"fieldPath": v}}} for k, v in field.items()),
        {"name": "GRPC_XDS_BOOTSTRAP_CONFIG", "value": bootstrap},
    ]


def _make(data: Path) -> Node:
    return Mesh(bin_dir=ensure_binaries(), work_dir=data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m virtualservice_operator_dev.mesh")
    parser.add_argument("command", choices=["up", "serve", "build"])
    parser.add_argument("--dir", type=Path, default=REPO_ROOT / ".cluster")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    directory: Path = args.dir.resolve()
    if args.command == "build":
        print(build())
        return 0
    if args.command == "serve":
        return controlplane._serve(directory, _make, "mesh")
    if (reason := unavailable_reason()) is not None:
        print(f"make mesh: {reason}", file=sys.stderr)
        return 1
    install_runtime()
    build()  # here, with its times printed, not inside the background start's deadline
    return controlplane._up(directory, args.timeout, "virtualservice_operator_dev.mesh", "mesh")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
