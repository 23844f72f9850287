"""Credentials for the API server, as a kubeconfig or the in-cluster ServiceAccount gives them.

Each request asks `Credentials.header()` for its Authorization value; after a 401 the
client calls `refresh()` once and retries when it says there is something new to try.
That is client-go's behaviour for the cases an operator meets:

- a token file (in-cluster: the kubelet rotates the projected ServiceAccount token):
  re-read at most every minute, and at once after a 401;
- an exec plugin (`client.authentication.k8s.io/v1` or `v1beta1`): run when there is no
  token, when its `expirationTimestamp` is near, and after a 401;
- a static token or basic auth: sent as is;
- client certificates: in the TLS context, no header.

The kubeconfig itself (contexts, in-cluster detection, CA and certificate files or data)
is read by `kubeconfig`, which hands its `User` to `credentials_for`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from datetime import datetime
from pathlib import Path

from virtualservice_operator.kube.kubeconfig_types import User, UserExec

TOKEN_FILE_MAX_AGE = 60.0  # client-go's cachingTokenSource period for token files
EXEC_EXPIRY_MARGIN = 10.0
EXEC_API_VERSIONS = (
    "client.authentication.k8s.io/v1",
    "client.authentication.k8s.io/v1beta1",
    "client.authentication.k8s.io/v1alpha1",
)


class CredentialsError(Exception):
    """Credentials could not be obtained (a missing token file, a failing exec plugin...)."""


class Credentials:
    """No Authorization header: client certificates (in the TLS context) or none."""

    async def header(self) -> str | None:
        return None

    async def refresh(self) -> bool:
        """After a 401: True when a retry could succeed with what `header()` now gives."""
        return False


class StaticCredentials(Credentials):
    def __init__(self, value: str) -> None:
        self._value = value

    async def header(self) -> str | None:
        return self._value


class TokenFileCredentials(Credentials):
    def __init__(self, path: str, max_age: float = TOKEN_FILE_MAX_AGE) -> None:
        self._path = Path(path)
        self._max_age = max_age
        self._value: str | None = None
        self._read_at = 0.0

    def _read(self) -> str:
        try:
            token = self._path.read_text().strip()
        except OSError as e:
            raise CredentialsError(f"cannot read token file {self._path}: {e}") from e
        self._read_at = time.monotonic()
        return f"Bearer {token}"

    async def header(self) -> str | None:
        if self._value is None or time.monotonic() - self._read_at > self._max_age:
            self._value = self._read()
        return self._value

    async def refresh(self) -> bool:
        old, self._value = self._value, self._read()
        return self._value != old


class ExecCredentials(Credentials):
    """A kubeconfig `exec` plugin; one run at a time, however many requests wait for it."""

    def __init__(self, plugin: UserExec) -> None:
        if plugin.apiVersion not in EXEC_API_VERSIONS:
            raise CredentialsError(
                f"exec plugin {plugin.command}: apiVersion {plugin.apiVersion!r} is not one "
                f"of {', '.join(EXEC_API_VERSIONS)}"
            )
        self._plugin = plugin
        self._value: str | None = None
        self._expires_at: float | None = None  # monotonic
        self._lock = asyncio.Lock()

    def _fresh(self) -> bool:
        return self._value is not None and (
            self._expires_at is None or time.monotonic() < self._expires_at - EXEC_EXPIRY_MARGIN
        )

    async def header(self) -> str | None:
        if not self._fresh():
            async with self._lock:
                if not self._fresh():
                    await self._run()
        return self._value

    async def refresh(self) -> bool:
        old = self._value
        async with self._lock:
            if self._value == old:  # nobody refreshed while we waited
                await self._run()
        return self._value != old

    async def _run(self) -> None:
        plugin = self._plugin
        env = dict(os.environ)
        env.update((var.name, var.value) for var in plugin.env or ())
        env["KUBERNETES_EXEC_INFO"] = json.dumps(
            {
                "apiVersion": plugin.apiVersion,
                "kind": "ExecCredential",
                "spec": {"interactive": False},
            }
        )
        try:
            proc = await asyncio.create_subprocess_exec(
                plugin.command,
                *(plugin.args or ()),
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await proc.communicate()
        except OSError as e:
            hint = f" ({plugin.installHint.strip()})" if plugin.installHint else ""
            raise CredentialsError(f"exec plugin {plugin.command}: {e}{hint}") from e
        if proc.returncode != 0:
            raise CredentialsError(
                f"exec plugin {plugin.command} exited {proc.returncode}: "
                f"{err.decode(errors='replace').strip()[:500]}"
            )
        try:
            status = json.loads(out)["status"]
            token = status["token"]
        except (ValueError, KeyError, TypeError) as e:
            raise CredentialsError(
                f"exec plugin {plugin.command}: expected an ExecCredential with "
                f"status.token on stdout ({e})"
            ) from e
        self._value = f"Bearer {token}"
        self._expires_at = _expiry(status.get("expirationTimestamp"))


def _expiry(timestamp: object) -> float | None:
    """An RFC 3339 expirationTimestamp as a monotonic deadline (None: never expires)."""
    if not isinstance(timestamp, str) or not timestamp:
        return None
    try:
        at = datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
    return time.monotonic() + (at - time.time())


def credentials_for(user: User | None) -> Credentials:
    """In this order: token file, token, exec, basic auth; client certs need no header."""
    if user is None:
        return Credentials()
    if user.token_file is not None:
        return TokenFileCredentials(user.token_file)
    if user.token is not None:
        return StaticCredentials(f"Bearer {user.token}")
    if user.exec is not None:
        return ExecCredentials(user.exec)
    if user.username and user.password:
        pair = base64.b64encode(f"{user.username}:{user.password}".encode()).decode()
        return StaticCredentials(f"Basic {pair}")
    if user.auth_provider:
        raise CredentialsError(
            "kubeconfig user uses auth-provider, which Kubernetes removed; use an exec plugin"
        )
    return Credentials()
