"""The TLS certificate of the metrics port when it is served securely (`-metrics-secure`).

As controller-runtime's metrics server: with `-metrics-cert-path=DIR`, the key pair
`DIR/tls.crt` and `DIR/tls.key` (a `kubernetes.io/tls` Secret mounted as a volume, e.g.
from cert-manager); without it, a self-signed certificate for `localhost`, `127.0.0.1`
and the host name, made in memory at start. A self-signed certificate only encrypts:
the caller proves nothing about the server with it (Prometheus scrapes it with
`insecure_skip_verify`); the bearer-token check is what guards the data.

Certificates from a directory are reloaded when their files change (cert-manager renews
them in place): :class:`CertificateReloader` checks every few seconds, loads the new pair
into a new `SSLContext` and, only when both files loaded into it, makes it the one every
later handshake uses (the listening context's SNI callback hands each handshake the
current one, as controller-runtime's certwatcher swaps its tls.Certificate). A pair that
does not load (half written, mismatched, missing) is logged and the old one keeps serving:
`load_cert_chain` into the live context would have replaced its certificate before
finding that the key does not match.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import os
import socket
import ssl
from pathlib import Path

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from virtualservice_operator.kube.transport import memory_file

CERT_FILE = "tls.crt"
KEY_FILE = "tls.key"
SELF_SIGNED_VALIDITY = datetime.timedelta(days=365)  # client-go's certutil default
RELOAD_INTERVAL = 10.0  # controller-runtime's certwatcher polls every 10 s as well

log = structlog.get_logger("servingcert")


class CertificateError(ValueError):
    """The serving certificate cannot be loaded; the message names the flag and the fix."""


def self_signed(hosts: list[str]) -> tuple[bytes, bytes]:
    """A self-signed serving certificate and its key (PEM) for DNS names and IP addresses."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    # A fresh name per start, as certutil does, so clients that cache by issuer never mix two.
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, f"{hosts[0]}@{int(now.timestamp())}")]
    )
    alt_names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # tolerate a little clock skew
        .not_valid_after(now + SELF_SIGNED_VALIDITY)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _server_context() -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def self_signed_context() -> ssl.SSLContext:
    """A server context holding a new self-signed certificate (see :func:`self_signed`)."""
    hosts = ["localhost", "127.0.0.1", socket.gethostname()]
    cert, key = self_signed(list(dict.fromkeys(hosts)))
    context = _server_context()
    with memory_file(cert) as cert_path, memory_file(key) as key_path:  # never on a disk
        context.load_cert_chain(cert_path, key_path)
    return context


def _load(directory: Path) -> ssl.SSLContext:
    """A new server context holding the pair; the caller's context is never touched."""
    cert, key = directory / CERT_FILE, directory / KEY_FILE
    context = _server_context()
    try:
        context.load_cert_chain(cert, key)
        return context
    except (OSError, ssl.SSLError) as e:
        raise CertificateError(
            f"-metrics-cert-path={directory}: cannot load {CERT_FILE} and {KEY_FILE} ({e}); "
            f"give a directory holding a PEM certificate {CERT_FILE} and its key {KEY_FILE} "
            f"(a mounted kubernetes.io/tls Secret), or leave the flag out for a self-signed one"
        ) from e


def _stamp(directory: Path) -> tuple[float, ...]:
    """Modification times of the pair (a Secret volume swaps a symlink: stat follows it)."""
    stamps: list[float] = []
    for name in (CERT_FILE, KEY_FILE):
        with contextlib.suppress(OSError):
            stamps.append(os.stat(directory / name).st_mtime)
    return tuple(stamps)


class CertificateReloader:
    """A server context loaded from `directory`, reloaded when the files change."""

    def __init__(self, directory: str | Path, interval: float = RELOAD_INTERVAL) -> None:
        self.directory = Path(directory)
        self.interval = interval
        self._stamp = _stamp(self.directory)
        # The context the server listens with; each handshake is handed `_current`.
        self.context = self._current = _load(self.directory)
        self.context.sni_callback = self._choose
        self._task: asyncio.Task[None] | None = None

    def _choose(self, connection: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
        current = self._current
        if connection.context is not current:
            connection.context = current

    def reload_if_changed(self) -> bool:
        """Load the pair again if a file changed since the last load; True when loaded."""
        stamp = _stamp(self.directory)
        if stamp == self._stamp:
            return False
        try:
            loaded = _load(self.directory)
        except CertificateError as e:
            log.error("serving certificate not reloaded, keeping the previous one", error=str(e))
            return False
        self._current = loaded  # one assignment: a handshake sees the old pair or the new
        self._stamp = stamp
        log.info("serving certificate reloaded", path=str(self.directory))
        return True

    def start(self) -> None:
        async def poll() -> None:
            while True:
                await asyncio.sleep(self.interval)
                self.reload_if_changed()

        self._task = asyncio.get_running_loop().create_task(poll(), name="certificate reloader")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
