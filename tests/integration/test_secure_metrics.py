"""The metrics port locked down (-metrics-secure) against the real API server: the
operator, running with only the RBAC deployments/deployment.yaml grants, asks the API
server who each caller is (TokenReview) and whether it may get the path
(SubjectAccessReview). The callers are real ServiceAccounts with real tokens, bound as
docs/monitoring.md says: Prometheus to virtualservice-operator-metrics-reader, a
profiler to a ClusterRole for /debug/pprof/*, and one bound to nothing."""

from __future__ import annotations

import gzip
import http.client
import ssl
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.conftest import OperatorFactory
from tests.integration.harness import Api
from virtualservice_operator.serving.cert import self_signed
from virtualservice_operator_dev.controlplane import ControlPlane

pytestmark = pytest.mark.integration

REVIEWS = ("tokenreviews", "subjectaccessreviews")


@dataclass(frozen=True)
class Callers:
    prometheus: str  # bound to virtualservice-operator-metrics-reader
    profiler: str  # bound to a ClusterRole for /debug/pprof/*
    nobody: str  # authenticated, bound to nothing


@pytest.fixture(scope="module")
def callers(control_plane: ControlPlane, operator_kubeconfig: Path) -> Iterator[Callers]:
    """ServiceAccounts and bindings; operator_kubeconfig has applied deployment.yaml (and so
    the metrics-reader ClusterRole) first."""
    kubectl = control_plane.kubectl
    ns = f"scrapers-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", ns)
    for name in ("prometheus", "profiler", "nobody"):
        kubectl("create", "serviceaccount", name, "-n", ns)
    # The command docs/monitoring.md gives for Prometheus.
    kubectl(
        "create",
        "clusterrolebinding",
        f"{ns}-metrics-reader",
        "--clusterrole=virtualservice-operator-metrics-reader",
        f"--serviceaccount={ns}:prometheus",
    )
    kubectl(
        "create", "clusterrole", f"{ns}-pprof", "--verb=get", "--non-resource-url=/debug/pprof/*"
    )
    kubectl(
        "create",
        "clusterrolebinding",
        f"{ns}-pprof",
        f"--clusterrole={ns}-pprof",
        f"--serviceaccount={ns}:profiler",
    )

    def token(name: str) -> str:
        return kubectl("create", "token", name, "-n", ns).stdout.strip()

    yield Callers(token("prometheus"), token("profiler"), token("nobody"))
    for kind, name in (
        ("clusterrolebinding", f"{ns}-metrics-reader"),
        ("clusterrolebinding", f"{ns}-pprof"),
        ("clusterrole", f"{ns}-pprof"),
    ):
        kubectl("delete", kind, name, check=False)


_NO_VERIFY = ssl.create_default_context()
_NO_VERIFY.check_hostname = False
_NO_VERIFY.verify_mode = ssl.CERT_NONE  # the self-signed certificate proves nothing to verify


def _https(
    port: int,
    path: str,
    token: str | None = None,
    context: ssl.SSLContext = _NO_VERIFY,
    host: str = "127.0.0.1",
) -> tuple[int, bytes]:
    conn = http.client.HTTPSConnection(host, port, timeout=30, context=context)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _plain(port: int, path: str) -> int:
    """Status of a plain-HTTP GET; 0 when no HTTP answer comes (a TLS port)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return 0
    finally:
        conn.close()


def test_secure_metrics_and_pprof_admit_only_allowed_callers(
    operator: OperatorFactory, callers: Callers, api: Api
) -> None:
    proc = operator.start(extra_args=["-metrics-secure=true", "-enable-profiling=true"])
    port = proc.metrics_port
    assert _plain(port, "/metrics") != 200  # HTTPS only

    # /metrics: 401 without a token or with one the API server does not know, 403 for
    # a ServiceAccount without the metrics-reader role, 200 for one with it.
    assert _https(port, "/metrics")[0] == 401
    assert _https(port, "/metrics", "not-a-token")[0] == 401
    status, body = _https(port, "/metrics", callers.nobody)
    assert status == 403
    assert b"Authorization denied for user system:serviceaccount:scrapers-" in body
    status, body = _https(port, "/metrics", callers.prometheus)
    assert status == 200
    assert b"controller_runtime_reconcile_total" in body
    assert _https(port, "/metrics", callers.profiler)[0] == 403

    # pprof: the same check on its own path; the metrics reader may not profile.
    for path in ("/debug/pprof/profile?seconds=0.2", "/debug/pprof/heap?seconds=0.2"):
        assert _https(port, path)[0] == 401, path
        assert _https(port, path, callers.nobody)[0] == 403, path
        assert _https(port, path, callers.prometheus)[0] == 403, path
        status, profile = _https(port, path, callers.profiler)
        assert status == 200, (path, profile[:200])
        assert gzip.decompress(profile), path  # a gzipped pprof message

    # Answers are cached: more scrapes within the minute send no review at all.
    before = api.write_count(REVIEWS)
    for _ in range(5):
        assert _https(port, "/metrics", callers.prometheus)[0] == 200
    assert api.write_count(REVIEWS) == before

    # The health port stays plain HTTP for the kubelet's probes.
    assert proc.get("health", "/readyz")[0] == 200


def test_metrics_cert_path_is_served_and_pprof_is_404_without_enable_profiling(
    operator: OperatorFactory, callers: Callers, tmp_path: Path
) -> None:
    cert, key = self_signed(["localhost", "127.0.0.1"])
    (tmp_path / "tls.crt").write_bytes(cert)
    (tmp_path / "tls.key").write_bytes(key)
    proc = operator.start(extra_args=["-metrics-secure=true", f"-metrics-cert-path={tmp_path}"])
    trust = ssl.create_default_context(cadata=cert.decode())  # verified, host name included
    port = proc.metrics_port
    assert _https(port, "/metrics", callers.prometheus, trust, "localhost")[0] == 200
    assert _https(port, "/metrics", None, trust, "localhost")[0] == 401
    for path in ("/debug/pprof/profile?seconds=1", "/debug/pprof/heap"):
        assert _https(port, path, callers.profiler, trust)[0] == 404, path


def test_plain_http_without_secure_serving_and_pprof_off_by_default(
    operator: OperatorFactory,
) -> None:
    """The guide's `curl http://localhost:8080/metrics`, as written: no TLS, no token."""
    proc = operator.start()
    assert "controller_runtime_reconcile_total" in proc.metrics()
    assert proc.get("metrics", "/debug/pprof/profile?seconds=1")[0] == 404
    assert proc.get("metrics", "/debug/pprof/heap")[0] == 404


def test_a_certificate_directory_without_the_pair_stops_the_start_with_the_fix(
    operator: OperatorFactory, tmp_path: Path
) -> None:
    proc = operator.start(
        extra_args=["-metrics-secure=true", f"-metrics-cert-path={tmp_path}"], wait_ready=False
    )
    assert proc.proc is not None
    assert proc.proc.wait(timeout=60) == 1
    line = next(
        entry for entry in proc.log_lines() if str(entry.get("msg", "")).startswith("cannot start")
    )
    assert f"-metrics-cert-path={tmp_path}: cannot load tls.crt and tls.key" in line["msg"]
    assert "kubernetes.io/tls Secret" in line["msg"]
