"""A kubeconfig's parts, with its own field names (decoded by `kube.kubeconfig`).

Kept apart from the loader so that `kube.credentials` can take a `User` without
importing the loader that imports it.
"""

from __future__ import annotations

from typing import Any

import msgspec


class Cluster(msgspec.Struct, frozen=True):
    server: str | None = None
    certificate_authority: str | None = msgspec.field(name="certificate-authority", default=None)
    certificate_authority_data: str | None = msgspec.field(
        name="certificate-authority-data", default=None
    )
    insecure_skip_tls_verify: bool = msgspec.field(name="insecure-skip-tls-verify", default=False)
    tls_server_name: str | None = msgspec.field(name="tls-server-name", default=None)


class Context(msgspec.Struct, frozen=True):
    cluster: str | None = None
    user: str | None = None
    namespace: str | None = None


class NameValue(msgspec.Struct, frozen=True):
    name: str
    value: str


class UserExec(msgspec.Struct, frozen=True):
    apiVersion: str  # the kubeconfig's names
    command: str
    env: list[NameValue] | None = None
    args: list[str] | None = None
    installHint: str | None = None


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
