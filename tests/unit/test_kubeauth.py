"""Credentials from kubeconfig users: which kind, what header, when they are read again."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from virtualservice_operator.kube.credentials import (
    Credentials,
    CredentialsError,
    ExecCredentials,
    StaticCredentials,
    TokenFileCredentials,
    _expiry,
    credentials_for,
)
from virtualservice_operator.kube.kubeconfig_types import NameValue, User, UserExec


def _exec(*args: str, api_version: str = "client.authentication.k8s.io/v1beta1") -> UserExec:
    return UserExec(apiVersion=api_version, command=sys.executable, args=list(args))


def test_order_token_file_then_token_then_exec_then_basic(tmp_path: Path) -> None:
    everything = dict(token="t", exec=_exec(), username="u", password="p")
    assert isinstance(credentials_for(User(token_file="/f", **everything)), TokenFileCredentials)  # type: ignore[arg-type]
    assert isinstance(credentials_for(User(**everything)), StaticCredentials)  # type: ignore[arg-type]
    assert isinstance(
        credentials_for(User(exec=_exec(), username="u", password="p")), ExecCredentials
    )
    assert type(credentials_for(User(client_cert="c", client_key="k"))) is Credentials
    assert type(credentials_for(None)) is Credentials


async def test_static_headers() -> None:
    assert await credentials_for(User(token="abc")).header() == "Bearer abc"
    assert await credentials_for(User(username="u", password="p")).header() == "Basic dTpw"
    assert await credentials_for(User(client_cert="c")).header() is None
    assert not await credentials_for(User(token="abc")).refresh()


def test_auth_provider_is_refused_with_the_fix() -> None:
    with pytest.raises(CredentialsError, match="use an exec plugin"):
        credentials_for(User(auth_provider={"name": "gcp"}))


async def test_token_file_is_reread_when_older_than_max_age(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("one\n")
    cached = TokenFileCredentials(str(path))
    fresh = TokenFileCredentials(str(path), max_age=-1.0)  # always stale
    assert await cached.header() == await fresh.header() == "Bearer one"
    path.write_text("two")
    assert await cached.header() == "Bearer one"
    assert await fresh.header() == "Bearer two"
    assert await cached.refresh() and await cached.header() == "Bearer two"
    assert not await cached.refresh(), "nothing new: no retry"


async def test_missing_token_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match=r"cannot read token file .*/missing"):
        await TokenFileCredentials(str(tmp_path / "missing")).header()


def _plugin(tmp_path: Path, body: str) -> ExecCredentials:
    script = tmp_path / "plugin.py"
    script.write_text(body)
    return ExecCredentials(_exec(str(script)))


async def test_exec_plugin_gets_env_and_exec_info(tmp_path: Path) -> None:
    script = tmp_path / "plugin.py"
    script.write_text(
        "import json, os\n"
        "info = json.loads(os.environ['KUBERNETES_EXEC_INFO'])\n"
        "token = os.environ['EXTRA'] + '-' + info['spec']['interactive'].__repr__()\n"
        "print(json.dumps({'status': {'token': token}}))\n"
    )
    plugin = UserExec(
        apiVersion="client.authentication.k8s.io/v1",
        command=sys.executable,
        args=[str(script)],
        env=[NameValue(name="EXTRA", value="from-kubeconfig")],
    )
    assert await ExecCredentials(plugin).header() == "Bearer from-kubeconfig-False"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("print('not json')", "expected an ExecCredential with status.token"),
        ("print('{\"status\": {}}')", "expected an ExecCredential with status.token"),
        ("import sys; sys.exit('denied')", "exited 1: denied"),
    ],
)
async def test_exec_plugin_failures_are_clear(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(CredentialsError, match=message):
        await _plugin(tmp_path, body).header()


async def test_exec_plugin_not_installed_gives_the_install_hint() -> None:
    plugin = UserExec(
        apiVersion="client.authentication.k8s.io/v1",
        command="/no/such/plugin",
        installHint="install it from example.com",
    )
    with pytest.raises(CredentialsError, match=r"/no/such/plugin.*install it from example\.com"):
        await ExecCredentials(plugin).header()


def test_exec_plugin_unknown_api_version_is_refused() -> None:
    with pytest.raises(CredentialsError, match="apiVersion 'v2' is not one of"):
        ExecCredentials(_exec(api_version="v2"))


def test_expiry_parsing() -> None:
    now = time.monotonic()
    in_an_hour = _expiry(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600)))
    assert in_an_hour is not None and 3590 < in_an_hour - now < 3610
    assert _expiry(None) is None
    assert _expiry("") is None
    assert _expiry("tomorrow") is None
