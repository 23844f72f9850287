"""Where the API server is, whom to trust and who we are: kubeconfig and in-cluster loading.

`ClusterAccess.from_kubeconfig(path, context)` reads, in controller-runtime's order:

1. `path` when given (--kubeconfig), that file alone;
2. else `$KUBECONFIG`, a colon-separated list merged as kubectl merges it (for clusters,
   contexts and users the first file to define a name wins; `current-context` comes from
   the first file that sets one; missing files are skipped, but one must exist);
3. else the in-cluster ServiceAccount (KUBERNETES_SERVICE_HOST/PORT and a readable token
   file, as client-go's rest.InClusterConfig), the token re-read as the kubelet rotates it;
4. else `~/.kube/config`.

`context` (--context) replaces the files' current-context. Relative paths
(certificate-authority, client-certificate, client-key, tokenFile, an exec command with
a `/`) are relative to the file that defined their entry, as in client-go. What client-go
refuses is refused here too, with a `KubeconfigError` that names the file, the entry and
the fix; what client-go reads and this client cannot do (an `auth-provider`, a SOCKS or
HTTPS proxy, a proxy with a password) is refused by `KubeconfigUnsupported`, which names
the field. Nothing a kubeconfig says is dropped unread: hack/controlplane/kube/
kubeconfig-resolve prints client-go's reading, and tests/unit/test_kubeconfig_conformance.py
holds this loader to it over a corpus of situations.

Only the standard library, PyYAML and msgspec: the read-only commands import this, and
start faster without an HTTP client's config layer.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import ssl
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from urllib.parse import quote, urlsplit

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
from virtualservice_operator.kube.transport import ProxyError, memory_file, proxy_for, trust

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# A cluster extension by this name is the exec plugin's spec.cluster.config (client-go).
EXEC_EXTENSION = "client.authentication.k8s.io/exec"

log = logging.getLogger(__name__)


class KubeconfigError(Exception):
    """The kubeconfig (or in-cluster configuration) cannot be used; the message says why."""


class KubeconfigUnsupported(KubeconfigError):
    """client-go would use this field, and this client cannot: `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


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


class _YamlLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """YAML as client-go's decoder (go-yaml v2) reads it: `y` and `n` are booleans too,
    so that `name: y` is refused here as kubectl refuses it, not read as a string."""

    bool_values: ClassVar[dict[str, bool]] = {
        **yaml.SafeLoader.bool_values,
        "y": True,
        "n": False,
    }


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:y|Y|n|N)$"), list("yYnN")
)


def _read(path: Path) -> _File:
    try:
        text = path.read_bytes()
    except OSError as e:
        raise KubeconfigError(
            f"cannot read kubeconfig {path}: {e.strerror or e}; "
            "give an existing, readable file (--kubeconfig or KUBECONFIG)"
        ) from e
    try:
        data = yaml.load(text, Loader=_YamlLoader)
    except yaml.YAMLError as e:
        raise KubeconfigError(
            f"kubeconfig {path} is not YAML ({_yaml_error(e)}); fix its syntax"
        ) from None
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
        # msgspec's message names the field and the type, never the value.
        raise KubeconfigError(f"kubeconfig {path}: {e}; fix that field") from None


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


def _absolute(path: str) -> Path:
    return Path(os.path.abspath(os.path.expanduser(path)))


def _from_env_list(value: str) -> list[Path]:
    """$KUBECONFIG's files that exist, in order and each once; an error if none does."""
    listed = list(dict.fromkeys(p for p in value.split(os.pathsep) if p))
    existing = [_absolute(p) for p in listed if Path(p).exists()]
    if not existing:
        raise KubeconfigError(
            f"none of the files in KUBECONFIG={value} exists; "
            "point KUBECONFIG at a kubeconfig file or give --kubeconfig"
        )
    return existing


# -- resolving the current context ---------------------------------------------------------


def _resolve(base: Path, value: str | None) -> str | None:
    """A path relative to the directory of the kubeconfig that named it (cleaned, as
    Go's filepath.Join cleans it)."""
    if not value or os.path.isabs(value):
        return value
    return os.path.normpath(os.path.join(base.parent, value))


def _resolve_user(user: User, path: Path) -> User:
    command_exec = user.exec
    # As client-go: a command with a slash is a path; a bare name is looked up in PATH.
    if command_exec is not None and "/" in (command_exec.command or ""):
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


def _select(merged: _Merged, context_override: str | None) -> _Selected:
    where = merged.where()
    if context_override:
        name, named_in = context_override, "--context"
    elif merged.current_context is None:
        raise KubeconfigError(
            f"{where} sets no current-context; set one (kubectl config use-context NAME) "
            "or give --context"
        )
    else:
        name, named_in = merged.current_context[0], str(merged.current_context[1])
    if name not in merged.contexts:
        raise KubeconfigError(
            f"{named_in}: context {name!r} is not defined in {where}; "
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
        # client-go sends no credentials at all then; a typo would act as anonymous.
        raise KubeconfigUnsupported(
            "context.user",
            f"{context_file}: context {name!r} names user {context.user!r} (context.user), "
            f"which is not defined in {where} (client-go would connect with no "
            "credentials); add it "
            "under users:, or remove user: from the context to connect without any",
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
    except (binascii.Error, ValueError):
        raise KubeconfigError(f"{what} is not base64; encode it with `base64 -w0`") from None


class _EncryptedKey(Exception):
    pass


def _no_password() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal for an encrypted key.
    raise _EncryptedKey


@contextmanager
def _as_file(path: str | None, data: str | None, what: str) -> Iterator[str]:
    """The file, or the decoded data in a memory file (never on a disk)."""
    if path is not None:
        yield path
        return
    assert data is not None
    with memory_file(_decode(data, what)) as name:
        yield name


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
        return trust(insecure=True)
    try:
        if ca_file:
            return trust(cafile=ca_file)
        if ca_data:
            pem = _decode(ca_data, f"{where}: certificate-authority-data")
            return trust(cadata=pem.decode("ascii"))
    except (OSError, UnicodeDecodeError, ValueError) as e:  # ssl.SSLError is an OSError
        source = f"certificate-authority {ca_file}" if ca_file else "certificate-authority-data"
        reason = getattr(e, "strerror", None) or type(e).__name__
        raise KubeconfigError(
            f"{where}: {source} does not load ({reason}); give the API server's CA "
            "certificate in PEM"
        ) from None
    return trust()


def _load_client_certificate(context: ssl.SSLContext, user: User, where: str) -> None:
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
            # OpenSSL's reason only: its message never holds the key, but say so by
            # construction rather than trust it.
            reason = getattr(e, "reason", None) or getattr(e, "strerror", None)
            raise KubeconfigError(
                f"{where}: the client certificate and key do not load "
                f"({reason or type(e).__name__}); give a PEM certificate and its matching "
                "PEM private key"
            ) from None


# -- checks client-go makes (clientcmd's validateAuthInfo) ---------------------------------


def _check_user(user: User, where: str) -> None:
    has_cert = bool(user.client_cert or user.client_cert_data)
    has_key = bool(user.client_key or user.client_key_data)
    _only_one(user.client_cert, user.client_cert_data, "client-certificate", where)
    _only_one(user.client_key, user.client_key_data, "client-key", where)
    if has_cert != has_key:
        have, lack = ("client-certificate", "client-key")
        if has_key:
            have, lack = lack, have
        raise KubeconfigError(
            f"{where} sets a {have} but no {lack}; give both (or their -data) or neither"
        )
    if user.token and (user.username or user.password):
        raise KubeconfigError(
            f"{where} sets both token and username/password; keep one (client-go refuses both)"
        )
    if user.exec is not None and user.auth_provider:
        raise KubeconfigError(f"{where} sets both exec and auth-provider; keep exec")
    if user.auth_provider:
        raise KubeconfigUnsupported(
            "auth-provider",
            f"{where}: auth-provider is not supported (client-go deprecated it and "
            "Kubernetes removed its providers); use an exec plugin (user.exec) instead",
        )
    impersonating = user.impersonate_uid or user.impersonate_groups or user.impersonate_extra
    if impersonating and not user.impersonate:
        raise KubeconfigError(
            f"{where} sets as-uid, as-groups or as-user-extra without as; "
            "name the user to act as (as:)"
        )
    if user.token_file and not user.token:
        try:  # read now, as clientcmd does: a missing file fails at start, not later
            with open(user.token_file, "rb"):
                pass
        except OSError as e:
            raise KubeconfigError(
                f"{where}: cannot read tokenFile {user.token_file} "
                f"({e.strerror or type(e).__name__}); give a readable file"
            ) from None


def _impersonation(user: User | None) -> tuple[tuple[str, str], ...]:
    """client-go's Impersonate-* headers (one per group and per extra value)."""
    if user is None or not user.impersonate:
        return ()
    headers = [("Impersonate-User", user.impersonate)]
    if user.impersonate_uid:
        headers.append(("Impersonate-Uid", user.impersonate_uid))
    headers += [("Impersonate-Group", group) for group in user.impersonate_groups or ()]
    for key, values in (user.impersonate_extra or {}).items():
        name = "Impersonate-Extra-" + quote(key, safe="")
        headers += [(name, value) for value in values]
    return tuple(headers)


def _exec_cluster(cluster: Cluster, server: str, proxy: str | None) -> dict[str, Any]:
    """The ExecCredential's spec.cluster (client.authentication.k8s.io Cluster)."""
    ca = cluster.certificate_authority_data
    if not ca and cluster.certificate_authority:  # loaded by _trust already: readable
        ca = base64.b64encode(Path(cluster.certificate_authority).read_bytes()).decode()
    info: dict[str, Any] = {"server": server}
    if cluster.tls_server_name:
        info["tls-server-name"] = cluster.tls_server_name
    if cluster.insecure_skip_tls_verify:
        info["insecure-skip-tls-verify"] = True
    if ca:
        info["certificate-authority-data"] = "".join(ca.split())
    if proxy:
        info["proxy-url"] = proxy
    if cluster.disable_compression:
        info["disable-compression"] = True
    for extension in cluster.extensions or ():
        if extension.name == EXEC_EXTENSION:
            info["config"] = extension.extension
    return info


# -- the result ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterAccess:
    """Where the API server is and how to reach it, from a kubeconfig or in-cluster."""

    server: str
    ssl_context: ssl.SSLContext | None
    credentials: Credentials
    # The name to verify the server's certificate against, when not the server's host.
    tls_server_name: str | None = None
    headers: tuple[tuple[str, str], ...] = ()  # impersonation, on every request
    proxy: str | None = None  # an http:// proxy, from proxy-url or the environment
    compression: bool = True
    # What was resolved, in kubeconfig-resolve's terms (`describe`); no secret.
    resolved: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def host(self) -> str:
        """The server's host name: the `host` label of rest_client_* metrics."""
        return urlsplit(self.server).hostname or ""

    @classmethod
    def from_kubeconfig(
        cls,
        path: str | None = None,
        context: str | None = None,
        *,
        service_account: Path = SERVICE_ACCOUNT,
        environ: Mapping[str, str] | None = None,
    ) -> ClusterAccess:
        """`path`, else $KUBECONFIG, else in-cluster, else ~/.kube/config (module docs)."""
        env = os.environ if environ is None else environ
        if path:
            return cls._from_files(_merge([_absolute(path)]), context, env)
        if env.get("KUBECONFIG"):
            return cls._from_files(_merge(_from_env_list(env["KUBECONFIG"])), context, env)
        if (in_cluster := cls._in_cluster(service_account, env)) is not None:
            return in_cluster
        home = Path(env["HOME"]) if env.get("HOME") else Path.home()
        return cls._from_files(_merge([home / ".kube" / "config"]), context, env)

    @classmethod
    def _in_cluster(cls, account: Path, env: Mapping[str, str]) -> ClusterAccess | None:
        """client-go's rest.InClusterConfig: the service's address and a readable token
        (no namespace file needed); a CA that does not load leaves the system's trust."""
        host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
        token = account / "token"
        if not (host and port and os.access(token, os.R_OK) and token.is_file()):
            return None
        if ":" in host:  # IPv6
            host = f"[{host}]"
        server = f"https://{host}:{port}"
        ca = account / "ca.crt"
        try:
            context, ca_source = trust(cafile=str(ca)), f"file:{ca}"
        except OSError as e:
            log.error("in-cluster: the ServiceAccount CA %s does not load (%s)", ca, e.strerror)
            context, ca_source = trust(), "system"
        proxy = cls._proxy(server, None, env, "in-cluster")
        resolved = _described(server, ca=ca_source, token_file=str(token), proxy=proxy)
        return cls(
            server, context, TokenFileCredentials(str(token)), proxy=proxy, resolved=resolved
        )

    @staticmethod
    def _proxy(
        server: str, proxy_url: str | None, env: Mapping[str, str], where: str
    ) -> str | None:
        try:
            return proxy_for(server, proxy_url, env)
        except ProxyError as e:
            raise KubeconfigUnsupported(e.source, f"{where}: {e}") from None

    @classmethod
    def _from_files(
        cls, merged: _Merged, context_override: str | None, env: Mapping[str, str]
    ) -> ClusterAccess:
        selected = _select(merged, context_override)
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
            raise KubeconfigError(f"{where}: server {server!r} is not a URL ({e})") from None
        if parts.scheme not in ("https", "http") or not hostname:
            raise KubeconfigError(
                f"{where}: server {server!r} is not an http(s) URL; write https://HOST:PORT"
            )
        context = _trust(cluster, where)  # checked for http too, as client-go checks it
        if user is not None:
            _check_user(user, user_where)
            if user.client_cert or user.client_cert_data:
                _load_client_certificate(context, user, user_where)
        proxy = cls._proxy(server, cluster.proxy_url, env, where)
        try:
            plugin = user.exec if user is not None else None
            asks = plugin is not None and plugin.provideClusterInfo
            credentials = credentials_for(
                user, _exec_cluster(cluster, server, proxy) if asks else None
            )
        except CredentialsError as e:
            raise KubeconfigError(f"{user_where}: {e}") from None
        return cls(
            server,
            context if parts.scheme == "https" else None,
            credentials,
            cluster.tls_server_name or None,
            _impersonation(user),
            proxy,
            not cluster.disable_compression,
            _described_files(server, cluster, user, proxy),
        )

    def describe(self) -> dict[str, Any]:
        """What was resolved, as hack/controlplane/kube/kubeconfig-resolve prints
        client-go's reading (the conformance test compares the two)."""
        return dict(self.resolved)


def _described(
    server: str,
    *,
    ca: str,
    token_file: str = "",
    proxy: str | None = None,
    **more: Any,
) -> dict[str, Any]:
    return {
        "server": server,
        "tlsServerName": "",
        "ca": ca,
        "insecure": False,
        "clientCert": False,
        "token": "",
        "tokenFile": token_file,
        "username": "",
        "exec": None,
        "impersonate": None,
        "proxy": proxy or "",
        "compression": True,
        **more,
    }


def _described_files(
    server: str, cluster: Cluster, user: User | None, proxy: str | None
) -> dict[str, Any]:
    if cluster.certificate_authority_data:
        ca = "data"
    elif cluster.certificate_authority:
        ca = f"file:{cluster.certificate_authority}"
    else:
        ca = "none" if cluster.insecure_skip_tls_verify else "system"
    user = user or User()
    plugin = user.exec
    exec_ = None
    if plugin is not None:
        default_mode = (
            "IfAvailable" if plugin.apiVersion and plugin.apiVersion.endswith("beta1") else ""
        )
        exec_ = {
            "command": plugin.command,
            "args": plugin.args,
            "env": {var.name: var.value for var in plugin.env or ()},
            "apiVersion": plugin.apiVersion,
            "provideClusterInfo": plugin.provideClusterInfo,
            "interactiveMode": plugin.interactiveMode or default_mode,
        }
    impersonate = None
    if user.impersonate:
        impersonate = {
            "user": user.impersonate,
            "uid": user.impersonate_uid or "",
            "groups": user.impersonate_groups,
            "extra": user.impersonate_extra,
        }
    return _described(
        server,
        ca=ca,
        token_file=user.token_file or "",
        proxy=proxy,
        tlsServerName=cluster.tls_server_name or "",
        insecure=cluster.insecure_skip_tls_verify,
        clientCert=bool(user.client_cert or user.client_cert_data),
        token="" if user.token_file else user.token or "",
        username=user.username or "",
        exec=exec_,
        impersonate=impersonate,
        compression=not cluster.disable_compression,
    )
