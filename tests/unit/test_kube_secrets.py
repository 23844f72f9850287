"""No secret in any repr, log line or error: secret-shaped values are fed through every
way the kubeconfig, the credentials and the client can fail, and the output is searched."""

from __future__ import annotations

import base64
import logging
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from virtualservice_operator.kube.credentials import (
    CredentialsError,
    ExecCredentials,
    credentials_for,
)
from virtualservice_operator.kube.kubeconfig import ClusterAccess, KubeconfigError
from virtualservice_operator.kube.kubeconfig_types import NameValue, User, UserExec

SECRET = "s3cr3t-VALUE-9f8e7d"
SECRET_B64 = base64.b64encode(SECRET.encode()).decode()


def _kubeconfig(path: Path, user: Any, cluster: Any = None) -> Path:
    config = {
        "clusters": [{"name": "c", "cluster": cluster or {"server": "https://k8s.example:6443"}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path.write_text(config if isinstance(config, str) else yaml.safe_dump(config))
    return path


BAD_USERS: list[tuple[str, Any, Any]] = [
    ("token of the wrong type", {"token": [SECRET]}, None),
    ("key data not base64", {"client-certificate-data": SECRET_B64, "client-key-data": SECRET + "!"}, None),
    ("key data not a key", {"client-certificate-data": SECRET_B64, "client-key-data": SECRET_B64}, None),
    ("token and basic auth", {"token": SECRET, "username": "u", "password": SECRET}, None),
    ("auth-provider", {"auth-provider": {"name": "oidc", "config": {"id-token": SECRET}}}, None),
    ("exec without interactiveMode", {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "p", "env": [{"name": "T", "value": SECRET}]}}, None),
    ("proxy password", {"token": SECRET}, {"server": "https://k8s:6443", "proxy-url": f"http://me:{SECRET}@proxy:3128"}),
    ("CA data not base64", {"token": SECRET}, {"server": "https://k8s:6443", "certificate-authority-data": SECRET + "!"}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("user", "cluster"), [(u, c) for _, u, c in BAD_USERS], ids=[i for i, _, _ in BAD_USERS]
)
def test_kubeconfig_errors_hold_no_secret(tmp_path: Path, user: Any, cluster: Any) -> None:  # fmt: skip
    with pytest.raises(KubeconfigError) as refused:
        ClusterAccess.from_kubeconfig(str(_kubeconfig(tmp_path / "kc", user, cluster)), environ={})
    assert SECRET not in str(refused.value) and SECRET not in repr(refused.value)
    assert refused.value.__cause__ is None or SECRET not in str(refused.value.__cause__)


def test_a_yaml_error_holds_no_excerpt_of_the_line(tmp_path: Path) -> None:
    path = tmp_path / "kc"
    path.write_text(f"users:\n- name: u\n  user: {{token: {SECRET}\n")
    with pytest.raises(KubeconfigError) as refused:
        ClusterAccess.from_kubeconfig(str(path), environ={})
    assert SECRET not in str(refused.value)


def test_reprs_name_fields_not_values(tmp_path: Path) -> None:
    exec_ = UserExec(
        apiVersion="client.authentication.k8s.io/v1",
        command="p",
        env=[NameValue(name="T", value=SECRET)],
        args=["--flag"],
        interactiveMode="Never",
    )
    user = User(token=SECRET, password=SECRET, client_key_data=SECRET_B64, exec=exec_)
    texts = [repr(user), str(user), repr(exec_), repr(exec_.env), f"{user}"]
    texts.append(repr(credentials_for(User(token=SECRET))))
    texts.append(repr(credentials_for(User(username="u", password=SECRET))))
    access = ClusterAccess.from_kubeconfig(
        str(_kubeconfig(tmp_path / "kc", {"token": SECRET, "as": "jane"})), environ={}
    )
    texts += [repr(access), str(access.describe().keys())]
    for text in texts:
        assert SECRET not in text and SECRET_B64 not in text, text


async def test_exec_plugin_errors_and_logs_hold_no_secret(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    bodies = [
        f"import sys; sys.stderr.write('{SECRET}'); sys.exit(1)",
        f"print('{SECRET} is not json')",
        f"import json; print(json.dumps({{'apiVersion': 'x', 'status': {{'token': '{SECRET}'}}}}))",
        "import json; print(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1beta1',"
        f" 'status': {{'clientCertificateData': '{SECRET}', 'clientKeyData': '{SECRET}'}}}}))",
    ]
    for body in bodies:
        script = tmp_path / "plugin.py"
        script.write_text(body)
        plugin = UserExec(
            apiVersion="client.authentication.k8s.io/v1beta1",
            command=sys.executable,
            args=[str(script)],
            env=[NameValue(name="T", value=SECRET)],
        )
        with pytest.raises(CredentialsError) as failed:
            await ExecCredentials(plugin).header()
        assert SECRET not in str(failed.value), body
    capfd.readouterr()  # the plugin's own stderr is the user's to see
    assert SECRET not in caplog.text
