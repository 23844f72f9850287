"""A kubeconfig's parts, with its own field names (decoded by `kube.kubeconfig`).

Every field client-go's kubeconfig (v1) defines is declared here, so that none is
dropped unread: the loader uses it or refuses it by name. Kept apart from the loader
so that `kube.credentials` can take a `User` without importing the loader.

The reprs name the fields a user set, never their values: a token, a key or a plugin's
environment must not reach a log line through a `{user!r}`.
"""

from __future__ import annotations

from typing import Any

import msgspec


def _set_fields(struct: msgspec.Struct) -> str:
    named = [
        name
        for name in struct.__struct_fields__
        if getattr(struct, name) not in (None, False, "", [], {})
    ]
    return f"{type(struct).__name__}(set: {', '.join(named) or 'nothing'})"


class NamedExtension(msgspec.Struct, frozen=True):
    name: str
    extension: Any = None


class Cluster(msgspec.Struct, frozen=True):
    server: str | None = None
    certificate_authority: str | None = msgspec.field(name="certificate-authority", default=None)
    certificate_authority_data: str | None = msgspec.field(
        name="certificate-authority-data", default=None
    )
    insecure_skip_tls_verify: bool = msgspec.field(name="insecure-skip-tls-verify", default=False)
    tls_server_name: str | None = msgspec.field(name="tls-server-name", default=None)
    proxy_url: str | None = msgspec.field(name="proxy-url", default=None)
    disable_compression: bool = msgspec.field(name="disable-compression", default=False)
    extensions: list[NamedExtension] | None = None


class Context(msgspec.Struct, frozen=True):
    cluster: str | None = None
    user: str | None = None
    namespace: str | None = None


class NameValue(msgspec.Struct, frozen=True):
    name: str
    value: str

    def __repr__(self) -> str:
        return f"NameValue(name={self.name!r})"


class UserExec(msgspec.Struct, frozen=True):
    apiVersion: str | None = None  # the kubeconfig's names
    command: str | None = None
    env: list[NameValue] | None = None
    args: list[str] | None = None
    installHint: str | None = None
    provideClusterInfo: bool = False
    interactiveMode: str | None = None

    def __repr__(self) -> str:
        return f"UserExec(command={self.command!r}, apiVersion={self.apiVersion!r})"


class User(msgspec.Struct, frozen=True):
    exec: UserExec | None = None
    username: str | None = None
    password: str | None = None
    token: str | None = None
    token_file: str | None = msgspec.field(name="tokenFile", default=None)
    auth_provider: dict[str, Any] | None = msgspec.field(name="auth-provider", default=None)
    client_cert: str | None = msgspec.field(name="client-certificate", default=None)
    client_cert_data: str | None = msgspec.field(name="client-certificate-data", default=None)
    client_key: str | None = msgspec.field(name="client-key", default=None)
    client_key_data: str | None = msgspec.field(name="client-key-data", default=None)
    impersonate: str | None = msgspec.field(name="as", default=None)
    impersonate_uid: str | None = msgspec.field(name="as-uid", default=None)
    impersonate_groups: list[str] | None = msgspec.field(name="as-groups", default=None)
    impersonate_extra: dict[str, list[str]] | None = msgspec.field(
        name="as-user-extra", default=None
    )

    def __repr__(self) -> str:
        return _set_fields(self)
