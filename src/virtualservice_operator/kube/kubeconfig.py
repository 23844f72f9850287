"""Where the API server is, whom to trust and who we are: kubeconfig and in-cluster loading.

`ClusterAccess.from_kubeconfig(path)` reads, in this order:

1. `path` when given, that file alone;
2. else the in-cluster ServiceAccount (its token and namespace files, and
   KUBERNETES_SERVICE_HOST/PORT), the token re-read as the kubelet rotates it;
3. else `$KUBECONFIG`, a colon-separated list merged as kubectl merges it (for clusters,
   contexts and users the first file to define a name wins; `current-context` comes from
   the first file that sets one; missing files are skipped, but one must exist);
4. else `~/.kube/config`.

Relative paths (certificate-authority, client-certificate, client-key, tokenFile, an exec
command with a `/`) are relative to the file that defined their entry, as in client-go.
What client-go refuses is refused here too, with a `KubeconfigError` that names the file,
the entry and the fix: an undefined context, cluster or user, a CA together with
`insecure-skip-tls-verify`, half a client certificate, a file and its `-data` both set.

Only the standard library, PyYAML and msgspec: the read-only commands import this, and
start faster without an HTTP client's config layer.
"""

from __future__ import annotations

import base64
import binascii
import os
import ssl
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import msgspec
import yaml

from virtualservice_operator.kube.credentials import (
    Credentials,
    CredentialsError,
    TokenFileCredentials,
    credentials_for,
)
from virtualservice_operator.kube.kubeconfig_types import (
    Cluster,
    Context,
    User,
)

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class KubeconfigError(Exception):
    """The kubeconfig (or in-cluster configuration) cannot be used; the message says why."""


class _NamedCluster(msgspec.Struct):
    name: str
    cluster: Cluster = msgspec.field(default_factory=Cluster)


class _NamedContext(msgspec.Struct):
    name: str
    context: Context = msgspec.field(default_factory=Context)


class _NamedUser(msgspec.Struct):
    name: str
    user: User = msgspec.field(default_factory=User)


class _File(msgspec.Struct):
    clusters: list[_NamedCluster] | None = None
    contexts: list[_NamedContext] | None = None
    users: list[_NamedUser] | None = None
    current_context: str | None = msgspec.field(name="current-context", default=None)


T = TypeVar("T")


@dataclass
class _Merged:
    """Entries by name, each with the file that defined it (relative paths are its)."""

    files: list[Path]
    clusters: dict[str, tuple[Cluster, Path]] = field(default_factory=dict)
    contexts: dict[str, tuple[Context, Path]] = field(default_factory=dict)
    users: dict[str, tuple[User, Path]] = field(default_factory=dict)
    current_context: tuple[str, Path] | None = None

    def where(self) -> str:
        return str(self.files[0]) if len(self.files) == 1 else f"KUBECONFIG={_list(self.files)}"


def _list(files: list[Path]) -> str:
    return os.pathsep.join(str(f) for f in files)


# -- reading and merging files -------------------------------------------------------------


def _read(path: Path) -> _File:
    try:
        text = path.read_bytes()
    except OSError as e:
        raise KubeconfigError(
            f"cannot read kubeconfig {path}: {e.strerror or e}; "
            "give an existing, readable file (--kubeconfig or KUBECONFIG)"
        ) from e
    try:
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as e:
        raise KubeconfigError(
            f"kubeconfig {path} is not YAML ({_yaml_error(e)}); fix its syntax"
        ) from e
    if data is None:  # an empty file is an empty kubeconfig, as for kubectl
        data = {}
    if not isinstance(data, dict):
        raise KubeconfigError(
            f"kubeconfig {path} is a YAML {type(data).__name__}, not a mapping; "
            "a kubeconfig has clusters:, contexts:, users: and current-context:"
        )
    try:
        return msgspec.convert(data, _File)
    except msgspec.ValidationError as e:
        raise KubeconfigError(f"kubeconfig {path}: {e}; fix that field") from e


def _yaml_error(e: yaml.YAMLError) -> str:
    """Where and what, without PyYAML's excerpt of the line (it may hold a secret)."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or type(e).__name__
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else problem


def _add(
    into: dict[str, tuple[T, Path]], entries: list[tuple[str, T]], kind: str, path: Path
) -> None:
    seen: set[str] = set()
    for name, entry in entries:
        if name in seen:  # client-go refuses a name twice in one file
            raise KubeconfigError(
                f"kubeconfig {path} defines {kind} {name!r} twice; remove or rename one"
            )
        seen.add(name)
        into.setdefault(name, (entry, path))  # the first file to define a name wins


def _merge(files: list[Path]) -> _Merged:
    merged = _Merged(files)
    for path in files:
        read = _read(path)
        _add(merged.clusters, [(c.name, c.cluster) for c in read.clusters or ()], "cluster", path)
        _add(merged.contexts, [(c.name, c.context) for c in read.contexts or ()], "context", path)
        _add(merged.users, [(u.name, u.user) for u in read.users or ()], "user", path)
        if merged.current_context is None and read.current_context:
            merged.current_context = (read.current_context, path)
    return merged


def _from_env_list(value: str) -> list[Path]:
    """$KUBECONFIG's files that exist, in order and each once; an error if none does."""
    listed = list(dict.fromkeys(p for p in value.split(os.pathsep) if p))
    existing = [Path(p) for p in listed if Path(p).exists()]
    if not existing:
        raise KubeconfigError(
            f"none of the files in KUBECONFIG={value} exists; "
            "point KUBECONFIG at a kubeconfig file or give --kubeconfig"
        )
    return existing


# -- resolving the current context ---------------------------------------------------------


def _resolve(base: Path, value: str | None) -> str | None:
    """A path relative to the directory of the kubeconfig that named it."""
    if not value or os.path.isabs(value):
        return value
    return str(base.parent / value)


def _resolve_user(user: User, path: Path) -> User:
    command_exec = user.exec
    # As client-go: a command with a slash is a path; a bare name is looked up in PATH.
    if command_exec is not None and "/" in command_exec.command:
        command = _resolve(path, command_exec.command)
        command_exec = msgspec.structs.replace(command_exec, command=command)
    return msgspec.structs.replace(
        user,
        exec=command_exec,
        token_file=_resolve(path, user.token_file),
        client_cert=_resolve(path, user.client_cert),
        client_key=_resolve(path, user.client_key),
    )


@dataclass(frozen=True)
class _Selected:
    """The current context's cluster and user, each with the file that defined it."""

    cluster_name: str
    cluster: Cluster
    cluster_file: Path
    user_name: str | None = None
    user: User | None = None
    user_file: Path | None = None


def _select(merged: _Merged) -> _Selected:
    where = merged.where()
    if merged.current_context is None:
        raise KubeconfigError(
            f"{where} sets no current-context; set one (kubectl config use-context NAME)"
        )
    name, named_in = merged.current_context
    if name not in merged.contexts:
        raise KubeconfigError(
            f"{named_in}: current-context {name!r} is not defined in {where}; "
            "add it under contexts: or choose another (kubectl config use-context NAME)"
        )
    context, context_file = merged.contexts[name]
    if not context.cluster:
        raise KubeconfigError(f"{context_file}: context {name!r} names no cluster; add cluster:")
    if context.cluster not in merged.clusters:
        raise KubeconfigError(
            f"{context_file}: context {name!r} names cluster {context.cluster!r}, which is not "
            f"defined in {where}; add it under clusters: or fix the context"
        )
    cluster, cluster_file = merged.clusters[context.cluster]
    cluster = msgspec.structs.replace(
        cluster, certificate_authority=_resolve(cluster_file, cluster.certificate_authority)
    )
    if not context.user:
        return _Selected(context.cluster, cluster, cluster_file)
    if context.user not in merged.users:
        raise KubeconfigError(
            f"{context_file}: context {name!r} names user {context.user!r}, which is not "
            f"defined in {where}; add it under users: or fix the context"
        )
    user, user_file = merged.users[context.user]
    return _Selected(
        context.cluster,
        cluster,
        cluster_file,
        context.user,
        _resolve_user(user, user_file),
        user_file,
    )


# -- TLS ---------------------------------------------------------------------------------


def _decode(data: str, what: str) -> bytes:
    try:
        # Whitespace is allowed (Go's decoder skips line breaks); anything else is not.
        return base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError) as e:
        raise KubeconfigError(f"{what} is not base64 ({e}); encode it with `base64 -w0`") from e


class _EncryptedKey(Exception):
    pass


def _no_password() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal for an encrypted key.
    raise _EncryptedKey


@contextmanager
def _as_file(path: str | None, data: str | None, what: str) -> Iterator[str]:
    """The file, or the decoded data in a private temporary file removed on exit."""
    if path is not None:
        yield path
        return
    assert data is not None
    decoded = _decode(data, what)
    fd, name = tempfile.mkstemp(prefix="kubeconfig-", suffix=".pem")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(decoded)
        yield name
    finally:
        os.unlink(name)


def _only_one(file: str | None, data: str | None, what: str, where: str) -> None:
    if file and data:
        raise KubeconfigError(
            f"{where} sets both {what} and {what}-data; keep one (client-go refuses both)"
        )


def _trust(cluster: Cluster, where: str) -> ssl.SSLContext:
    ca_file, ca_data = cluster.certificate_authority, cluster.certificate_authority_data
    _only_one(ca_file, ca_data, "certificate-authority", where)
    if cluster.insecure_skip_tls_verify:
        if ca_file or ca_data:
            raise KubeconfigError(
                f"{where} sets insecure-skip-tls-verify together with a certificate "
                "authority (client-go refuses it); remove one of them"
            )
        # Nothing is verified: no trust store to load.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    try:
        if ca_file:
            return ssl.create_default_context(cafile=ca_file)
        if ca_data:
            pem = _decode(ca_data, f"{where}: certificate-authority-data")
            return ssl.create_default_context(cadata=pem.decode("ascii"))
    except (OSError, UnicodeDecodeError, ValueError) as e:  # ssl.SSLError is an OSError
        source = f"certificate-authority {ca_file}" if ca_file else "certificate-authority-data"
        raise KubeconfigError(
            f"{where}: {source} does not load ({e}); give the API server's CA certificate in PEM"
        ) from e
    return _system_trust()


def _system_trust() -> ssl.SSLContext:
    """The system's trust store at OpenSSL's compiled-in paths: SSL_CERT_FILE and
    SSL_CERT_DIR in the environment must not change whom we trust."""
    paths = ssl.get_default_verify_paths()
    cafile = paths.openssl_cafile if os.path.isfile(paths.openssl_cafile) else None
    capath = paths.openssl_capath if os.path.isdir(paths.openssl_capath) else None
    if cafile is None and capath is None:  # no compiled-in store: OpenSSL's own lookup
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=cafile, capath=capath)


def _load_client_certificate(context: ssl.SSLContext, user: User, where: str) -> None:
    has_cert = bool(user.client_cert or user.client_cert_data)
    has_key = bool(user.client_key or user.client_key_data)
    if not has_cert and not has_key:
        return
    _only_one(user.client_cert, user.client_cert_data, "client-certificate", where)
    _only_one(user.client_key, user.client_key_data, "client-key", where)
    if has_cert != has_key:
        have, lack = ("client-certificate", "client-key")
        if has_key:
            have, lack = lack, have
        raise KubeconfigError(
            f"{where} sets a {have} but no {lack}; give both (or their -data) or neither"
        )
    cert_what = f"{where}: client-certificate-data"
    key_what = f"{where}: client-key-data"
    with (
        _as_file(user.client_cert or None, user.client_cert_data, cert_what) as cert,
        _as_file(user.client_key or None, user.client_key_data, key_what) as key,
    ):
        try:
            context.load_cert_chain(cert, key, password=_no_password)
        except _EncryptedKey:
            raise KubeconfigError(
                f"{where}: the client key is encrypted; give an unencrypted key "
                "(as client-go requires)"
            ) from None
        except (OSError, ValueError) as e:
            raise KubeconfigError(
                f"{where}: the client certificate and key do not load ({e}); give a PEM "
                "certificate and its matching PEM private key"
            ) from e


# -- the result ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterAccess:
    """Where the API server is and how to reach it, from a kubeconfig or in-cluster."""

    server: str
    ssl_context: ssl.SSLContext | None
    credentials: Credentials
    # The name to verify the server's certificate against, when not the server's host.
    tls_server_name: str | None = None

    @property
    def host(self) -> str:
        """The server's host name: the `host` label of rest_client_* metrics."""
        return urlsplit(self.server).hostname or ""

    @classmethod
    def from_kubeconfig(
        cls,
        path: str | None = None,
        *,
        service_account: Path = SERVICE_ACCOUNT,
        environ: Mapping[str, str] | None = None,
    ) -> ClusterAccess:
        """`path`, else in-cluster, else $KUBECONFIG, else ~/.kube/config (module docs)."""
        env = os.environ if environ is None else environ
        if path:
            return cls._from_files(_merge([Path(path).expanduser()]))
        if (in_cluster := cls._in_cluster(service_account, env)) is not None:
            return in_cluster
        if env.get("KUBECONFIG"):
            return cls._from_files(_merge(_from_env_list(env["KUBECONFIG"])))
        home = Path(env["HOME"]) if env.get("HOME") else Path.home()
        return cls._from_files(_merge([home / ".kube" / "config"]))

    @classmethod
    def _in_cluster(cls, account: Path, env: Mapping[str, str]) -> ClusterAccess | None:
        host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
        token = account / "token"
        if not (host and port and token.is_file() and (account / "namespace").is_file()):
            return None
        if ":" in host:  # IPv6
            host = f"[{host}]"
        ca = account / "ca.crt"
        try:
            context = ssl.create_default_context(cafile=str(ca))
        except OSError as e:
            raise KubeconfigError(
                f"in-cluster: the ServiceAccount CA {ca} does not load ({e}); "
                "mount the ServiceAccount token volume with its ca.crt"
            ) from e
        return cls(f"https://{host}:{port}", context, TokenFileCredentials(str(token)))

    @classmethod
    def _from_files(cls, merged: _Merged) -> ClusterAccess:
        selected = _select(merged)
        cluster, user = selected.cluster, selected.user
        where = f"{selected.cluster_file}: cluster {selected.cluster_name!r}"
        user_where = f"{selected.user_file}: user {selected.user_name!r}"
        server = (cluster.server or "").strip()
        if not server:
            raise KubeconfigError(f"{where} has no server; add server: https://HOST:PORT")
        try:
            parts = urlsplit(server)
            hostname, _ = parts.hostname, parts.port  # a bad port raises here, not later
        except ValueError as e:
            raise KubeconfigError(f"{where}: server {server!r} is not a URL ({e})") from e
        if parts.scheme not in ("https", "http") or not hostname:
            raise KubeconfigError(
                f"{where}: server {server!r} is not an http(s) URL; write https://HOST:PORT"
            )
        context = None
        if parts.scheme == "https":
            context = _trust(cluster, where)
            if user is not None:
                _load_client_certificate(context, user, user_where)
        try:
            credentials = credentials_for(user)
        except CredentialsError as e:
            raise KubeconfigError(f"{user_where}: {e}") from e
        return cls(server, context, credentials, cluster.tls_server_name or None)
