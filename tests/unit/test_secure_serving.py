"""The metrics port served securely, in process: the certificate (self-signed or from a
directory, reloaded when it changes), HTTPS, and the access check in front of every
served path. The same flows against a real API server: tests/integration/test_secure_metrics.py."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.unit.test_authz import PROMETHEUS, FakeApiServer
from virtualservice_operator.runtime.metrics import OperatorMetrics
from virtualservice_operator.serving.cert import (
    CertificateError,
    CertificateReloader,
    self_signed,
)
from virtualservice_operator.serving.server import Servers, start_servers


def test_self_signed_certificate_serves_the_given_names_and_is_no_ca() -> None:
    cert_pem, key_pem = self_signed(["localhost", "127.0.0.1", "pod-0"])
    cert = x509.load_pem_x509_certificate(cert_pem)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost", "pod-0"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert cert.issuer == cert.subject
    assert b"PRIVATE KEY" in key_pem


def _write_pair(directory: Path, host: str) -> bytes:
    cert, key = self_signed([host])
    (directory / "tls.crt").write_bytes(cert)
    (directory / "tls.key").write_bytes(key)
    return cert


def test_a_directory_without_the_pair_is_refused_naming_the_flag_and_the_fix(
    tmp_path: Path,
) -> None:
    with pytest.raises(CertificateError) as caught:
        CertificateReloader(tmp_path)
    message = str(caught.value)
    assert f"-metrics-cert-path={tmp_path}" in message
    assert "tls.crt" in message
    assert "tls.key" in message


async def _served(context: ssl.SSLContext) -> bytes:
    """The certificate a TLS server listening with `context` presents to a real client."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    client = ssl.create_default_context()
    client.check_hostname, client.verify_mode = False, ssl.CERT_NONE
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
        der: bytes = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
        return der
    finally:
        server.close()
        await server.wait_closed()


def _der(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)


def _touch(directory: Path, stamp: int) -> None:
    """A changed stamp, whatever the clock's resolution."""
    for name in ("tls.crt", "tls.key"):
        if (directory / name).exists():
            os.utime(directory / name, (stamp, stamp))


async def test_reloads_are_atomic_a_bad_pair_keeps_the_old_one_serving(tmp_path: Path) -> None:
    """Each bad reload (a mismatched pair, a half-written file, a missing file) leaves
    the old certificate served to the next handshake; a good pair replaces it."""
    first = _write_pair(tmp_path, "first.example")
    reloader = CertificateReloader(tmp_path)
    assert reloader.reload_if_changed() is False  # nothing changed
    assert await _served(reloader.context) == _der(first)

    second_cert, second_key = self_signed(["second.example"])
    (tmp_path / "tls.crt").write_bytes(second_cert)  # the new certificate, the old key
    _touch(tmp_path, 1)
    assert reloader.reload_if_changed() is False
    assert await _served(reloader.context) == _der(first), "mismatched pair"

    (tmp_path / "tls.key").write_bytes(second_key)
    (tmp_path / "tls.crt").write_bytes(second_cert[: len(second_cert) // 2])
    _touch(tmp_path, 2)
    assert reloader.reload_if_changed() is False
    assert await _served(reloader.context) == _der(first), "half-written certificate"

    (tmp_path / "tls.crt").write_bytes(second_cert)
    (tmp_path / "tls.key").unlink()
    _touch(tmp_path, 3)
    assert reloader.reload_if_changed() is False
    assert await _served(reloader.context) == _der(first), "missing key"

    (tmp_path / "tls.key").write_bytes(second_key)
    _touch(tmp_path, 4)
    assert reloader.reload_if_changed() is True
    assert await _served(reloader.context) == _der(second_cert)


async def _start_secure(**kwargs: Any) -> Servers:
    """Secure servers on free loopback ports; `kwargs` adds or overrides arguments."""
    arguments: dict[str, Any] = {
        "health_address": "127.0.0.1:0",
        "metrics_address": "127.0.0.1:0",
        "ready": lambda: (True, ""),
        "registry": OperatorMetrics().registry,
        "secure": True,
        **kwargs,
    }
    return await start_servers(**arguments)


@pytest.fixture
async def secure_servers(tmp_path: Path) -> AsyncIterator[tuple[Servers, FakeApiServer]]:
    user = PROMETHEUS["username"]
    api = FakeApiServer(
        tokens={"scraper": PROMETHEUS}, allowed={(user, "/metrics"), (user, "/debug/pprof/heap")}
    )
    servers = await _start_secure(profiling=True, review_client=api)
    yield servers, api
    await servers.stop()


async def _get(url: str, token: str | None = None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        # Self-signed: nothing to verify it against.
        session.get(url, headers=headers, ssl=False) as r,
    ):
        return r.status, await r.text()


async def test_secure_metrics_port_answers_by_the_access_check(
    secure_servers: tuple[Servers, FakeApiServer],
) -> None:
    servers, api = secure_servers
    base = f"https://127.0.0.1:{servers.ports['metrics']}"
    assert (await _get(f"{base}/metrics"))[0] == 401
    assert (await _get(f"{base}/metrics", "forged"))[0] == 401
    status, body = await _get(f"{base}/metrics", "scraper")
    assert status == 200
    assert "controller_runtime_reconcile_total" in body
    # Allowed /debug/pprof/heap but not /debug/pprof/profile: each path is its own check.
    assert (await _get(f"{base}/debug/pprof/profile?seconds=0.1", "scraper"))[0] == 403
    assert (await _get(f"{base}/debug/pprof/heap?seconds=bad", "scraper"))[0] == 400
    sent = len(api.sent)
    assert (await _get(f"{base}/nothing-here"))[0] == 404  # no review for what is not served
    assert len(api.sent) == sent
    # The health port stays plain HTTP for the kubelet.
    status, _ = await _get(f"http://127.0.0.1:{servers.ports['health']}/healthz")
    assert status == 200


async def test_secure_metrics_port_refuses_plain_http(
    secure_servers: tuple[Servers, FakeApiServer],
) -> None:
    servers, _ = secure_servers
    with pytest.raises(aiohttp.ClientError):
        await _get(f"http://127.0.0.1:{servers.ports['metrics']}/metrics", "scraper")


async def test_a_certificate_directory_is_served_and_verifiable(tmp_path: Path) -> None:
    cert = _write_pair(tmp_path, "localhost")
    servers = await _start_secure(cert_path=str(tmp_path), review_client=FakeApiServer())
    try:
        trust = ssl.create_default_context(cadata=cert.decode())
        url = f"https://localhost:{servers.ports['metrics']}/metrics"
        async with aiohttp.ClientSession() as session, session.get(url, ssl=trust) as r:
            assert r.status == 401  # the certificate verified; the caller sent no token
    finally:
        await servers.stop()


async def test_secure_serving_needs_a_review_client() -> None:
    with pytest.raises(ValueError, match="client"):
        await _start_secure()


async def test_a_certificate_without_secure_serving_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="-metrics-secure=true"):
        await _start_secure(secure=False, cert_path=str(tmp_path))


async def _served_certificate(port: int) -> bytes:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # only reading what the server presents
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return bytes(der)
    finally:
        writer.close()
        await writer.wait_closed()


async def test_a_renewed_certificate_is_served_without_a_restart(tmp_path: Path) -> None:
    first = x509.load_pem_x509_certificate(_write_pair(tmp_path, "first.example"))
    servers = await _start_secure(cert_path=str(tmp_path), review_client=FakeApiServer())
    try:
        port = servers.ports["metrics"]
        assert await _served_certificate(port) == first.public_bytes(Encoding.DER)
        second = x509.load_pem_x509_certificate(_write_pair(tmp_path, "second.example"))
        os.utime(tmp_path / "tls.crt", (1, 1))
        assert servers.reloader is not None
        assert servers.reloader.reload_if_changed()  # what the 10 s poll does
        assert await _served_certificate(port) == second.public_bytes(Encoding.DER)
    finally:
        await servers.stop()
