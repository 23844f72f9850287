"""Credentials for the API server, as a kubeconfig or the in-cluster ServiceAccount gives them.

Each request asks `Credentials.header()` for its Authorization value; after a 401 (on a
request or when a watch starts) the client calls `refresh()` once and retries when it
says there is something new to try. That is client-go's behaviour for the cases an
operator meets:

- a token file (in-cluster: the kubelet rotates the projected ServiceAccount token):
  re-read at most every minute, and at once after a 401; a failed re-read keeps the
  last good token (with a warning), as client-go's cachingTokenSource does;
- an exec plugin (`client.authentication.k8s.io/v1` or `v1beta1`): run when there is no
  token, when its `expirationTimestamp` is near, and after a 401; its stderr is the
  process's (a device-code prompt reaches the user), it may read the terminal only as
  its `interactiveMode` allows, and it is killed after `EXEC_TIMEOUT`;
- a static token or basic auth: sent as is;
- client certificates: in the TLS context, no header.

No message here holds a token, a plugin's output or its environment.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from virtualservice_operator.kube.kubeconfig_types import User, UserExec

TOKEN_FILE_MAX_AGE = 60.0  # client-go's cachingTokenSource period for token files
EXEC_EXPIRY_MARGIN = 10.0
# A plugin that hangs must not hold every request; a person answering a device-code
# prompt gets longer.
EXEC_TIMEOUT = 60.0
EXEC_INTERACTIVE_TIMEOUT = 300.0
EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
INTERACTIVE_MODES = ("Never", "IfAvailable", "Always")

log = logging.getLogger(__name__)


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

    def __repr__(self) -> str:
        return f"StaticCredentials({self._value.split(' ', 1)[0]} <redacted>)"

    async def header(self) -> str | None:
        return self._value


class TokenFileCredentials(Credentials):
    """A token file; `fallback` is the kubeconfig's `token` beside its `tokenFile`, used
    while the file cannot be read (client-go's order)."""

    def __init__(
        self, path: str, max_age: float = TOKEN_FILE_MAX_AGE, fallback: str | None = None
    ) -> None:
        self._path = Path(path)
        self._max_age = max_age
        self._value: str | None = f"Bearer {fallback}" if fallback else None
        self._read_at = 0.0 if fallback is None else float("-inf")

    def __repr__(self) -> str:
        return f"TokenFileCredentials({str(self._path)!r})"

    def _read(self) -> str:
        try:
            token = self._path.read_text().strip()
        except OSError as e:
            raise CredentialsError(
                f"cannot read token file {self._path}: {e.strerror or type(e).__name__}"
            ) from e
        if not token:
            raise CredentialsError(f"token file {self._path} is empty")
        return f"Bearer {token}"

    def _reread(self) -> str:
        """The file's token; when it cannot be read, the last good one (warned)."""
        try:
            value = self._read()
        except CredentialsError as e:
            if self._value is None:
                raise
            log.warning("keeping the last good token: %s", e)
            value = self._value
        self._read_at = time.monotonic()
        return value

    async def header(self) -> str | None:
        if self._value is None or time.monotonic() - self._read_at > self._max_age:
            self._value = self._reread()
        return self._value

    async def refresh(self) -> bool:
        old, self._value = self._value, self._reread()
        return self._value != old


class ExecCredentials(Credentials):
    """A kubeconfig `exec` plugin; one run at a time, however many requests wait for it.

    `cluster` is what `provideClusterInfo` sends as the ExecCredential's spec.cluster."""

    def __init__(self, plugin: UserExec, cluster: Mapping[str, Any] | None = None) -> None:
        self._plugin = plugin
        self._command = plugin.command or ""
        self._cluster = dict(cluster) if plugin.provideClusterInfo and cluster else None
        self._value: str | None = None
        self._expires_at: float | None = None  # monotonic
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"ExecCredentials({self._command!r})"

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

    def _interactive(self) -> bool:
        """client-go's isInteractive: the terminal only when the mode allows it."""
        mode = self._plugin.interactiveMode or "IfAvailable"
        if mode == "Never":
            return False
        terminal = sys.stdin is not None and sys.stdin.isatty()
        if mode == "Always" and not terminal:
            raise CredentialsError(
                f"exec plugin {self._command}: interactiveMode Always needs a terminal on "
                "standard input; run it from one, or set interactiveMode: IfAvailable"
            )
        return terminal

    def _exec_info(self, interactive: bool) -> str:
        spec: dict[str, Any] = {"interactive": interactive}
        if self._cluster is not None:
            spec["cluster"] = self._cluster
        info = {"apiVersion": self._plugin.apiVersion, "kind": "ExecCredential", "spec": spec}
        return json.dumps(info)

    async def _run(self) -> None:
        plugin, command = self._plugin, self._command
        interactive = self._interactive()
        env = dict(os.environ)
        env.update((var.name, var.value) for var in plugin.env or ())
        env["KUBERNETES_EXEC_INFO"] = self._exec_info(interactive)
        timeout = EXEC_INTERACTIVE_TIMEOUT if interactive else EXEC_TIMEOUT
        try:
            proc = await asyncio.create_subprocess_exec(
                command,
                *(plugin.args or ()),
                env=env,
                stdin=None if interactive else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=None,  # the process's own: prompts and the plugin's errors reach the user
            )
        except OSError as e:
            hint = f" ({plugin.installHint.strip()})" if plugin.installHint else ""
            raise CredentialsError(
                f"exec plugin {command}: {e.strerror or type(e).__name__}{hint}"
            ) from e
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise CredentialsError(
                f"exec plugin {command} gave no answer in {timeout:.0f}s and was stopped"
            ) from None
        if proc.returncode != 0:
            raise CredentialsError(
                f"exec plugin {command} exited {proc.returncode} (its messages are on stderr)"
            )
        token, expires_at = _answer(out, plugin.apiVersion or "", command)
        self._value = f"Bearer {token}"
        self._expires_at = expires_at


def _answer(out: bytes, api_version: str, command: str) -> tuple[str, float | None]:
    """The ExecCredential's token and expiry, checked as client-go checks them."""
    try:
        answer = json.loads(out)
        status = answer["status"]
        if not isinstance(status, dict):
            raise TypeError("status is not an object")
    except (ValueError, KeyError, TypeError) as e:
        raise CredentialsError(
            f"exec plugin {command}: expected an ExecCredential with status on stdout "
            f"({type(e).__name__})"
        ) from None
    if answer.get("apiVersion") != api_version:
        raise CredentialsError(
            f"exec plugin {command} is configured to use API version {api_version}, "
            f"plugin returned version {answer.get('apiVersion')!r}; make them agree"
        )
    if status.get("clientCertificateData") or status.get("clientKeyData"):
        raise CredentialsError(
            f"exec plugin {command} returned a client certificate (status."
            "clientCertificateData), which this client does not support; configure "
            "the plugin to return a token, or put the certificate in the kubeconfig"
        )
    token = status.get("token")
    if not isinstance(token, str) or not token:
        raise CredentialsError(f"exec plugin {command} didn't return a token (status.token)")
    return token, _expiry(status.get("expirationTimestamp"), command)


def _expiry(timestamp: object, command: str = "") -> float | None:
    """An RFC 3339 expirationTimestamp as a monotonic deadline (None: never expires)."""
    if timestamp is None:
        return None
    try:
        if not isinstance(timestamp, str):
            raise TypeError
        at = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
        if at.tzinfo is None:
            raise ValueError
    except (TypeError, ValueError):
        raise CredentialsError(
            f"exec plugin {command}: status.expirationTimestamp {timestamp!r} is not an "
            "RFC 3339 time (2006-01-02T15:04:05Z)"
        ) from None
    return time.monotonic() + (at.timestamp() - time.time())


def check_exec(plugin: UserExec) -> None:
    """What client-go refuses in an exec section, and the versions it no longer speaks."""
    if not plugin.command:
        raise CredentialsError("exec: command must be specified; name the plugin to run")
    if not plugin.apiVersion:
        raise CredentialsError(
            f"exec: apiVersion must be specified; set one of {', '.join(EXEC_API_VERSIONS)}"
        )
    if plugin.apiVersion not in EXEC_API_VERSIONS:
        raise CredentialsError(
            f"exec plugin {plugin.command}: apiVersion {plugin.apiVersion!r} is not one of "
            f"{', '.join(EXEC_API_VERSIONS)} (v1alpha1 was removed in Kubernetes 1.24)"
        )
    if any(not var.name for var in plugin.env or ()):
        raise CredentialsError(f"exec plugin {plugin.command}: an env entry has no name")
    if plugin.interactiveMode is None:
        if plugin.apiVersion.endswith("/v1"):
            raise CredentialsError(
                f"exec plugin {plugin.command}: interactiveMode must be specified with "
                f"apiVersion v1; set one of {', '.join(INTERACTIVE_MODES)}"
            )
    elif plugin.interactiveMode not in INTERACTIVE_MODES:
        raise CredentialsError(
            f"exec plugin {plugin.command}: interactiveMode {plugin.interactiveMode!r} "
            f"is not one of {', '.join(INTERACTIVE_MODES)}"
        )


def credentials_for(user: User | None, cluster: Mapping[str, Any] | None = None) -> Credentials:
    """In this order: token file, token, exec, basic auth; client certs need no header.

    `cluster` is the exec plugin's spec.cluster, sent when it asks (provideClusterInfo)."""
    if user is None:
        return Credentials()
    if user.auth_provider:
        raise CredentialsError(
            "auth-provider is not supported (client-go deprecated it and Kubernetes removed "
            "its providers); use an exec plugin (users[].user.exec)"
        )
    if user.exec is not None:
        check_exec(user.exec)
    if user.token_file:
        return TokenFileCredentials(user.token_file, fallback=user.token or None)
    if user.token:
        return StaticCredentials(f"Bearer {user.token}")
    if user.exec is not None:
        return ExecCredentials(user.exec, cluster)
    if user.username or user.password:
        pair = base64.b64encode(f"{user.username or ''}:{user.password or ''}".encode()).decode()
        return StaticCredentials(f"Basic {pair}")
    return Credentials()
