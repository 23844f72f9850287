"""Credentials from kubeconfig users: which kind, what header, when they are read again."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest

from virtualservice_operator.kube import credentials as credentials_module
from virtualservice_operator.kube.credentials import (
    Credentials,
    CredentialsError,
    ExecCredentials,
    StaticCredentials,
    TokenFileCredentials,
    _expiry,
    check_exec,
    credentials_for,
)
from virtualservice_operator.kube.kubeconfig_types import NameValue, User, UserExec

V1 = "client.authentication.k8s.io/v1"
V1BETA1 = "client.authentication.k8s.io/v1beta1"


def _exec(*args: str, api_version: str = V1BETA1, **more: Any) -> UserExec:
    return UserExec(apiVersion=api_version, command=sys.executable, args=list(args), **more)


def _answer(status: str, api_version: str = V1BETA1) -> str:
    """A plugin's body printing an ExecCredential with `status` (a Python expression)."""
    return (
        "import json\n"
        f"print(json.dumps({{'apiVersion': {api_version!r}, 'kind': 'ExecCredential', "
        f"'status': {status}}}))\n"
    )


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


def test_auth_provider_is_refused_by_name_with_the_fix() -> None:
    with pytest.raises(
        CredentialsError, match=r"auth-provider is not supported.*use an exec plugin"
    ):
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


async def test_a_failed_reread_keeps_the_last_good_token_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """As client-go's cachingTokenSource: one bad read must not fail every request."""
    path = tmp_path / "token"
    path.write_text("good")
    credentials = TokenFileCredentials(str(path), max_age=-1.0)
    assert await credentials.header() == "Bearer good"
    path.unlink()
    assert await credentials.header() == "Bearer good"
    assert "keeping the last good token" in caplog.text and str(path) in caplog.text
    path.write_text("")  # an empty file is no token either
    assert await credentials.header() == "Bearer good"
    assert "is empty" in caplog.text
    path.write_text("rotated")
    assert await credentials.header() == "Bearer rotated"


async def test_an_empty_token_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(" \n")
    with pytest.raises(CredentialsError, match=r"token file .* is empty"):
        await TokenFileCredentials(str(path)).header()


async def test_token_beside_a_token_file_stands_in_while_the_file_is_unreadable(
    tmp_path: Path,
) -> None:
    credentials = credentials_for(User(token="static", token_file=str(tmp_path / "later")))
    assert await credentials.header() == "Bearer static"
    (tmp_path / "later").write_text("from-file")
    assert await credentials.refresh()
    assert await credentials.header() == "Bearer from-file"


def _script(tmp_path: Path, body: str) -> str:
    """A credential plugin's script: its path, for a kubeconfig's `command` args."""
    script = tmp_path / "plugin.py"
    script.write_text(body)
    return str(script)


def _plugin(tmp_path: Path, body: str) -> ExecCredentials:
    return ExecCredentials(_exec(_script(tmp_path, body)))


async def test_exec_plugin_gets_env_and_exec_info(tmp_path: Path) -> None:
    script = _script(
        tmp_path,
        "import json, os\n"
        "info = json.loads(os.environ['KUBERNETES_EXEC_INFO'])\n"
        "token = os.environ['EXTRA'] + '-' + info['spec']['interactive'].__repr__()\n"
        "token += '-' + str('cluster' in info['spec'])\n"
        "print(json.dumps({'apiVersion': info['apiVersion'], 'status': {'token': token}}))\n",
    )
    plugin = UserExec(
        apiVersion=V1,
        command=sys.executable,
        args=[script],
        env=[NameValue(name="EXTRA", value="from-kubeconfig")],
        interactiveMode="Never",
    )
    cluster = {"server": "https://k8s:6443"}
    assert await ExecCredentials(plugin, cluster).header() == "Bearer from-kubeconfig-False-False"


async def test_exec_plugin_gets_the_cluster_when_it_asks(tmp_path: Path) -> None:
    script = _script(
        tmp_path,
        "import json, os\n"
        "spec = json.loads(os.environ['KUBERNETES_EXEC_INFO'])['spec']\n"
        "token = spec['cluster']['server'] + '|' + spec['cluster']['config']['audience']\n"
        f"print(json.dumps({{'apiVersion': {V1!r}, 'status': {{'token': token}}}}))\n",
    )
    plugin = _exec(script, api_version=V1, interactiveMode="Never", provideClusterInfo=True)
    cluster = {"server": "https://k8s:6443", "config": {"audience": "kube"}}
    assert await ExecCredentials(plugin, cluster).header() == "Bearer https://k8s:6443|kube"


async def test_exec_plugin_that_hangs_is_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(credentials_module, "EXEC_TIMEOUT", 0.5)
    started = time.monotonic()
    with pytest.raises(CredentialsError, match=r"gave no answer in 0s and was stopped"):
        await _plugin(tmp_path, "import time; time.sleep(60)").header()
    assert time.monotonic() - started < 10


async def test_exec_plugin_stderr_reaches_the_terminal_not_the_error(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    body = "import sys; sys.stderr.write('open https://login.example/device CODE-1234\\n'); sys.exit(3)"
    with pytest.raises(CredentialsError) as failed:
        await _plugin(tmp_path, body).header()
    assert "CODE-1234" not in str(failed.value)
    assert "exited 3" in str(failed.value)
    assert "CODE-1234" in capfd.readouterr().err


async def test_exec_interactive_always_needs_a_terminal(tmp_path: Path) -> None:
    script = _script(tmp_path, _answer("{'token': 't'}"))
    plugin = _exec(script, interactiveMode="Always")
    with pytest.raises(CredentialsError, match="interactiveMode Always needs a terminal"):
        await ExecCredentials(plugin).header()
    never = _exec(script, interactiveMode="Never")
    assert await ExecCredentials(never).header() == "Bearer t"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("print('not json')", "expected an ExecCredential with status"),
        (_answer("{}"), r"didn't return a token \(status.token\)"),
        (_answer("{'token': ''}"), r"didn't return a token"),
        ("import sys; sys.exit('denied')", r"exited 1 \(its messages are on stderr\)"),
        (_answer("{'token': 't'}", V1), "configured to use API version .*v1beta1, plugin returned"),
        (
            _answer("{'clientCertificateData': 'c', 'clientKeyData': 'k'}"),
            r"returned a client certificate \(status.clientCertificateData\), which this "
            "client does not support",
        ),
        (
            _answer("{'token': 't', 'expirationTimestamp': 'tomorrow'}"),
            "expirationTimestamp 'tomorrow' is not an RFC 3339 time",
        ),
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


@pytest.mark.parametrize(
    ("plugin", "message"),
    [
        (_exec(api_version="v2"), "apiVersion 'v2' is not one of"),
        (
            _exec(api_version="client.authentication.k8s.io/v1alpha1"),
            "v1alpha1 was removed",
        ),
        (_exec(api_version=V1), "interactiveMode must be specified with apiVersion v1"),
        (_exec(interactiveMode="Sometimes"), "interactiveMode 'Sometimes' is not one of"),
        (UserExec(apiVersion=V1), "command must be specified"),
    ],
)
def test_exec_sections_client_go_refuses(plugin: UserExec, message: str) -> None:
    with pytest.raises(CredentialsError, match=message):
        check_exec(plugin)


def test_expiry_parsing() -> None:
    now = time.monotonic()
    in_an_hour = _expiry(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600)))
    assert in_an_hour is not None and 3590 < in_an_hour - now < 3610
    assert _expiry(None) is None
    for unreadable in ("", "tomorrow", "2026-01-01T00:00:00", 12):
        with pytest.raises(CredentialsError, match="is not an RFC 3339 time"):
            _expiry(unreadable)
