"""The client's HTTP transport against a scripted local server: what it sends, how answers
become typed errors, the one retry after a 401, and watch lines cut at any byte."""

from __future__ import annotations

import asyncio
import json
import ssl
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp import web

from virtualservice_operator.domain.model import ServiceInfo, ServiceWire
from virtualservice_operator.kube import protobuf as kubeproto
from virtualservice_operator.kube.client import (
    CONFIGMAPS,
    SERVICES,
    USER_AGENT,
    AlreadyExists,
    ApiError,
    Conflict,
    Gone,
    KubeClient,
    NotFound,
    ServerError,
    TooManyRequests,
)
from virtualservice_operator.kube.credentials import Credentials
from virtualservice_operator.kube.looptransport import LoopTransport
from virtualservice_operator.kube.transport import ThreadTransport, TransportFactory
from virtualservice_operator.operator.cache import _SERVICE_RECORDS
from virtualservice_operator.runtime import eventloop
from virtualservice_operator.serving.cert import self_signed


@dataclass
class Server:
    url: str
    seen: list[web.Request] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)


Handler = Callable[[web.Request], Any]


async def _site(handler: Handler, tls: ssl.SSLContext | None) -> tuple[web.AppRunner, str]:
    """An aiohttp server on loopback answering every path with `handler`; its URL."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls).start()
    port = runner.addresses[0][1]
    return runner, f"{'https' if tls else 'http'}://127.0.0.1:{port}"


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Any]]:
    runners: list[web.AppRunner] = []

    async def start(handler: Handler, tls: ssl.SSLContext | None = None) -> Server:
        server = Server(url="")

        async def record(request: web.Request) -> web.StreamResponse:
            server.seen.append(request)
            server.bodies.append(await request.read())
            result: web.StreamResponse = await handler(request)
            return result

        runner, server.url = await _site(record, tls)
        runners.append(runner)
        return server

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture(params=[LoopTransport, ThreadTransport], ids=["loop", "threads"])
def transport(request: pytest.FixtureRequest) -> TransportFactory:
    """Both transports answer every request alike (only the operator's watches)."""
    factory: TransportFactory = request.param
    return factory


class Rotating(Credentials):
    def __init__(self) -> None:
        self.tokens = ["old", "new"]

    async def header(self) -> str | None:
        return f"Bearer {self.tokens[0]}"

    async def refresh(self) -> bool:
        if len(self.tokens) > 1:
            self.tokens.pop(0)
            return True
        return False


def _status(code: int, reason: str, message: str = "m") -> web.Response:
    body = {"kind": "Status", "code": code, "reason": reason, "message": message}
    return web.json_response(body, status=code)


async def test_request_carries_user_agent_json_and_query(
    serve: Any, transport: TransportFactory
) -> None:
    server = await serve(lambda r: _async(web.json_response({"ok": True}, status=201)))
    seen: list[tuple[str, int]] = []
    client = KubeClient(
        server.url, observe=lambda m, c, _: seen.append((m, c)), transport=transport
    )
    try:
        body = {"metadata": {"name": "x"}}
        assert await client.create(CONFIGMAPS, "ns", body) == {"ok": True}
        await client.list(CONFIGMAPS, "ns", label_selector="a=b,c in (d)")
    finally:
        await client.close()
    post, listing = server.seen
    assert post.headers["User-Agent"] == USER_AGENT
    assert post.headers["Content-Type"] == "application/json"
    assert post.path == "/api/v1/namespaces/ns/configmaps"
    assert json.loads(server.bodies[0]) == body
    assert listing.query["labelSelector"] == "a=b,c in (d)"
    assert "Authorization" not in post.headers
    assert seen == [("POST", 201), ("GET", 201)]


async def _async(value: Any) -> Any:
    return value


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (lambda: _status(404, "NotFound"), NotFound),
        (lambda: _status(409, "AlreadyExists"), AlreadyExists),
        (lambda: _status(409, "Conflict"), Conflict),
        (lambda: _status(500, "InternalError"), ServerError),
        (lambda: web.Response(status=502, text="<html>bad gateway</html>"), ServerError),
    ],
)
async def test_error_answers_become_typed_errors(
    serve: Any, transport: TransportFactory, answer: Any, error: type
) -> None:
    server = await serve(lambda r: _async(answer()))
    client = KubeClient(server.url, transport=transport)
    try:
        with pytest.raises(error):
            await client.get(CONFIGMAPS, "ns", "x")
    finally:
        await client.close()


async def test_too_many_requests_keeps_retry_after(serve: Any, transport: TransportFactory) -> None:
    async def answer(_: web.Request) -> web.Response:
        response = _status(429, "TooManyRequests")
        response.headers["Retry-After"] = "3"
        return response

    client = KubeClient((await serve(answer)).url, transport=transport)
    try:
        with pytest.raises(TooManyRequests) as raised:
            await client.get(CONFIGMAPS, "ns", "x")
        assert raised.value.retry_after == 3.0
    finally:
        await client.close()


async def test_a_401_is_retried_once_with_refreshed_credentials(
    serve: Any, transport: TransportFactory
) -> None:
    async def answer(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") == "Bearer new":
            return web.json_response({"ok": True})
        return _status(401, "Unauthorized")

    server = await serve(answer)
    credentials = Rotating()
    client = KubeClient(server.url, credentials=credentials, transport=transport)
    try:
        assert await client.get(CONFIGMAPS, "ns", "x") == {"ok": True}
        assert [r.headers["Authorization"] for r in server.seen] == ["Bearer old", "Bearer new"]
        credentials.tokens = ["revoked"]
        server.seen.clear()
        with pytest.raises(ApiError) as refused:
            await client.get(CONFIGMAPS, "ns", "x")
        assert refused.value.status == 401
        assert len(server.seen) == 1, "nothing new to try: no retry"
    finally:
        await client.close()


async def test_no_answer_is_a_server_error_with_status_0(
    serve: Any, transport: TransportFactory
) -> None:
    server = await serve(lambda r: _async(web.json_response({})))
    client = KubeClient(
        server.url.rsplit(":", 1)[0] + ":1", transport=transport
    )  # nothing listens on port 1
    try:
        with pytest.raises(ServerError) as raised:
            await client.get(CONFIGMAPS, "ns", "x")
        assert raised.value.status == 0
        assert raised.value.reason == "ConnectionError"
        # The error beneath, named once (ConnectionRefusedError, ClientConnectorError...).
        assert raised.value.message.split(":")[0].endswith("Error")
        assert "TransportError" not in raised.value.message
    finally:
        await client.close()
    assert server.seen == []


async def test_watch_lines_cut_anywhere_are_joined(serve: Any) -> None:
    events = [
        {"type": "ADDED", "object": {"metadata": {"name": f"n{i}"}, "data": {"k": "v" * i}}}
        for i in range(30)
    ]
    stream = b"".join(json.dumps(e).encode() + b"\n" for e in events)

    async def answer(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for start in range(0, len(stream), 7):  # 7-byte pieces: lines cut mid-way
            await response.write(stream[start : start + 7])
            await asyncio.sleep(0)
        await response.write_eof()
        return response

    server = await serve(answer)
    client = KubeClient(server.url)
    try:
        got = [obj async for _, obj in client.watch(CONFIGMAPS, "ns", resource_version="1")]
    finally:
        await client.close()
    assert got == [e["object"] for e in events]
    assert server.seen[0].query["watch"] == "true"
    assert server.seen[0].query["resourceVersion"] == "1"


async def test_a_watch_refused_401_refreshes_credentials_and_watches_again(serve: Any) -> None:
    """As a request does: a rotated token is picked up at once, not after the informer's
    back-off with the stale one."""
    added = {"type": "ADDED", "object": {"metadata": {"name": "a"}}}

    async def answer(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != "Bearer new":
            return _status(401, "Unauthorized")
        return web.Response(body=json.dumps(added).encode() + b"\n")

    server = await serve(answer)
    client = KubeClient(server.url, credentials=Rotating())
    try:
        got = [obj async for _, obj in client.watch(CONFIGMAPS, "ns", resource_version="1")]
    finally:
        await client.close()
    assert got == [added["object"]]
    assert [r.headers["Authorization"] for r in server.seen] == ["Bearer old", "Bearer new"]


async def test_watch_error_event_is_raised_typed(serve: Any) -> None:
    gone = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}}

    async def answer(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(json.dumps(gone).encode() + b"\n")
        await response.write_eof()
        return response

    client = KubeClient((await serve(answer)).url)
    try:
        with pytest.raises(Gone):
            async for _ in client.watch(CONFIGMAPS, "ns", resource_version="1"):
                pass
    finally:
        await client.close()


async def test_list_pages_decode_items_as_the_kind_says(
    serve: Any, transport: TransportFactory
) -> None:
    """JSON dicts by default; with `Kind.items`, Structs of only the fields named there.
    Every page's continue token is followed and its resourceVersion reported."""
    pages = {
        "": {"metadata": {"resourceVersion": "7", "continue": "p2"}, "items": [_svc("a")]},
        "p2": {"metadata": {"resourceVersion": "8"}, "items": [_svc("b")]},
    }

    async def answer(request: web.Request) -> web.Response:
        return web.json_response(pages[request.query.get("continue", "")])

    server = await serve(answer)
    client = KubeClient(server.url, transport=transport)
    typed = replace(SERVICES, items=ServiceWire)
    try:
        plain = [(items, rv) async for items, rv in client.list_pages(SERVICES, "ns")]
        listed = [(items, rv) async for items, rv in client.list_pages(typed, "ns")]
    finally:
        await client.close()
    assert plain == [([_svc("a")], "7"), ([_svc("b")], "8")]
    assert [rv for _, rv in listed] == ["7", "8"]
    records = [ServiceInfo.read(item) for items, _ in listed for item in items]
    assert records == [ServiceInfo.from_dict(_svc("a")), ServiceInfo.from_dict(_svc("b"))]
    assert all(isinstance(item, ServiceWire) for items, _ in listed for item in items)
    assert [r.query.get("continue") for r in server.seen] == [None, "p2", None, "p2"]


def _svc(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ns", "managedFields": [{"manager": "m"}]},
        "spec": {"type": "ExternalName", "externalName": "x", "ports": [{"port": 80}]},
    }


def _pb(message: Any) -> bytes:
    """A Kubernetes protobuf answer: the magic, then runtime.Unknown{raw: message}."""
    return kubeproto.MAGIC + kubeproto.Unknown(raw=message.SerializeToString()).SerializeToString()


def _pb_service_list(names: list[str], version: str, token: str) -> bytes:
    page = kubeproto.ServiceList()
    page.metadata.resourceVersion = version
    setattr(page.metadata, "continue", token)
    for name in names:
        item = page.items.add()
        item.metadata.name, item.metadata.namespace = name, "ns"
        entry = kubeproto.MapEntry(key="app", value=name)
        item.metadata.labels.append(entry.SerializeToString())
        spec = kubeproto.ServiceSpec(type="ExternalName", externalName="x")
        spec.ports.add(port=80, name="")  # Go writes an empty name: absent, as in JSON
        item.spec = spec.SerializeToString()
    return _pb(page)


async def test_a_protobuf_kind_is_listed_as_protobuf_or_read_as_json(
    serve: Any, transport: TransportFactory
) -> None:
    """Asked as client-go asks (protobuf, else JSON): a protobuf answer is decoded by the
    kind's decoder, a JSON one (a server without protobuf) as `items` says."""
    answers = {
        "": web.Response(
            body=_pb_service_list(["a"], "7", "p2"),
            content_type="application/vnd.kubernetes.protobuf",
        ),
        "p2": web.json_response({"metadata": {"resourceVersion": "8"}, "items": [_svc("b")]}),
    }

    async def answer(request: web.Request) -> web.Response:
        return answers[request.query.get("continue", "")]

    server = await serve(answer)
    client = KubeClient(server.url, transport=transport)
    try:
        pages = [(items, rv) async for items, rv in client.list_pages(_SERVICE_RECORDS, "ns")]
    finally:
        await client.close()
    assert [rv for _, rv in pages] == ["7", "8"]
    [a], [b] = (items for items, _ in pages)
    assert a == ServiceInfo.from_dict(
        {**_svc("a"), "metadata": {**_svc("a")["metadata"], "labels": {"app": "a"}}}
    )
    assert isinstance(b, ServiceWire) and ServiceInfo.read(b) == ServiceInfo.from_dict(_svc("b"))
    accepts = {r.headers["Accept"] for r in server.seen}
    assert accepts == {"application/vnd.kubernetes.protobuf,application/json"}


async def test_an_error_answered_in_protobuf_keeps_its_reason_and_message(
    serve: Any, transport: TransportFactory
) -> None:
    status = kubeproto.Status(status="Failure", message="too old", reason="Expired", code=410)

    async def answer(request: web.Request) -> web.Response:
        return web.Response(
            status=410, body=_pb(status), content_type="application/vnd.kubernetes.protobuf"
        )

    client = KubeClient((await serve(answer)).url, transport=transport)
    try:
        with pytest.raises(Gone) as raised:
            async for _ in client.list_pages(_SERVICE_RECORDS, "ns"):
                pass
    finally:
        await client.close()
    assert (raised.value.reason, raised.value.message) == ("Expired", "too old")


async def test_a_gzipped_answer_is_read_whole(serve: Any, transport: TransportFactory) -> None:
    """Both ask for gzip (large lists travel compressed from a remote cluster)."""
    items = [{"metadata": {"name": f"cm-{i}"}, "data": {"k": "v" * 100}} for i in range(500)]

    async def answer(request: web.Request) -> web.Response:
        assert "gzip" in request.headers.get("Accept-Encoding", "")
        body = json.dumps({"metadata": {"resourceVersion": "9"}, "items": items}).encode()
        response = web.Response(
            body=zlib.compress(body, wbits=zlib.MAX_WBITS | 16),
            content_type="application/json",
        )
        response.headers["Content-Encoding"] = "gzip"
        return response

    client = KubeClient((await serve(answer)).url, transport=transport)
    try:
        assert await client.list(CONFIGMAPS, "ns") == (items, "9")
    finally:
        await client.close()


def _tls_for(name: str, tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a certificate for `name` alone, and a client trusting it."""
    cert, key = self_signed([name])
    (tmp_path / "tls.crt").write_bytes(cert)
    (tmp_path / "tls.key").write_bytes(key)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    return tls, ssl.create_default_context(cadata=cert.decode())


async def test_tls_server_name_is_the_name_checked(
    serve: Any, transport: TransportFactory, tmp_path: Path
) -> None:
    """A kubeconfig's `tls-server-name`: the certificate names it, not the URL's host."""
    tls, trust = _tls_for("kube.internal", tmp_path)
    server = await serve(lambda r: _async(web.json_response({"ok": True})), tls)
    named = KubeClient(
        server.url, ssl_context=trust, server_hostname="kube.internal", transport=transport
    )
    unnamed = KubeClient(server.url, ssl_context=trust, transport=transport)
    try:
        assert await named.get(CONFIGMAPS, "ns", "x") == {"ok": True}
        with pytest.raises(ServerError) as refused:  # 127.0.0.1 is not in the certificate
            await unnamed.get(CONFIGMAPS, "ns", "x")
        assert refused.value.status == 0 and "certificate" in refused.value.message.lower()
    finally:
        await named.close()
        await unnamed.close()


@dataclass
class Proxy:
    """An HTTP proxy on loopback: CONNECT tunnels and absolute-form requests, relayed."""

    url: str = ""
    request_lines: list[str] = field(default_factory=list)


@pytest.fixture
async def proxy() -> AsyncIterator[Proxy]:
    seen = Proxy()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        line = head.split(b"\r\n", 1)[0].decode()
        seen.request_lines.append(line)
        method, target, _ = line.split(" ")
        if method == "CONNECT":
            host, port = target.rsplit(":", 1)
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:  # http://host:port/path: passed on as it came
            url = urlsplit(target)
            up_reader, up_writer = await asyncio.open_connection(url.hostname, url.port)
            up_writer.write(head)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    seen.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    yield seen
    server.close()


async def test_requests_go_through_the_proxy(
    serve: Any, transport: TransportFactory, proxy: Proxy, tmp_path: Path
) -> None:
    """A kubeconfig's proxy-url (or HTTPS_PROXY): a CONNECT tunnel for https, with the
    server's certificate checked end to end; the whole URL for plain http."""
    tls, trust = _tls_for("kube.internal", tmp_path)
    secure = await serve(lambda r: _async(web.json_response({"tls": True})), tls)
    plain = await serve(lambda r: _async(web.json_response({"tls": False})))
    clients = [
        KubeClient(
            secure.url,
            ssl_context=trust,
            server_hostname="kube.internal",
            proxy=proxy.url,
            transport=transport,
        ),
        KubeClient(plain.url, proxy=proxy.url, transport=transport),
    ]
    try:
        assert await clients[0].get(CONFIGMAPS, "ns", "x") == {"tls": True}
        assert await clients[1].get(CONFIGMAPS, "ns", "y") == {"tls": False}
    finally:
        for client in clients:
            await client.close()
    secure_port, plain_port = (urlsplit(s.url).port for s in (secure, plain))
    # (http.client says HTTP/1.0 in its CONNECT line, aiohttp 1.1.)
    assert [line.rsplit(" ", 1)[0] for line in proxy.request_lines] == [
        f"CONNECT 127.0.0.1:{secure_port}",
        f"GET http://127.0.0.1:{plain_port}/api/v1/namespaces/ns/configmaps/y",
    ]
    assert secure.seen[0].host == f"127.0.0.1:{secure_port}", "Host names the server"


async def test_impersonation_and_compression_headers(
    serve: Any, transport: TransportFactory
) -> None:
    server = await serve(lambda r: _async(web.json_response({})))
    impersonation = (
        ("Impersonate-User", "jane-李"),  # sent as UTF-8, as Go sends a string's bytes
        ("Impersonate-Group", "a"),
        ("Impersonate-Group", "b"),
    )
    client = KubeClient(server.url, transport=transport, headers=impersonation, compression=False)
    try:
        await client.get(CONFIGMAPS, "ns", "x")
    finally:
        await client.close()
    headers = server.seen[0].headers
    assert headers.getall("Impersonate-Group") == ["a", "b"], "one header per group"
    assert headers["Impersonate-User"] == "jane-李"
    assert "Accept-Encoding" not in headers, "disable-compression: no gzip asked for"


async def test_threads_reuse_a_connection_and_replace_one_the_server_closed() -> None:
    """Kept alive between requests; an idle connection the server has closed since is
    replaced once, transparently."""
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(len(connections))
        body = b'{"n": %d}' % len(connections)
        for _ in range(2):  # two requests on this connection, then close it
            if not await reader.readuntil(b"\r\n\r\n"):
                break
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = KubeClient(f"http://127.0.0.1:{port}", transport=ThreadTransport)
    try:
        answers = [await client.get(CONFIGMAPS, "ns", "x") for _ in range(3)]
    finally:
        await client.close()
        server.close()
        await server.wait_closed()
    assert answers == [{"n": 1}, {"n": 1}, {"n": 2}]
    assert connections == [0, 1]


async def test_threads_do_not_watch() -> None:
    client = KubeClient("http://127.0.0.1:1", transport=ThreadTransport)
    with pytest.raises(ServerError, match="watching needs the operator's transport"):
        async for _ in client.watch(CONFIGMAPS, "ns", resource_version="1"):
            pass


def test_the_operator_s_transport_on_the_operator_s_loop(tmp_path: Path) -> None:
    """On uvloop's loop (the operator's: its TLS transport is no asyncio.Transport), over
    TLS: a request, a second on the kept connection, and a watch."""
    tls, trust = _tls_for("kube.internal", tmp_path)
    added = {"type": "ADDED", "object": {"metadata": {"name": "a"}}}

    async def scenario() -> tuple[list[Any], list[Any], str]:
        async def answer(request: web.Request) -> web.Response:
            if request.query.get("watch") == "true":
                return web.Response(body=json.dumps(added).encode() + b"\n")
            return web.json_response({"ok": True})

        runner, url = await _site(answer, tls)
        client = KubeClient(url, ssl_context=trust, server_hostname="kube.internal")
        try:
            got = [await client.get(CONFIGMAPS, "ns", "x") for _ in range(2)]
            watched = [o async for _, o in client.watch(CONFIGMAPS, "ns", resource_version="1")]
        finally:
            await client.close()
            await runner.cleanup()
        return got, watched, type(asyncio.get_running_loop()).__module__

    got, watched, loop = eventloop.run(scenario())
    assert loop.startswith("uvloop")
    assert got == [{"ok": True}] * 2
    assert watched == [added["object"]]
