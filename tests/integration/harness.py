"""Running the operator for a test: as its own process, with the ServiceAccount and RBAC
that deployments/deployment.yaml grants (so every test also proves that RBAC suffices)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from virtualservice_operator.runtime.metrics import parse_exposition
from virtualservice_operator_dev.controlplane import ControlPlane, free_port
from virtualservice_operator_dev.operator import spawn_operator

T = TypeVar("T")
OPERATOR_NS = "virtualservice-operator-system"
WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "DELETE", "APPLY", "CREATE", "UPDATE"})


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def sample_sum(parsed: Samples, name: str, /, **labels: str) -> float:
    """The sum of `name`'s samples carrying `labels` (a label may be called `name`), in a
    scrape parsed by `parse_exposition`: compare two scrapes taken at different times."""
    return sum(
        v
        for (n, ls), v in parsed.items()
        if n == name and all((k, val) in ls for k, val in labels.items())
    )


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 15.0,
    what: str = "condition",
    interval: float = 0.05,
) -> T:
    """Poll until `predicate()` is truthy; return its value. Fails with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def warm_up_crd(cp: ControlPlane) -> None:
    """kube-apiserver takes ~2 s over the first write to a freshly installed CRD (storage
    set-up): pay it once at start rather than inside the first test's deadlines. The CRD
    is Istio's own (installed by ControlPlane), so this write also proves it is served."""
    path = "/apis/networking.istio.io/v1/namespaces/default/virtualservices"
    body = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "warm-up"},
        "spec": {"hosts": ["warm-up"]},
    }
    status, out = cp.api("POST", path, body)
    assert status in (201, 409), f"Istio's VirtualService CRD not usable: {status} {out}"
    cp.api("DELETE", f"{path}/warm-up")


class Api:
    """Small synchronous admin client for assertions and set-up."""

    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp

    def get(self, path: str) -> Any | None:
        status, body = self.cp.api("GET", path)
        if status == 404:
            return None
        assert status == 200, (status, body)
        return body

    def create(self, path: str, body: dict[str, Any]) -> Any:
        status, out = self.cp.api("POST", path, body)
        assert status in (200, 201), (status, out)
        return out

    def put(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        return self.cp.api("PUT", path, body)

    def patch(self, path: str, body: dict[str, Any]) -> Any:
        status, out = self.cp.api("PATCH", path, body, "application/merge-patch+json")
        assert status == 200, (status, out)
        return out

    def delete(self, path: str) -> int:
        status, _ = self.cp.api("DELETE", path)
        return status

    # conveniences
    def service(self, ns: str, name: str) -> Any | None:
        return self.get(f"/api/v1/namespaces/{ns}/services/{name}")

    def vs(self, ns: str, name: str) -> Any | None:
        return self.get(f"/apis/networking.istio.io/v1/namespaces/{ns}/virtualservices/{name}")

    def create_service(
        self,
        ns: str,
        name: str,
        ports: list[int] | list[dict[str, Any]] | None = None,
        labels: dict[str, str] | None = None,
    ) -> Any:
        port_list = [
            p if isinstance(p, dict) else {"name": f"http-{p}", "port": p} for p in (ports or [80])
        ]
        body = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
            "spec": {"ports": port_list, "selector": {"app": name}},
        }
        return self.create(f"/api/v1/namespaces/{ns}/services", body)

    def delete_service(self, ns: str, name: str) -> int:
        return self.delete(f"/api/v1/namespaces/{ns}/services/{name}")

    def write_config(self, name: str, config: dict[str, Any] | str) -> None:
        text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": OPERATOR_NS},
            "data": {"config.yaml": text},
        }
        path = f"/api/v1/namespaces/{OPERATOR_NS}/configmaps"
        existing = self.get(f"{path}/{name}")
        if existing is None:
            self.create(path, body)
        else:
            body["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
            status, out = self.put(f"{path}/{name}", body)
            assert status == 200, (status, out)

    def writes_by_resource(self) -> Counter[tuple[str, str]]:
        """apiserver_request_total for write verbs, by (verb, resource), all clients."""
        counts: Counter[tuple[str, str]] = Counter()
        for line in self.cp.api_get("/metrics").splitlines():
            if line.startswith("apiserver_request_total{"):
                labels, value = line.rsplit(" ", 1)
                fields = dict(re.findall(r'(\w+)="([^"]*)"', labels))
                if fields.get("verb") in WRITE_VERBS:
                    counts[(fields["verb"], fields.get("resource", ""))] += round(float(value))
        return counts

    def write_count(self, resources: tuple[str, ...]) -> dict[str, int]:
        """Writes to `resources` by verb. Always name the resources: the API server's own
        identity Lease heartbeat writes every few seconds and would make counts flaky."""
        counts: dict[str, int] = {}
        for (verb, resource), n in self.writes_by_resource().items():
            if resource in resources:
                counts[verb] = counts.get(verb, 0) + n
        return counts


class OperatorProcess:
    """`virtualservice-operator run` as a child process with its own ConfigMap."""

    def __init__(
        self,
        cp: ControlPlane,
        kubeconfig: Path,
        config_map: str,
        log_path: Path,
        extra_args: list[str] | None = None,
    ) -> None:
        self.cp = cp
        self.kubeconfig = kubeconfig
        self.config_map = config_map
        self.log_path = log_path
        self.extra_args = extra_args or []
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait_ready: bool = True) -> OperatorProcess:
        self.proc = spawn_operator(
            self.kubeconfig,
            self.metrics_port,
            self.health_port,
            self.log_path,
            f"-config-map-name={self.config_map}",
            "-zap-log-level=debug",
            *self.extra_args,
        )
        if wait_ready:
            wait_for(self.ready, 30, f"operator ready (log: {self.log_path})")
        return self

    def ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(
                f"operator exited with {self.proc.returncode}:\n{self.logs()[-3000:]}"
            )
        return self._http(self.health_port, "/readyz")[0] == 200

    def _http(self, port: int, path: str, timeout: float = 5) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
                return int(r.status), bytes(r.read())
        except urllib.error.HTTPError as e:
            return int(e.code), bytes(e.read())
        except OSError:
            return 0, b""

    def metrics(self) -> str:
        status, body = self._http(self.metrics_port, "/metrics")
        assert status == 200
        return body.decode()

    def get(self, port_name: str, path: str, timeout: float = 60) -> tuple[int, bytes]:
        return self._http(
            self.metrics_port if port_name == "metrics" else self.health_port, path, timeout
        )

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def metric(self, name: str, /, **labels: str) -> float:
        """The sum of `name`'s samples carrying `labels`, scraped now."""
        return sample_sum(parse_exposition(self.metrics()), name, **labels)

    def idle(self, reconciles: int = 0) -> bool:
        """At least `reconciles` successful passes, and nothing queued or being reconciled."""
        return (
            self.metric("controller_runtime_reconcile_total", result="success") >= reconciles
            and self.metric("workqueue_depth") == 0
            and self.metric("controller_runtime_active_workers") == 0
        )

    def swept(self) -> bool:
        """The start-up resync's orphan sweep is over. It runs outside the queue and deletes
        placeholders that earlier tests left in namespaces this operator does not watch, so
        a test that counts writes waits for it as well as for an idle queue."""
        return '"orphan sweep done"' in self.logs()

    def log_lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.logs().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)
