"""The API client against a real kube-apiserver: each way a kubeconfig can authenticate,
token rotation after a 401, watch events bigger than any fixed line buffer, and the
operator's own HTTP/1.1 requests answered as through aiohttp's client."""

from __future__ import annotations

import json
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.conftest import Namespaces
from virtualservice_operator.kube import http1
from virtualservice_operator.kube.client import (
    CONFIGMAPS,
    ApiError,
    Forbidden,
    Kind,
    KubeClient,
    ServerError,
)
from virtualservice_operator.kube.credentials import EXEC_EXPIRY_MARGIN
from virtualservice_operator.kube.kubeconfig import ClusterAccess
from virtualservice_operator.kube.looptransport import LoopTransport
from virtualservice_operator.kube.transport import (
    Answer,
    ThreadTransport,
    TransportFactory,
    TransportOptions,
)
from virtualservice_operator.kube.transport import gunzip as real_gunzip
from virtualservice_operator.serving.cert import self_signed
from virtualservice_operator_dev.controlplane import ControlPlane

pytestmark = pytest.mark.integration

SELF_SUBJECT_REVIEWS = Kind(
    "authentication.k8s.io", "v1", "selfsubjectreviews", "SelfSubjectReview"
)


def _kubeconfig(cp: ControlPlane, path: Path, user: dict[str, Any]) -> Path:
    config = cp._kubeconfig({}, "test")
    config["users"] = [{"name": "test", "user": user}]
    path.write_text(yaml.safe_dump(config))
    return path


async def _whoami(client: KubeClient) -> str:
    review = await client.create(
        SELF_SUBJECT_REVIEWS,
        None,
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    )
    return str(review["status"]["userInfo"]["username"])


def _token(cp: ControlPlane, namespace: str, account: str) -> str:
    cp.kubectl("create", "serviceaccount", account, "-n", namespace)
    return cp.kubectl("create", "token", account, "-n", namespace).stdout.strip()


async def test_client_certificates_identify_the_admin(control_plane: ControlPlane) -> None:
    client = KubeClient.from_kubeconfig(str(control_plane.admin_kubeconfig))
    try:
        assert await _whoami(client) == "admin"
    finally:
        await client.close()


def _file_kubeconfig(cp: ControlPlane, directory: Path, cluster: dict[str, Any]) -> Path:
    """The admin's client certificate and key as files, relative to the kubeconfig."""
    (directory / "pki").mkdir(parents=True)
    for source, name in ((cp.pki.admin_cert, "admin.crt"), (cp.pki.admin_key, "admin.key")):
        (directory / "pki" / name).write_bytes(source.read_bytes())
    config = cp._kubeconfig(
        {"client-certificate": "pki/admin.crt", "client-key": "pki/admin.key"}, "t"
    )
    config["clusters"][0]["cluster"] = {"server": cp.url, **cluster}
    path = directory / "config"
    path.write_text(yaml.safe_dump(config))
    return path


async def test_ca_and_client_certificate_files_relative_to_the_kubeconfig(
    control_plane: ControlPlane, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "kc"
    path = _file_kubeconfig(control_plane, directory, {"certificate-authority": "pki/ca.crt"})
    (directory / "pki" / "ca.crt").write_bytes(control_plane.pki.ca_cert.read_bytes())
    monkeypatch.chdir(tmp_path)  # relative to the kubeconfig, not to the working directory
    client = KubeClient.from_kubeconfig(str(path))
    try:
        assert await _whoami(client) == "admin"
    finally:
        await client.close()


async def test_insecure_skip_tls_verify_without_a_ca(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    path = _file_kubeconfig(control_plane, tmp_path / "kc", {"insecure-skip-tls-verify": True})
    client = KubeClient.from_kubeconfig(str(path))
    try:
        assert await _whoami(client) == "admin"
    finally:
        await client.close()


async def test_a_wrong_ca_is_a_tls_error(control_plane: ControlPlane, tmp_path: Path) -> None:
    directory = tmp_path / "kc"
    path = _file_kubeconfig(control_plane, directory, {"certificate-authority": "pki/ca.crt"})
    unrelated, _ = self_signed(["localhost"])  # nothing the API server presents chains to it
    (directory / "pki" / "ca.crt").write_bytes(unrelated)
    seen: list[tuple[str, int]] = []
    client = KubeClient.from_kubeconfig(
        str(path), observe=lambda method, code, _: seen.append((method, code))
    )
    try:
        with pytest.raises(ServerError) as failed:
            await _whoami(client)
        assert failed.value.status == 0
        assert "certificate verify failed" in failed.value.message, failed.value.message
        assert seen == [("POST", 0)]
    finally:
        await client.close()


async def test_token_file_is_reread_after_a_401(
    control_plane: ControlPlane, namespaces: Namespaces, tmp_path: Path
) -> None:
    """The kubelet rotates a projected token in place: after a 401 the client re-reads
    the file and retries once, so the rotation costs no failed request."""
    ns = namespaces.default
    token_file = tmp_path / "token"
    token_file.write_text("not-a-valid-token\n")
    kubeconfig = _kubeconfig(control_plane, tmp_path / "kc", {"tokenFile": str(token_file)})
    seen: list[tuple[str, int]] = []
    client = KubeClient.from_kubeconfig(
        str(kubeconfig), observe=lambda method, code, _: seen.append((method, code))
    )
    try:
        with pytest.raises(ApiError) as refused:
            await _whoami(client)
        assert refused.value.status == 401
        assert seen == [("POST", 401)], "a 401 with an unchanged file is not retried"

        token_file.write_text(_token(control_plane, ns, "rotated") + "\n")  # "rotation"
        seen.clear()
        assert await _whoami(client) == f"system:serviceaccount:{ns}:rotated"
        assert seen == [("POST", 401), ("POST", 201)], "the cached token, then the new one"
    finally:
        await client.close()


EXEC_PLUGIN = """\
import json, sys
from pathlib import Path
here = Path(sys.argv[1])
runs = here / "runs"
runs.write_text(str(int(runs.read_text()) + 1) if runs.exists() else "1")
status = {"token": (here / "token").read_text().strip()}
if (here / "expires").exists():
    status["expirationTimestamp"] = (here / "expires").read_text().strip()
print(json.dumps({
    "apiVersion": "client.authentication.k8s.io/v1",
    "kind": "ExecCredential",
    "status": status,
}))
"""


def _exec_client(cp: ControlPlane, tmp_path: Path) -> KubeClient:
    plugin = tmp_path / "plugin.py"
    plugin.write_text(EXEC_PLUGIN)
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": sys.executable,
            "args": [str(plugin), str(tmp_path)],
            "interactiveMode": "Never",
        }
    }
    return KubeClient.from_kubeconfig(str(_kubeconfig(cp, tmp_path / "kc", user)))


def _runs(tmp_path: Path) -> int:
    return int((tmp_path / "runs").read_text())


async def test_exec_plugin_runs_once_and_again_after_a_401(
    control_plane: ControlPlane, namespaces: Namespaces, tmp_path: Path
) -> None:
    ns = namespaces.default
    (tmp_path / "token").write_text("not-a-valid-token")
    client = _exec_client(control_plane, tmp_path)
    try:
        with pytest.raises(ApiError) as refused:
            await _whoami(client)
        assert refused.value.status == 401
        assert _runs(tmp_path) == 2, "run, 401, run again, same token: give up"

        (tmp_path / "token").write_text(_token(control_plane, ns, "exec"))
        for _ in range(3):
            assert await _whoami(client) == f"system:serviceaccount:{ns}:exec"
        assert _runs(tmp_path) == 3, "one more run after the cached token's 401, then cached"
    finally:
        await client.close()


async def test_exec_plugin_runs_again_when_its_token_expires(
    control_plane: ControlPlane, namespaces: Namespaces, tmp_path: Path
) -> None:
    ns = namespaces.default
    (tmp_path / "token").write_text(_token(control_plane, ns, "expiring"))
    soon = datetime.now(UTC) + timedelta(seconds=EXEC_EXPIRY_MARGIN / 2)
    (tmp_path / "expires").write_text(soon.strftime("%Y-%m-%dT%H:%M:%SZ"))
    client = _exec_client(control_plane, tmp_path)
    try:
        for expected_runs in (1, 2):
            assert await _whoami(client) == f"system:serviceaccount:{ns}:expiring"
            assert _runs(tmp_path) == expected_runs, "within the margin: asked again"
        later = datetime.now(UTC) + timedelta(hours=1)
        (tmp_path / "expires").write_text(later.isoformat())
        for _ in range(3):
            await _whoami(client)
        assert _runs(tmp_path) == 3, "an hour ahead: cached"
    finally:
        await client.close()


async def test_failing_exec_plugin_is_a_clear_error(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": sys.executable,
            "args": ["-c", "import sys; sys.exit('no credentials for you')"],
            "interactiveMode": "Never",
        }
    }
    client = KubeClient.from_kubeconfig(str(_kubeconfig(control_plane, tmp_path / "kc", user)))
    try:
        with pytest.raises(ApiError) as failed:
            await _whoami(client)
        assert failed.value.reason == "CredentialsError"
        # The plugin's words go to stderr (a device-code prompt must reach the user),
        # not into an error every failing request would log.
        assert "exited 1 (its messages are on stderr)" in failed.value.message
    finally:
        await client.close()


@pytest.mark.parametrize("transport", [None, ThreadTransport], ids=["loop", "threads"])
async def test_impersonation_acts_as_the_restricted_user(
    control_plane: ControlPlane,
    namespaces: Namespaces,
    tmp_path: Path,
    transport: TransportFactory | None,
) -> None:
    """`as:` in a kubeconfig: the admin (system:masters) acting as a user without rights
    is refused where the admin alone succeeds; the groups and extra are sent as well."""
    ns = namespaces.default
    admin = yaml.safe_load(control_plane.admin_kubeconfig.read_text())
    user = admin["users"][0]["user"]
    acting = dict(user, **{"as": "jane", "as-groups": ["team-a", "team-b"]})
    acting["as-user-extra"] = {"reason": ["on call"]}
    path = _kubeconfig(control_plane, tmp_path / "kc", acting)
    base = KubeClient.from_kubeconfig(str(control_plane.admin_kubeconfig), transport=transport)
    jane = KubeClient.from_kubeconfig(str(path), transport=transport)
    try:
        assert await base.list(CONFIGMAPS, ns) is not None
        with pytest.raises(Forbidden) as refused:
            await jane.list(CONFIGMAPS, ns)
        assert 'User "jane" cannot list resource "configmaps"' in refused.value.message
        review = await jane.create(
            SELF_SUBJECT_REVIEWS,
            None,
            {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        )
        info = review["status"]["userInfo"]
        assert info["username"] == "jane"
        assert {"team-a", "team-b"} <= set(info["groups"])
        assert info["extra"] == {"reason": ["on call"]}
    finally:
        await base.close()
        await jane.close()


async def test_watch_carries_events_bigger_than_a_line_buffer(
    control_plane: ControlPlane, namespaces: Namespaces
) -> None:
    """aiohttp's readline() stops at 128 KiB; a watch event may be much bigger."""
    ns = namespaces.default
    client = KubeClient.from_kubeconfig(str(control_plane.admin_kubeconfig))
    try:
        _, version = await client.list(CONFIGMAPS, ns)
        big = {f"key-{i}": "x" * 1000 for i in range(600)}  # ~600 KiB in one line
        for name in ("small-before", "big", "small-after"):
            data = big if name == "big" else {"a": "b"}
            body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}
            await client.create(CONFIGMAPS, ns, {**body, "data": data})
        names: list[str] = []
        async for kind, obj in client.watch(
            CONFIGMAPS, ns, resource_version=version, timeout_seconds=30
        ):
            if kind == "ADDED":
                names.append(obj["metadata"]["name"])
                if obj["metadata"]["name"] == "big":
                    assert obj["data"] == big
            if len(names) == 3:
                break
        assert names == ["small-before", "big", "small-after"]
        assert len(json.dumps(big)) > 512 * 1024
    finally:
        await client.close()


class _AiohttpAlone(LoopTransport):
    """The reference: every request over aiohttp's client session, as before kube/http1.py."""

    def __init__(self, server: str, options: TransportOptions) -> None:
        super().__init__(server, options)
        self._pool = None


def _same(answer: Answer, namespace: str) -> tuple[Any, ...]:
    """What must not differ between two transports: all but the namespace and the
    object's identity."""
    body: Any = answer.body.replace(namespace.encode(), b"NS")
    if answer.content_type == "application/json":
        body = json.loads(body)
        for item in [body, *body.get("items", [])]:
            for volatile in ("uid", "resourceVersion", "creationTimestamp", "managedFields"):
                item.get("metadata", {}).pop(volatile, None)
        body.get("details", {}).pop("uid", None)
        if "message" in body:  # a failed precondition names the object's UID
            body["message"] = re.sub(r"UID in record \(.*?\)", "UID", body["message"])
    return answer.status, answer.reason, answer.content_type, answer.retry_after, body


async def test_the_operator_s_own_http_answers_as_aiohttp_s_client(
    control_plane: ControlPlane, namespaces: Namespaces, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same requests through kube/http1.py and through aiohttp's session, each in a
    namespace of its own, answered alike: found, missing, created, AlreadyExists, a stale
    PUT, a merge patch, a failed precondition, a delete, 300 creations and their 300 KiB
    list (gzipped on the wire), an invalid object, a protobuf answer, plain text, a 405
    and an unknown path."""
    gunzipped: list[int] = []

    def gunzip(raw: bytes) -> bytes:
        gunzipped.append(len(raw))
        return real_gunzip(raw)

    monkeypatch.setattr(http1, "gunzip", gunzip)
    access = ClusterAccess.from_kubeconfig(str(control_plane.admin_kubeconfig))
    options = TransportOptions(access.ssl_context, access.tls_server_name, (("User-Agent", "t"),))
    ours = LoopTransport(access.server, options)
    reference = _AiohttpAlone(access.server, options)
    assert ours._pool is not None and reference._pool is None
    big = "x" * 1000

    def requests(ns: str) -> list[tuple[str, str, dict[str, str], bytes | None]]:
        base = f"/api/v1/namespaces/{ns}/configmaps"
        created = {"metadata": {"name": "a"}, "data": {"k": "v"}}
        stale = {"metadata": {"name": "a", "resourceVersion": "1"}, "data": {"k": "w"}}
        wrong_uid = {"preconditions": {"uid": "not-it"}}
        invalid = {"metadata": {"name": "Not_Valid"}}
        js = {"Accept": "application/json", "Content-Type": "application/json"}
        merge = {"Accept": "application/json", "Content-Type": "application/merge-patch+json"}
        pb = {"Accept": "application/vnd.kubernetes.protobuf"}
        return [
            ("GET", f"/api/v1/namespaces/{ns}", js, None),
            ("GET", f"{base}/missing", js, None),
            ("POST", base, js, json.dumps(created).encode()),
            ("POST", base, js, json.dumps(created).encode()),
            ("PUT", f"{base}/a", js, json.dumps(stale).encode()),
            ("PATCH", f"{base}/a", merge, b'{"data": {"k": "patched"}}'),
            ("DELETE", f"{base}/a", js, json.dumps(wrong_uid).encode()),
            ("DELETE", f"{base}/a", js, None),
            *[
                (
                    "POST",
                    base,
                    js,
                    json.dumps({"metadata": {"name": f"b{i}"}, "data": {"k": big}}).encode(),
                )
                for i in range(300)
            ],
            ("GET", base, js, None),
            ("POST", base, js, json.dumps(invalid).encode()),
            ("GET", f"{base}/b0", pb, None),
            ("GET", "/healthz", {}, None),
            ("PUT", base, js, b"{}"),
            ("GET", "/no/such/path", js, None),
        ]

    a, b = namespaces.developers[1:3]  # names of one length: protobuf bodies alike
    try:
        for (method, target_a, headers, body), (_, target_b, _, _) in zip(
            requests(a), requests(b), strict=True
        ):
            got = await ours.send(method, target_a, headers, body)
            want = await reference.send(method, target_b, headers, body)
            if target_a.endswith("/b0") or "protobuf" in headers.get("Accept", ""):
                assert (got.status, got.content_type) == (want.status, want.content_type)
                assert len(got.body) == len(want.body)
                continue
            assert _same(got, a) == _same(want, b), (method, target_a)
        listed = json.loads(
            (await ours.send("GET", f"/api/v1/namespaces/{a}/configmaps", {}, None)).body
        )
        assert len(listed["items"]) == 300
        assert gunzipped, "the API server gzipped the large list, and it was read"
    finally:
        await ours.close()
        await reference.close()
