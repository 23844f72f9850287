"""The kubeconfig loader: which file or in-cluster source wins, how files merge, where
relative paths point, whom the TLS context trusts (checked by real in-memory handshakes)
and that each refusal names the file and the fix."""

from __future__ import annotations

import base64
import os
import ssl
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from virtualservice_operator.kube.credentials import (
    Credentials,
    ExecCredentials,
    StaticCredentials,
    TokenFileCredentials,
)
from virtualservice_operator.kube.kubeconfig import ClusterAccess, KubeconfigError
from virtualservice_operator_dev.pki import write_pki

# -- test certificates ---------------------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    cert: bytes
    key: bytes


@dataclass(frozen=True)
class Pki:
    """Two local control planes' certificates (virtualservice_operator_dev.pki)."""

    ca: Issued
    server: Issued  # for localhost and 127.0.0.1, signed by ca
    client: Issued  # CN=admin, signed by ca
    other_ca: Issued
    other_server: Issued  # for localhost, signed by other_ca


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    one, other = (write_pki(tmp_path_factory.mktemp(name)) for name in ("pki", "other-pki"))

    def read(cert: Path, key: Path) -> Issued:
        return Issued(cert.read_bytes(), key.read_bytes())

    return Pki(
        read(one.ca_cert, one.ca_key),
        read(one.serving_cert, one.serving_key),
        read(one.admin_cert, one.admin_key),
        read(other.ca_cert, other.ca_key),
        read(other.serving_cert, other.serving_key),
    )


def _encrypted(key: bytes, password: bytes) -> bytes:
    loaded = serialization.load_pem_private_key(key, password=None)
    return loaded.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password),
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _server_context(issued: Issued, tmp: Path, client_ca: Issued | None = None) -> ssl.SSLContext:
    (tmp / "srv.crt").write_bytes(issued.cert)
    (tmp / "srv.key").write_bytes(issued.key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp / "srv.crt", tmp / "srv.key")
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cadata=client_ca.cert.decode())
    return context


def _handshake(client: ssl.SSLContext | None, server: ssl.SSLContext) -> dict[str, Any]:
    """A TLS handshake in memory; the client certificate the server saw ({}: none)."""
    assert client is not None
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    c = client.wrap_bio(c_in, c_out, server_hostname="localhost")
    s = server.wrap_bio(s_in, s_out, server_side=True)
    done = {id(c): False, id(s): False}
    for _ in range(20):
        for end in (c, s):
            if not done[id(end)]:
                try:
                    end.do_handshake()
                    done[id(end)] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            # TLS 1.3: the server judges the client's certificate after the client is done.
            with pytest.raises(ssl.SSLWantReadError):
                c.read()
            return s.getpeercert() or {}
    raise AssertionError("handshake did not finish")


def _subject_cn(peer: dict[str, Any]) -> str:
    return str(dict(pair[0] for pair in peer["subject"])["commonName"])


# -- kubeconfig files ------------------------------------------------------------------------


def _config(
    cluster: dict[str, Any] | None = None,
    user: dict[str, Any] | None = None,
    *,
    server: str = "https://localhost:6443",
) -> dict[str, Any]:
    context: dict[str, Any] = {"cluster": "c"}
    config: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server, **(cluster or {})}}],
        "contexts": [{"name": "ctx", "context": context}],
        "current-context": "ctx",
    }
    if user is not None:
        context["user"] = "u"
        config["users"] = [{"name": "u", "user": user}]
    return config


def _write(path: Path, config: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config if isinstance(config, str) else yaml.safe_dump(config))
    return path


NO_ACCOUNT = Path("/nonexistent-service-account")


def _load(path: Path | str | None = None, **environ: str) -> ClusterAccess:
    """Loaded with a given environment and no in-cluster ServiceAccount."""
    return ClusterAccess.from_kubeconfig(
        str(path) if path else None, service_account=NO_ACCOUNT, environ=environ
    )


def _refused(path: Path, *fragments: str) -> str:
    with pytest.raises(KubeconfigError) as info:
        _load(path)
    message = str(info.value)
    for fragment in (str(path), *fragments):
        assert fragment in message, message
    return message


# -- which source ------------------------------------------------------------------------------


async def test_a_file_gives_server_host_token_and_no_tls_for_http(tmp_path: Path) -> None:
    path = _write(tmp_path / "kc", _config(user={"token": "abc"}, server="http://127.0.0.1:8080"))
    access = _load(path)
    assert access.server == "http://127.0.0.1:8080"
    assert access.host == "127.0.0.1"
    assert access.ssl_context is None, "http: no TLS context"
    assert access.tls_server_name is None
    assert isinstance(access.credentials, StaticCredentials)
    assert await access.credentials.header() == "Bearer abc"


def test_no_user_means_no_credentials(tmp_path: Path) -> None:
    access = _load(_write(tmp_path / "kc", _config(server="http://h:1")))
    assert type(access.credentials) is Credentials


def test_host_of_an_ipv6_server_and_a_path_prefix(tmp_path: Path) -> None:
    path = _write(tmp_path / "kc", _config(server="http://[fd00::1]:6443/k8s/clusters/x"))
    access = _load(path)
    assert access.host == "fd00::1"
    assert access.server == "http://[fd00::1]:6443/k8s/clusters/x", "the prefix is kept"


def test_tls_server_name_is_carried(tmp_path: Path) -> None:
    path = _write(tmp_path / "kc", _config({"tls-server-name": "kubernetes.default.svc"}))
    assert _load(path).tls_server_name == "kubernetes.default.svc"


def test_an_explicit_path_wins_over_in_cluster_and_kubeconfig(tmp_path: Path) -> None:
    account = _service_account(tmp_path / "sa", b"")
    other = _write(tmp_path / "other", _config(server="http://other:1"))
    path = _write(tmp_path / "kc", _config(server="http://chosen:1"))
    access = ClusterAccess.from_kubeconfig(
        str(path),
        service_account=account,
        environ={**IN_CLUSTER_ENV, "KUBECONFIG": str(other)},
    )
    assert access.server == "http://chosen:1"


def test_default_is_home_kube_config(tmp_path: Path) -> None:
    _write(tmp_path / ".kube" / "config", _config(server="http://home:1"))
    assert _load(HOME=str(tmp_path)).server == "http://home:1"
    with pytest.raises(KubeconfigError, match=r"\.kube/config.*--kubeconfig or KUBECONFIG"):
        _load(HOME=str(tmp_path / "nobody"))


def test_kubeconfig_list_merges_first_definition_wins(tmp_path: Path) -> None:
    """As kubectl merges: each name from the first file defining it; current-context
    from the first file that sets one; a missing file in the list is skipped."""
    first = _config(server="http://first:1", user={"token": "first"})
    del first["current-context"]
    first["contexts"][0]["context"]["user"] = "u"
    second = _config(server="http://second:1", user={"token": "second"})
    second["current-context"] = "ctx2"
    second["contexts"].append({"name": "ctx2", "context": {"cluster": "c", "user": "u2"}})
    second["users"].append({"name": "u2", "user": {"tokenFile": "tok"}})
    a = _write(tmp_path / "a" / "config", first)
    b = _write(tmp_path / "b" / "config", second)
    (tmp_path / "b" / "tok").write_text("from-b")
    listed = os.pathsep.join([str(tmp_path / "missing"), str(a), "", str(b)])
    access = _load(KUBECONFIG=listed)
    assert access.server == "http://first:1", "cluster c from the first file defining it"
    assert isinstance(access.credentials, TokenFileCredentials)
    # ctx2 (from b, the only current-context) names u2, defined in b: tokenFile is b's.
    assert access.credentials._path == tmp_path / "b" / "tok"

    second["current-context"] = "ctx"  # defined in both: a's (user u: token "first")
    _write(b, second)
    first["current-context"] = ""  # empty is unset
    _write(a, first)
    access = _load(KUBECONFIG=listed)
    assert isinstance(access.credentials, StaticCredentials)
    assert access.credentials._value == "Bearer first"


def test_kubeconfig_list_with_no_existing_file_is_an_error(tmp_path: Path) -> None:
    listed = f"{tmp_path / 'x'}:{tmp_path / 'y'}"
    with pytest.raises(KubeconfigError) as info:
        _load(KUBECONFIG=listed)
    assert listed in str(info.value) and "point KUBECONFIG at a kubeconfig" in str(info.value)


def test_an_undefined_name_in_a_merge_names_the_list(tmp_path: Path) -> None:
    config = _config(user={"token": "t"})
    config["contexts"][0]["context"]["user"] = "ghost"
    a = _write(tmp_path / "a", config)
    b = _write(tmp_path / "b", _config())
    with pytest.raises(KubeconfigError) as info:
        _load(KUBECONFIG=f"{a}:{b}")
    assert f"{a}: context 'ctx' names user 'ghost'" in str(info.value)
    assert f"KUBECONFIG={a}:{b}" in str(info.value)


# -- in-cluster ------------------------------------------------------------------------------

IN_CLUSTER_ENV = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}


def _service_account(directory: Path, ca: bytes, token: str = "sa-token") -> Path:
    directory.mkdir(parents=True)
    (directory / "token").write_text(token)
    (directory / "namespace").write_text("ops")
    if ca:
        (directory / "ca.crt").write_bytes(ca)
    return directory


def test_kubeconfig_comes_before_in_cluster(tmp_path: Path, pki: Pki) -> None:
    """controller-runtime's order: --kubeconfig, $KUBECONFIG, in-cluster, ~/.kube/config."""
    account = _service_account(tmp_path / "sa", pki.ca.cert)
    kubeconfig = _write(tmp_path / "kc", _config(server="http://from-kubeconfig:1"))
    _write(tmp_path / ".kube" / "config", _config(server="http://home:1"))
    env = {**IN_CLUSTER_ENV, "HOME": str(tmp_path)}
    chosen = ClusterAccess.from_kubeconfig(
        service_account=account, environ={**env, "KUBECONFIG": str(kubeconfig)}
    )
    assert chosen.server == "http://from-kubeconfig:1"
    in_cluster = ClusterAccess.from_kubeconfig(service_account=account, environ=env)
    assert in_cluster.server == "https://10.96.0.1:443", "in-cluster before ~/.kube/config"


async def test_in_cluster_reads_the_service_account(tmp_path: Path, pki: Pki) -> None:
    account = _service_account(tmp_path / "sa", pki.ca.cert)
    access = ClusterAccess.from_kubeconfig(service_account=account, environ=IN_CLUSTER_ENV)
    assert access.server == "https://10.96.0.1:443"
    assert access.host == "10.96.0.1"
    # The token is a file, re-read as the kubelet rotates it.
    assert isinstance(access.credentials, TokenFileCredentials)
    assert await access.credentials.header() == "Bearer sa-token"
    (account / "token").write_text("rotated")
    assert await access.credentials.refresh()
    assert await access.credentials.header() == "Bearer rotated"
    # ca.crt is whom it trusts, and only it.
    assert _handshake(access.ssl_context, _server_context(pki.server, tmp_path)) == {}
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(access.ssl_context, _server_context(pki.other_server, tmp_path))


def test_in_cluster_ipv6_host_is_bracketed(tmp_path: Path, pki: Pki) -> None:
    account = _service_account(tmp_path / "sa", pki.ca.cert)
    env = {"KUBERNETES_SERVICE_HOST": "fd00:10:96::1", "KUBERNETES_SERVICE_PORT": "443"}
    access = ClusterAccess.from_kubeconfig(service_account=account, environ=env)
    assert access.server == "https://[fd00:10:96::1]:443"
    assert access.host == "fd00:10:96::1"


@pytest.mark.parametrize(
    ("missing", "in_cluster"),
    [
        ("token", False),
        ("KUBERNETES_SERVICE_HOST", False),
        ("KUBERNETES_SERVICE_PORT", False),
        ("namespace", True),  # client-go does not need it
    ],
)
def test_in_cluster_needs_the_address_and_a_token(
    tmp_path: Path, pki: Pki, missing: str, in_cluster: bool
) -> None:
    account = _service_account(tmp_path / "sa", pki.ca.cert)
    _write(tmp_path / ".kube" / "config", _config())
    env = dict(IN_CLUSTER_ENV, HOME=str(tmp_path))
    if missing in env:
        del env[missing]
    else:
        (account / missing).unlink()
    access = ClusterAccess.from_kubeconfig(service_account=account, environ=env)
    expected = "https://10.96.0.1:443" if in_cluster else "https://localhost:6443"
    assert access.server == expected


def test_in_cluster_without_a_ca_trusts_the_system_store(
    tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    """As rest.InClusterConfig: an error logged, the system's trust used."""
    account = _service_account(tmp_path / "sa", b"")
    access = ClusterAccess.from_kubeconfig(service_account=account, environ=IN_CLUSTER_ENV)
    assert str(account / "ca.crt") in caplog.text
    assert access.describe()["ca"] == "system"
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(access.ssl_context, _server_context(pki.server, tmp_path))


# -- TLS: whom the context trusts --------------------------------------------------------------


def test_ca_data_is_trusted_and_nothing_else(tmp_path: Path, pki: Pki) -> None:
    path = _write(tmp_path / "kc", _config({"certificate-authority-data": _b64(pki.ca.cert)}))
    context = _load(path).ssl_context
    assert context is not None and context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED
    _handshake(context, _server_context(pki.server, tmp_path))
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(context, _server_context(pki.other_server, tmp_path))
    assert context.cert_store_stats()["x509_ca"] == 1, "the CA alone, not the system store"


def test_relative_ca_file_is_relative_to_the_kubeconfig(
    tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conf" / "pki").mkdir(parents=True)
    (tmp_path / "conf" / "pki" / "ca.crt").write_bytes(pki.ca.cert)
    path = _write(tmp_path / "conf" / "kc", _config({"certificate-authority": "pki/ca.crt"}))
    monkeypatch.chdir(tmp_path)  # not the kubeconfig's directory
    _handshake(_load(path).ssl_context, _server_context(pki.server, tmp_path))


def test_no_ca_uses_the_system_store_and_honours_ssl_cert_file(
    tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a CA: the system's store, where SSL_CERT_FILE may point (as Go's
    crypto/x509 reads it); a CA in the kubeconfig replaces the store."""
    path = _write(tmp_path / "kc", _config())
    context = _load(path).ssl_context
    assert context is not None and context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(context, _server_context(pki.server, tmp_path))
    (tmp_path / "ca.crt").write_bytes(pki.ca.cert)
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.crt"))
    _handshake(_load(path).ssl_context, _server_context(pki.server, tmp_path))
    other = _write(
        tmp_path / "other", _config({"certificate-authority-data": _b64(pki.other_ca.cert)})
    )
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(_load(other).ssl_context, _server_context(pki.server, tmp_path))


def test_insecure_skips_verification(tmp_path: Path, pki: Pki) -> None:
    context = _load(
        _write(tmp_path / "kc", _config({"insecure-skip-tls-verify": True}))
    ).ssl_context
    assert context is not None
    assert not context.check_hostname and context.verify_mode == ssl.CERT_NONE
    _handshake(context, _server_context(pki.other_server, tmp_path))


# -- TLS: client certificates --------------------------------------------------------------------


def test_client_certificate_files_relative_to_the_kubeconfig(
    tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "alice.crt").write_bytes(pki.client.cert)
    (tmp_path / "conf" / "alice.key").write_bytes(pki.client.key)
    (tmp_path / "conf" / "ca.crt").write_bytes(pki.ca.cert)
    user = {"client-certificate": "alice.crt", "client-key": "./alice.key"}
    path = _write(tmp_path / "conf" / "kc", _config({"certificate-authority": "ca.crt"}, user))
    monkeypatch.chdir(tmp_path)
    access = _load(path)
    assert type(access.credentials) is Credentials, "certificates: no header"
    peer = _handshake(access.ssl_context, _server_context(pki.server, tmp_path, pki.ca))
    assert _subject_cn(peer) == "admin"


@pytest.fixture
def loaded_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The names OpenSSL reads certificates and keys from; no file may appear in the
    temporary directory meanwhile."""
    directory = tmp_path / "tmp"
    directory.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(directory))
    seen: list[str] = []
    original: Callable[..., None] = ssl.SSLContext.load_cert_chain

    def recording(self: ssl.SSLContext, certfile: str, keyfile: str, **kw: Any) -> None:
        seen.extend((str(certfile), str(keyfile)))
        original(self, certfile, keyfile, **kw)

    monkeypatch.setattr(ssl.SSLContext, "load_cert_chain", recording)
    yield seen
    assert not list(directory.iterdir()), "nothing written to a temporary file"


def test_client_certificate_data_is_loaded_from_memory_files(
    tmp_path: Path, pki: Pki, loaded_files: list[str]
) -> None:
    """Never on a disk: anonymous memory files (memfd), closed once loaded."""
    user = {
        "client-certificate-data": _b64(pki.client.cert),
        "client-key-data": _b64(pki.client.key),
    }
    cluster = {"certificate-authority-data": _b64(pki.ca.cert)}
    access = _load(_write(tmp_path / "kc", _config(cluster, user)))
    assert len(loaded_files) == 2
    for name in loaded_files:
        assert name.startswith("/proc/self/fd/")
        assert not os.path.exists(name), "closed once loaded"
    peer = _handshake(access.ssl_context, _server_context(pki.server, tmp_path, pki.ca))
    assert _subject_cn(peer) == "admin"


def test_a_key_that_does_not_match_is_refused(
    tmp_path: Path, pki: Pki, loaded_files: list[str]
) -> None:
    (tmp_path / "alice.crt").write_bytes(pki.client.cert)
    user = {"client-certificate": "alice.crt", "client-key-data": _b64(pki.server.key)}
    path = _write(tmp_path / "kc", _config(None, user))
    _refused(path, "user 'u'", "do not load", "its matching PEM private key")
    assert loaded_files[1].startswith("/proc/self/fd/")


def test_an_encrypted_key_is_refused_without_a_prompt(tmp_path: Path, pki: Pki) -> None:
    user = {
        "client-certificate-data": _b64(pki.client.cert),
        "client-key-data": _b64(_encrypted(pki.client.key, b"secret")),
    }
    _refused(_write(tmp_path / "kc", _config(None, user)), "encrypted", "unencrypted key")


# -- credentials and exec paths ------------------------------------------------------------------


def test_exec_command_with_a_slash_is_relative_to_the_kubeconfig(tmp_path: Path) -> None:
    plugin = {
        "apiVersion": "client.authentication.k8s.io/v1",
        "command": "bin/get-token",
        "interactiveMode": "Never",
    }
    access = _load(_write(tmp_path / "kc", _config(None, {"exec": plugin}, server="http://h:1")))
    assert isinstance(access.credentials, ExecCredentials)
    assert access.credentials._plugin.command == str(tmp_path / "bin" / "get-token")

    plugin["command"] = "kubelogin"  # looked up in PATH, as client-go does
    access = _load(_write(tmp_path / "kc", _config(None, {"exec": plugin}, server="http://h:1")))
    assert isinstance(access.credentials, ExecCredentials)
    assert access.credentials._plugin.command == "kubelogin"


def test_exec_env_and_args_are_read(tmp_path: Path) -> None:
    plugin = {
        "apiVersion": "client.authentication.k8s.io/v1beta1",
        "command": sys.executable,
        "args": ["-c", "pass"],
        "env": [{"name": "A", "value": "1"}],
        "installHint": "install it",
        "provideClusterInfo": True,
    }
    access = _load(_write(tmp_path / "kc", _config(None, {"exec": plugin}, server="http://h:1")))
    assert isinstance(access.credentials, ExecCredentials)
    read = access.credentials._plugin
    assert (read.args, read.env[0].value if read.env else None) == (["-c", "pass"], "1")


# -- refusals, each naming the file and the fix --------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    _refused(tmp_path / "nope", "cannot read kubeconfig", "give an existing, readable file")


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "dir-not-file"
    path.mkdir()
    _refused(path, "cannot read kubeconfig")


def test_not_yaml_and_not_a_mapping(tmp_path: Path) -> None:
    message = _refused(_write(tmp_path / "a", "users:\n- token: s3cret: x\n"), "is not YAML")
    assert "line 2" in message and "fix its syntax" in message
    assert "s3cret" not in message, "no excerpt of the file: it may hold a secret"
    _refused(_write(tmp_path / "b", "- a\n- b\n"), "not a mapping", "current-context:")
    _refused(_write(tmp_path / "c", _config(server=5)), "$.clusters[0].cluster.server")  # type: ignore[arg-type]


def test_empty_file_has_no_current_context(tmp_path: Path) -> None:
    _refused(_write(tmp_path / "kc", ""), "sets no current-context", "use-context")


def _with(**changes: Any) -> dict[str, Any]:
    config = _config(user={"token": "t"})
    for key, value in changes.items():
        where, _, field = key.partition("__")
        target = {
            "top": config,
            "context": config["contexts"][0]["context"],
            "cluster": config["clusters"][0]["cluster"],
            "user": config["users"][0]["user"],
        }[where]
        if value is None:
            target.pop(field.replace("_", "-"), None)
        else:
            target[field.replace("_", "-")] = value
    return config


CA_GARBAGE = _b64(b"-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")

REFUSALS: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    ("no current-context", _with(top__current_context=None), ("sets no current-context",)),
    (
        "undefined context",
        _with(top__current_context="nope"),
        ("context 'nope' is not defined", "add it under contexts:"),
    ),
    ("context without cluster", _with(context__cluster=None), ("names no cluster", "add cluster:")),
    (
        "undefined cluster",
        _with(context__cluster="nope"),
        ("names cluster 'nope'", "add it under clusters:"),
    ),
    (
        "undefined user",
        _with(context__user="nope"),
        ("names user 'nope'", "add it under users:"),
    ),
    ("no server", _with(cluster__server=None), ("has no server", "add server: https://")),
    ("not http(s)", _with(cluster__server="localhost:6443"), ("not an http(s) URL",)),
    ("bad IPv6", _with(cluster__server="https://[::1:6443"), ("is not a URL",)),
    ("bad port", _with(cluster__server="https://h:99999"), ("is not a URL",)),
    (
        "insecure with a CA",
        _with(
            cluster__insecure_skip_tls_verify=True, cluster__certificate_authority_data=CA_GARBAGE
        ),
        ("insecure-skip-tls-verify together with a certificate authority", "remove one"),
    ),
    (
        "CA file and data",
        _with(cluster__certificate_authority="/ca", cluster__certificate_authority_data="eA=="),
        ("both certificate-authority and certificate-authority-data", "keep one"),
    ),
    (
        "missing CA file",
        _with(cluster__certificate_authority="absent.crt"),
        ("certificate-authority", "absent.crt", "does not load", "CA certificate in PEM"),
    ),
    (
        "CA data not base64",
        _with(cluster__certificate_authority_data="***"),
        ("certificate-authority-data is not base64", "base64 -w0"),
    ),
    (
        "CA data not a certificate",
        _with(cluster__certificate_authority_data=CA_GARBAGE),
        ("certificate-authority-data does not load",),
    ),
    (
        "CA data not text",
        _with(cluster__certificate_authority_data=_b64(b"\xff\xfe")),
        ("certificate-authority-data does not load",),
    ),
    (
        "certificate without key",
        _with(user__client_certificate="/a.crt"),
        ("user 'u' sets a client-certificate but no client-key", "give both"),
    ),
    (
        "key without certificate",
        _with(user__client_key_data="eA=="),
        ("sets a client-key but no client-certificate",),
    ),
    (
        "certificate file and data",
        _with(
            user__client_certificate="/a",
            user__client_certificate_data="eA==",
            user__client_key="/k",
        ),
        ("both client-certificate and client-certificate-data",),
    ),
    (
        "certificate data not base64",
        _with(user__client_certificate_data="not base64!", user__client_key="/k"),
        ("client-certificate-data is not base64",),
    ),
    (
        "missing certificate files",
        _with(user__client_certificate="a.crt", user__client_key="a.key"),
        ("do not load",),
    ),
    (
        "auth-provider",
        _with(user__auth_provider={"name": "gcp"}, user__token=None),
        ("user 'u'", "use an exec plugin"),
    ),
    (
        "exec apiVersion",
        _with(user__exec={"apiVersion": "v9", "command": "x"}, user__token=None),
        ("user 'u'", "is not one of"),
    ),
]


@pytest.mark.parametrize(
    ("config", "fragments"), [(c, f) for _, c, f in REFUSALS], ids=[i for i, _, _ in REFUSALS]
)
def test_refusals_name_the_file_and_the_fix(
    tmp_path: Path, config: dict[str, Any], fragments: tuple[str, ...]
) -> None:
    _refused(_write(tmp_path / "kc", config), *fragments)


def test_a_name_twice_in_one_file_is_refused(tmp_path: Path) -> None:
    config = _config()
    config["clusters"].append(config["clusters"][0])
    _refused(_write(tmp_path / "kc", config), "defines cluster 'c' twice", "remove or rename")


def test_relative_paths_are_reported_resolved(tmp_path: Path) -> None:
    path = _write(tmp_path / "kc", _with(cluster__certificate_authority="absent.crt"))
    _refused(path, str(tmp_path / "absent.crt"))
