"""Istio's own VirtualService CRD on the real API server, and `check-config --server`.

The control plane installs the CRD taken from the pinned istio.io/api module. The
offline validator (schema.py) is held to what the API server says about the same
manifests, and `check-config --server` is run against it: a good template passes, a bad
one is refused with the API server's message, and questions it cannot answer exit 3.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.conftest import Namespaces
from virtualservice_operator import cli
from virtualservice_operator.domain.config import DEFAULT_TEMPLATE
from virtualservice_operator.domain.schema import istio_schema, validate_virtual_service
from virtualservice_operator_dev.controlplane import ControlPlane
from virtualservice_operator_dev.istio import VIRTUAL_SERVICE_CRD

pytestmark = pytest.mark.integration


def test_the_installed_crd_is_istios(control_plane: ControlPlane) -> None:
    status, crd = control_plane.api(
        "GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{VIRTUAL_SERVICE_CRD}"
    )
    assert status == 200
    assert crd["metadata"]["labels"]["app"] == "istio-pilot"  # Istio's generator's label
    versions = {v["name"]: v for v in crd["spec"]["versions"]}
    assert all(versions[v]["served"] for v in istio_schema().served)
    assert versions[istio_schema().storage]["storage"] is True


def _manifest(ns: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "VirtualService",
        "metadata": {"generateName": "probe-", "namespace": ns},
        "spec": {
            "hosts": ["cart"],
            "http": [
                {
                    "match": [{"headers": {"x-developer": {"exact": "qa"}}, "port": 80}],
                    "timeout": "5s",
                    "route": [{"destination": {"host": "cart.qa.svc.cluster.local"}}],
                },
                {"route": [{"destination": {"host": "cart", "port": {"number": 80}}}]},
            ],
        },
    }


def _set(manifest: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(manifest)
    node: Any = out
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return out


# (where, value, words the API server's message holds): each breaks Istio's schema.
BROKEN = [
    (("spec", "hosts"), "cart", "spec.hosts"),
    (("spec", "http", 0, "route", 0, "destination", "hosts"), "x", "hosts"),
    (("spec", "http", 1, "route", 0, "destination", "port", "number"), -1, "number"),
    (("spec", "http", 0, "timeout"), "5x", "timeout"),
    (("spec", "http", 0, "match", 0, "headers", "x-developer", "prefix"), "q", "x-developer"),
    (("spec", "http", 0, "match", 0, "port"), "80", "port"),
    (("spec", "http", 1, "route", 0, "weight"), True, "weight"),
]


def _server_says(cp: ControlPlane, manifest: dict[str, Any]) -> tuple[int, str]:
    ns = manifest["metadata"]["namespace"]
    status, body = cp.api(
        "POST",
        f"/apis/networking.istio.io/v1beta1/namespaces/{ns}/virtualservices"
        "?dryRun=All&fieldValidation=Strict",
        manifest,
    )
    return status, str(body.get("message", "")) if isinstance(body, dict) else str(body)


def test_offline_validation_agrees_with_the_api_server(
    namespaces: Namespaces, control_plane: ControlPlane
) -> None:
    good = _manifest(namespaces.default)
    assert validate_virtual_service(good) == []
    assert _server_says(control_plane, good)[0] == 201
    for path, value, words in BROKEN:
        bad = _set(good, path, value)
        offline = validate_virtual_service(bad)
        status, message = _server_says(control_plane, bad)
        assert status in (400, 422), (path, status, message)
        assert words in message, (path, message)
        assert offline, f"{path}: the API server refuses it ({message}) but offline passes"
        assert any(words in v.path for v in offline), (path, offline)


@pytest.mark.parametrize(
    "duration",
    ["1ms", "5s", "1.5m", "1h30m", ".5s", "1000us", "0", "0.5ms", "5", "5 s", "-1s", "1d"],
)
def test_durations_judged_as_the_api_server_judges_them(
    namespaces: Namespaces, control_plane: ControlPlane, duration: str
) -> None:
    manifest = _set(_manifest(namespaces.default), ("spec", "http", 0, "timeout"), duration)
    status, message = _server_says(control_plane, manifest)
    assert status in (201, 422), message
    assert (validate_virtual_service(manifest) == []) == (status == 201), message


def _config(tmp_path: Path, ns: Namespaces, template: str, name: str = "config.yaml") -> str:
    body = {
        "defaultNamespace": ns.default,
        "developerNamespaces": ns.developers,
        "virtualServiceTemplate": template,
    }
    path = tmp_path / name
    path.write_text(yaml.safe_dump(body))
    return str(path)


def _check(
    capsys: pytest.CaptureFixture[str], kubeconfig: Path, config: str
) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(["check-config", "--server", "--kubeconfig", str(kubeconfig), config])
    out, err = capsys.readouterr()
    return code, out, err


def test_check_config_server_accepts_a_good_template_and_stores_nothing(
    namespaces: Namespaces,
    control_plane: ControlPlane,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = _config(tmp_path, namespaces, DEFAULT_TEMPLATE)
    code, out, err = _check(capsys, control_plane.admin_kubeconfig, config)
    assert code == 0, out + err
    assert "server OK" in out and f"namespace {namespaces.default}" in out
    listed = control_plane.kubectl("get", "virtualservices", "-n", namespaces.default, "-o", "name")
    assert listed.stdout.strip() == ""  # a dry run: nothing stored


def test_check_config_server_refuses_what_only_the_server_knows(
    namespaces: Namespaces,
    control_plane: ControlPlane,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A label value with a space: the offline schema (spec only) has nothing against it,
    # the API server's object-metadata validation does.
    template = DEFAULT_TEMPLATE.replace(
        "managed-by: virtualservice-operator", "managed-by: virtualservice-operator\n    team: a b"
    )
    config = _config(tmp_path, namespaces, template)
    assert cli.main(["check-config", config]) == 0  # offline: fine
    code, out, err = _check(capsys, control_plane.admin_kubeconfig, config)
    assert code == 1, out + err
    assert "server: refused a sample VirtualService" in out
    assert "metadata.labels" in out and "a b" in out  # the API server's own message


def test_check_config_server_cannot_answer_exits_3(
    namespaces: Namespaces,
    control_plane: ControlPlane,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A default namespace that does not exist.
    missing = Namespaces(control_plane, "x", f"absent-{namespaces.suffix}", [])
    code, out, err = _check(
        capsys, control_plane.admin_kubeconfig, _config(tmp_path, missing, DEFAULT_TEMPLATE)
    )
    assert code == 3, out + err
    assert "cannot dry-run a VirtualService" in err and "not found" in err
    # A caller without 'create' on virtualservices: RBAC's refusal is no verdict on the
    # template.
    control_plane.kubectl("create", "serviceaccount", "reader", "-n", namespaces.default)
    kubeconfig = control_plane.service_account_kubeconfig(
        namespaces.default, "reader", tmp_path / "reader.kubeconfig"
    )
    config = _config(tmp_path, namespaces, DEFAULT_TEMPLATE)
    code, out, err = _check(capsys, kubeconfig, config)
    assert code == 3, out + err
    assert "forbidden" in err.lower()


class _IstioLikeWebhook(BaseHTTPRequestHandler):
    """Refuses, as Istio's validation webhook does for rules its schema cannot say, a
    VirtualService whose route weights do not add up to 100."""

    code = 400
    seen: list[str] = []  # noqa: RUF012 - one test at a time uses it

    def do_POST(self) -> None:
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        request = review["request"]
        self.seen.append(request["operation"] + (" dry-run" if request.get("dryRun") else ""))
        response: dict[str, Any] = {"uid": request["uid"], "allowed": True}
        for i, route in enumerate(request["object"]["spec"].get("http", [])):
            weights = [d.get("weight", 0) for d in route.get("route", [])]
            if any(weights) and sum(weights) != 100:
                message = f"configuration is invalid: http[{i}]: total weight {sum(weights)} != 100"
                response = {**response, "allowed": False}
                response["status"] = {"code": self.code, "message": message}
        body = json.dumps(
            {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def _webhook(cp: ControlPlane, namespace: str) -> Iterator[type[_IstioLikeWebhook]]:
    """An HTTPS validating webhook for VirtualServices in `namespace` only."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _IstioLikeWebhook)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cp.pki.serving_cert), str(cp.pki.serving_key))  # 127.0.0.1
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    name = f"istio-validator-{namespace}"
    config = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": "validation.istio.io",
                "clientConfig": {
                    "url": f"https://127.0.0.1:{server.server_port}/validate",
                    "caBundle": base64.b64encode(cp.pki.ca_cert.read_bytes()).decode(),
                },
                "rules": [
                    {
                        "apiGroups": ["networking.istio.io"],
                        "apiVersions": ["*"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["virtualservices"],
                    }
                ],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "failurePolicy": "Fail",
                "timeoutSeconds": 5,
            }
        ],
    }
    path = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"
    status, body = cp.api("POST", path, config)
    assert status == 201, body
    _IstioLikeWebhook.seen = []
    try:
        yield _IstioLikeWebhook
    finally:
        cp.api("DELETE", f"{path}/{name}")
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("code", [400, 403])
def test_check_config_server_is_judged_by_a_validating_webhook(
    namespaces: Namespaces,
    control_plane: ControlPlane,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    code: int,
) -> None:
    split = DEFAULT_TEMPLATE.replace(
        "        host: ${serviceName}.${defaultNamespace}.svc.cluster.local\n",
        "        host: ${serviceName}.${defaultNamespace}.svc.cluster.local\n      weight: 50\n",
    )
    assert split != DEFAULT_TEMPLATE
    good = _config(tmp_path, namespaces, DEFAULT_TEMPLATE, "good.yaml")
    bad = _config(tmp_path, namespaces, split, "bad.yaml")
    assert cli.main(["check-config", bad]) == 0  # Istio's schema has nothing against it
    with _webhook(control_plane, namespaces.default) as webhook:
        webhook.code = code
        result = _check(capsys, control_plane.admin_kubeconfig, good)
        assert result[0] == 0, result
        code_, out, err = _check(capsys, control_plane.admin_kubeconfig, bad)
        assert code_ == 1, out + err
        assert 'admission webhook "validation.istio.io" denied the request' in out
        assert "total weight 50 != 100" in out
        assert webhook.seen == ["CREATE dry-run", "CREATE dry-run"]
