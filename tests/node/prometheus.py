"""A Prometheus Pod on the node, configured as the Prometheus Operator would configure it
from the chart's ServiceMonitor and PrometheusRule (no Prometheus Operator runs here:
its CRDs are stand-ins, tests/integration/conftest.py's `monitoring_crds`).

The image is the `prometheus` binary built from the pinned module
(hack/build-prometheus.sh) in a one-layer image, as the node's metrics-server is: no
registry can be reached. The Pod runs in namespace `monitoring`, labelled
`monitoring: enabled` (what the chart's NetworkPolicy admits to the metrics port), as a
ServiceAccount that may discover Pods and Services, and is bound to the operator's
metrics-reader ClusterRole.

The translation covers what the chart's ServiceMonitor uses: the Service selector and
namespace, the port by name, path, interval, scheme, `authorization` credentials (a
Secret key, written to a file Prometheus reads) and `tlsConfig` (`ca` from a Secret key,
`serverName`, `insecureSkipVerify`). As the Prometheus Operator does, the job label is
the Service's name and namespace/pod/service labels come from discovery.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import Any

import yaml
from bench.core import http_get

from tests.integration.harness import wait_for
from virtualservice_operator_dev.controlplane import REPO_ROOT
from virtualservice_operator_dev.gotools import module_version
from virtualservice_operator_dev.node import Node
from virtualservice_operator_dev.ociimage import ImageFile, write_image

NAMESPACE = "monitoring"
NAME = "prometheus"
PORT = 9090
SECRETS_DIR = "/etc/prometheus/secrets"
SA_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
SCRAPE_INTERVAL = "5s"

Obj = dict[str, Any]


def build_image(node: Node, work: Path) -> str:
    """prometheus from the pinned module, packed and imported into the node's containerd."""
    out = subprocess.run(
        ["bash", str(REPO_ROOT / "hack" / "build-prometheus.sh")],
        check=True,
        capture_output=True,
        text=True,
    )
    binary = Path(out.stdout.strip()) / "prometheus"
    version = module_version("github.com/prometheus/prometheus")
    image = f"localhost/prometheus:{version}"
    if image not in node.ctr("images", "ls", "-q").stdout.split():
        archive = work / "prometheus.tar"
        write_image(archive, image, [ImageFile(binary, "bin/prometheus")], ["/bin/prometheus"])
        node.import_image(archive)
    return image


def _secret_value(node: Node, namespace: str, ref: Obj) -> str:
    """The value of a SecretKeySelector ({name, key}), waiting for it to be filled (a
    ServiceAccount token Secret is filled by the controller-manager)."""

    def value() -> str | None:
        out = node.kubectl("get", "secret", ref["name"], "-n", namespace, "-o", "json", check=False)
        if out.returncode != 0:
            return None
        data = json.loads(out.stdout).get("data") or {}
        return base64.b64decode(data[ref["key"]]).decode() if ref["key"] in data else None

    return str(wait_for(value, 60, f"Secret {namespace}/{ref['name']} key {ref['key']}"))


def scrape_config(node: Node, monitor: Obj, files: dict[str, str]) -> list[Obj]:
    """The scrape configs of a ServiceMonitor; the Secret values it names go into `files`."""
    spec, namespace = monitor["spec"], monitor["metadata"]["namespace"]
    jobs = []
    for i, endpoint in enumerate(spec["endpoints"]):
        name = f"serviceMonitor/{namespace}/{monitor['metadata']['name']}/{i}"
        keep = [
            {
                "source_labels": [f"__meta_kubernetes_service_label_{_label_name(k)}"],
                "regex": v,
                "action": "keep",
            }
            for k, v in spec["selector"]["matchLabels"].items()
        ]
        keep.append(
            {
                "source_labels": ["__meta_kubernetes_endpointslice_port_name"],
                "regex": endpoint["port"],
                "action": "keep",
            }
        )
        relabel = [
            *keep,
            *(
                {"source_labels": [f"__meta_kubernetes_{source}"], "target_label": target}
                for source, target in (
                    ("namespace", "namespace"),
                    ("service_name", "service"),
                    ("pod_name", "pod"),
                    ("service_name", "job"),
                )
            ),
        ]
        job: Obj = {
            "job_name": name,
            "metrics_path": endpoint.get("path", "/metrics"),
            "scrape_interval": SCRAPE_INTERVAL,
            "scheme": endpoint.get("scheme", "http"),
            "kubernetes_sd_configs": [
                {
                    "role": "endpointslice",
                    "namespaces": {"names": spec["namespaceSelector"]["matchNames"]},
                }
            ],
            "relabel_configs": relabel,
        }
        auth = endpoint.get("authorization")
        if auth:
            file = f"token-{i}"
            files[file] = _secret_value(node, namespace, auth["credentials"])
            job["authorization"] = {
                "type": auth.get("type", "Bearer"),
                "credentials_file": f"{SECRETS_DIR}/{file}",
            }
        tls = endpoint.get("tlsConfig")
        if tls:
            tls_config: Obj = {}
            if "ca" in tls:
                file = f"ca-{i}.crt"
                files[file] = _secret_value(node, namespace, tls["ca"]["secret"])
                tls_config["ca_file"] = f"{SECRETS_DIR}/{file}"
            if "serverName" in tls:
                tls_config["server_name"] = tls["serverName"]
            if tls.get("insecureSkipVerify"):
                tls_config["insecure_skip_verify"] = True
            job["tls_config"] = tls_config
        jobs.append(job)
    return jobs


def _label_name(label: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in label)


class Prometheus:
    """The Pod, its configuration Secret and RBAC; `api()` asks its HTTP API."""

    def __init__(self, node: Node, image: str, metrics_reader: str) -> None:
        self.node = node
        self.image = image
        self.metrics_reader = metrics_reader
        self.ip = ""

    def setup(self) -> None:
        """Namespace, ServiceAccount, discovery RBAC and the metrics-reader binding."""
        objects: list[Obj] = [
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": NAMESPACE, "labels": {"monitoring": "enabled"}},
            },
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": NAME, "namespace": NAMESPACE},
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": f"{NAME}-discovery"},
                "rules": [
                    {
                        "apiGroups": [""],
                        "resources": ["services", "endpoints", "pods"],
                        "verbs": ["get", "list", "watch"],
                    },
                    {
                        "apiGroups": ["discovery.k8s.io"],
                        "resources": ["endpointslices"],
                        "verbs": ["get", "list", "watch"],
                    },
                ],
            },
            *(
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "ClusterRoleBinding",
                    "metadata": {"name": f"{NAME}-{role}"},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "ClusterRole",
                        "name": name,
                    },
                    "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}],
                }
                for role, name in (
                    ("discovery", f"{NAME}-discovery"),
                    ("metrics-reader", self.metrics_reader),
                )
            ),
        ]
        self.node.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))

    def start(self, scrape_configs: list[Obj], rules: Obj, files: dict[str, str]) -> None:
        """(Re)start the Pod with these scrape configs and rules; wait until it is ready."""
        config = {
            "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": "5s"},
            "rule_files": [f"{SECRETS_DIR}/rules.yaml"],
            "scrape_configs": scrape_configs,
        }
        data = {
            **files,
            "prometheus.yaml": yaml.safe_dump(config),
            "rules.yaml": yaml.safe_dump(rules),
        }
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"{NAME}-config", "namespace": NAMESPACE},
            "stringData": data,
        }
        self.node.kubectl("delete", "pod", NAME, "-n", NAMESPACE, "--ignore-not-found", "--wait")
        self.node.kubectl(
            "delete", "secret", f"{NAME}-config", "-n", NAMESPACE, "--ignore-not-found"
        )
        self.node.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([secret, self._pod()]))
        self.node.kubectl(
            "wait",
            "pod",
            NAME,
            "-n",
            NAMESPACE,
            "--for=condition=Ready",
            "--timeout=120s",
            timeout=130,
        )
        pod = json.loads(
            self.node.kubectl("get", "pod", NAME, "-n", NAMESPACE, "-o", "json").stdout
        )
        self.ip = pod["status"]["podIP"]

    def _pod(self) -> Obj:
        restricted = {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": {"app": NAME}},
            "spec": {
                "serviceAccountName": NAME,
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": 65534,
                    "runAsGroup": 65534,
                    "fsGroup": 65534,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [
                    {
                        "name": NAME,
                        "image": self.image,
                        "imagePullPolicy": "Never",
                        "args": [
                            f"--config.file={SECRETS_DIR}/prometheus.yaml",
                            "--storage.tsdb.path=/prometheus",
                            f"--web.listen-address=:{PORT}",
                        ],
                        "ports": [{"name": "web", "containerPort": PORT}],
                        "readinessProbe": {
                            "httpGet": {"path": "/-/ready", "port": PORT},
                            "periodSeconds": 2,
                        },
                        "securityContext": restricted,
                        "volumeMounts": [
                            {"name": "config", "mountPath": SECRETS_DIR, "readOnly": True},
                            {"name": "data", "mountPath": "/prometheus"},
                        ],
                    }
                ],
                "volumes": [
                    {"name": "config", "secret": {"secretName": f"{NAME}-config"}},
                    {"name": "data", "emptyDir": {}},
                ],
            },
        }

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>: its `data`, or an AssertionError with Prometheus's error."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        status, body = http_get(f"http://{self.ip}:{PORT}/api/v1/{path}{query}", timeout=20)
        assert status == 200, f"{path} {params}: HTTP {status} {body[:500]!r}"
        answer = json.loads(body)
        assert answer["status"] == "success", answer
        return answer["data"]

    def query(self, expr: str) -> list[Obj]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return list(data["result"])

    def targets(self, job: str) -> list[Obj]:
        return [
            t
            for t in self.api("targets", state="active")["activeTargets"]
            if t["scrapePool"] == job
        ]

    def alerts(self, name: str) -> list[Obj]:
        return [a for a in self.api("alerts")["alerts"] if a["labels"]["alertname"] == name]

    def wait_targets_up(self, job: str, count: int, timeout: float = 90) -> list[Obj]:
        def up() -> list[Obj] | None:
            targets = self.targets(job)
            healthy = [t for t in targets if t["health"] == "up"]
            return targets if len(targets) == count == len(healthy) else None

        began = time.monotonic()
        try:
            return list(wait_for(up, timeout, f"{count} targets of {job} up"))
        except AssertionError:
            raise AssertionError(
                f"after {time.monotonic() - began:.0f}s, targets of {job}: {self.targets(job)}"
            ) from None
