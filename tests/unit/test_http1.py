"""kube/http1.py against scripted servers: what it sends, how it reuses connections, which
broken requests it sends again (as net/http does) and which it never does, and every way
an answer can come: whole, chunked, gzipped, cut short, malformed, after a 1xx, until the
server closes."""

from __future__ import annotations

import asyncio
import gzip
import inspect
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from tests import waiting
from virtualservice_operator.kube import http1
from virtualservice_operator.kube.http1 import Http1Pool
from virtualservice_operator.kube.transport import Answer, TransportError, TransportOptions
from virtualservice_operator.runtime import eventloop

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
THEN_CLOSE = b"<then close>"
# What the server does with request r on connection c: answers these bytes (then closes
# when they end with THEN_CLOSE), or None: closes without answering.
Script = Callable[[int, int, bytes], bytes | None]


@dataclass
class Server:
    """Each connection's requests (head and body), in order."""

    port: int = 0
    connections: list[list[bytes]] = field(default_factory=list)
    closed: int = 0  # connections that ended

    @property
    def requests(self) -> list[bytes]:
        return [r for conn in self.connections for r in conn]


@asynccontextmanager
async def scripted(script: Script) -> AsyncIterator[Server]:
    seen = Server()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = len(seen.connections)
        requests: list[bytes] = []
        seen.connections.append(requests)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                request = head + await reader.readexactly(length)
                requests.append(request)
                answer = script(index, len(requests) - 1, request)
                if answer is None:
                    return
                writer.write(answer.removesuffix(THEN_CLOSE))
                await writer.drain()
                if answer.endswith(THEN_CLOSE):
                    return
        finally:
            writer.close()
            seen.closed += 1

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    seen.port = server.sockets[0].getsockname()[1]
    try:
        yield seen
    finally:
        server.close()
        await server.wait_closed()


@asynccontextmanager
async def opened(server: Server, **options: object) -> AsyncIterator[Http1Pool]:
    pool = Http1Pool(f"http://127.0.0.1:{server.port}", TransportOptions(**options), None)  # type: ignore[arg-type]
    try:
        yield pool
    finally:
        await pool.close()


def answer(body: bytes = b"{}", *extra: bytes, status: bytes = b"200 OK") -> bytes:
    head = [b"HTTP/1.1 " + status, b"Content-Type: application/json; charset=utf-8"]
    head.append(b"Content-Length: %d" % len(body))
    head.extend(extra)
    return b"\r\n".join(head) + b"\r\n\r\n" + body


async def test_the_bytes_sent_and_the_answer_read() -> None:
    fixed = (("User-Agent", "ua"), ("Impersonate-Group", "a"), ("Impersonate-Group", "b"))
    script: Script = lambda c, r, req: answer(b'{"a":1}', b"Retry-After: 3")  # noqa: E731
    async with scripted(script) as server, opened(server, headers=fixed) as pool:
        got = await pool.send("POST", "/api/v1/x?a=b", {"Accept": "application/json"}, b"{}")
    assert got == Answer(200, "OK", "application/json", "3", b'{"a":1}')
    [request] = server.requests
    assert request == (
        b"POST /api/v1/x?a=b HTTP/1.1\r\n"
        b"Host: 127.0.0.1:%d\r\n"
        b"User-Agent: ua\r\nImpersonate-Group: a\r\nImpersonate-Group: b\r\n"
        b"Accept-Encoding: gzip\r\n"
        b"Accept: application/json\r\nContent-Length: 2\r\n\r\n{}" % server.port
    )


async def test_no_gzip_asked_for_without_compression_and_values_sent_as_utf8() -> None:
    fixed = (("Impersonate-User", "zoë"),)
    async with (
        scripted(lambda c, r, req: OK) as server,
        opened(server, compression=False, headers=fixed) as pool,
    ):
        await pool.send("GET", "/x", {}, None)
    [request] = server.requests
    assert b"Accept-Encoding" not in request
    assert "Impersonate-User: zoë\r\n".encode() in request
    assert b"Content-Length" not in request, "no body: no length, as Go sends a GET"


async def test_a_server_path_prefixes_every_target() -> None:
    async with scripted(lambda c, r, req: OK) as server:
        pool = Http1Pool(f"http://127.0.0.1:{server.port}/k8s/", TransportOptions(), None)
        try:
            await pool.send("GET", "/api/v1/x", {}, None)
        finally:
            await pool.close()
    assert server.requests[0].startswith(b"GET /k8s/api/v1/x HTTP/1.1\r\n")


async def test_a_connection_is_kept_and_reused() -> None:
    async with scripted(lambda c, r, req: OK) as server, opened(server) as pool:
        for _ in range(5):
            assert (await pool.send("GET", "/x", {}, None)).status == 200
    assert [len(c) for c in server.connections] == [5]


async def test_one_connection_per_request_in_flight() -> None:
    async with scripted(lambda c, r, req: OK) as server, opened(server) as pool:
        answers = await asyncio.gather(*(pool.send("GET", f"/{i}", {}, None) for i in range(3)))
        assert [a.status for a in answers] == [200] * 3
        await pool.send("GET", "/again", {}, None)
    assert len(server.connections) == 3, "three at once: three connections"
    assert sum(len(c) for c in server.connections) == 4, "the fourth reused one"


async def test_connection_close_ends_the_connection() -> None:
    async with (
        scripted(lambda c, r, req: answer(b"{}", b"Connection: close")) as server,
        opened(server) as pool,
    ):
        for _ in range(2):
            assert (await pool.send("GET", "/x", {}, None)).status == 200
    assert [len(c) for c in server.connections] == [1, 1]


async def test_an_http10_answer_without_keep_alive_ends_the_connection() -> None:
    http10 = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    async with scripted(lambda c, r, req: http10) as server, opened(server) as pool:
        for _ in range(2):
            assert (await pool.send("GET", "/x", {}, None)).body == b"{}"
    assert [len(c) for c in server.connections] == [1, 1]


async def test_an_idle_connection_the_server_closed_is_not_used() -> None:
    async with scripted(lambda c, r, req: OK + THEN_CLOSE) as server, opened(server) as pool:
        await pool.send("POST", "/x", {}, b"1")
        await waiting.until(lambda: pool._idle[0].closed)
        assert (await pool.send("POST", "/x", {}, b"2")).status == 200
    assert [len(c) for c in server.connections] == [1, 1], "the write went on a new one"


@pytest.mark.parametrize("method", ["GET", "OPTIONS", "TRACE"])
async def test_a_replayable_request_on_a_reused_connection_that_broke_is_sent_again(
    method: str,
) -> None:
    """The server closes the kept connection as the request comes, before any answer
    byte: net/http sends it once more, on a new connection."""
    async with scripted(lambda c, r, req: OK if r == 0 else None) as server, opened(server) as pool:
        await pool.send(method, "/x", {}, None)
        assert (await pool.send(method, "/x", {}, None)).status == 200
    assert [len(c) for c in server.connections] == [2, 1]


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
async def test_a_write_on_a_reused_connection_that_broke_is_never_sent_again(
    method: str,
) -> None:
    """It may have been done: the caller decides, as for any other lost answer."""
    async with scripted(lambda c, r, req: OK if r == 0 else None) as server, opened(server) as pool:
        await pool.send(method, "/x", {}, b"{}")
        with pytest.raises(TransportError, match="closed the connection before answering"):
            await pool.send(method, "/x", {}, b"{}")
    assert [len(c) for c in server.connections] == [2]


async def test_a_new_connection_that_broke_is_an_error_not_a_retry() -> None:
    async with scripted(lambda c, r, req: None) as server, opened(server) as pool:
        with pytest.raises(TransportError, match="before answering"):
            await pool.send("GET", "/x", {}, None)
    assert [len(c) for c in server.connections] == [1]


async def test_an_answer_cut_short_is_an_error_and_never_sent_again() -> None:
    cut = answer(b'{"long": "body"}')[:-5] + THEN_CLOSE
    async with scripted(lambda c, r, req: OK if r == 0 else cut) as server, opened(server) as pool:
        await pool.send("GET", "/x", {}, None)
        with pytest.raises(TransportError, match="answer cut short after"):
            await pool.send("GET", "/x", {}, None)
    assert [len(c) for c in server.connections] == [2]


async def test_a_malformed_answer_is_an_error_naming_it() -> None:
    async with (
        scripted(lambda c, r, req: b"HTTP/1.1 abc\r\n\r\n") as server,
        opened(server) as pool,
    ):
        with pytest.raises(TransportError, match="malformed answer"):
            await pool.send("GET", "/x", {}, None)


async def test_a_chunked_answer_is_read_whole() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'3\r\n{"a\r\n5\r\n": 1}\r\n0\r\n\r\n'
    )
    async with scripted(lambda c, r, req: chunked) as server, opened(server) as pool:
        for _ in range(2):
            assert (await pool.send("GET", "/x", {}, None)).body == b'{"a": 1}'
    assert [len(c) for c in server.connections] == [2]


async def test_a_gzipped_answer_is_decompressed() -> None:
    body = b'{"items": [' + b'"x", ' * 10_000 + b'"y"]}'
    gz = answer(gzip.compress(body), b"Content-Encoding: gzip")
    async with scripted(lambda c, r, req: gz) as server, opened(server) as pool:
        assert (await pool.send("GET", "/x", {}, None)).body == body


async def test_a_corrupt_gzip_answer_is_an_error_naming_it() -> None:
    bad = answer(b"\x1f\x8b not gzip at all", b"Content-Encoding: gzip")
    async with scripted(lambda c, r, req: bad) as server, opened(server) as pool:
        with pytest.raises(TransportError, match="gzip answer unreadable"):
            await pool.send("GET", "/x", {}, None)
        assert not pool._idle, "the connection is not kept"


async def test_interim_answers_are_skipped() -> None:
    both = b"HTTP/1.1 100 Continue\r\n\r\n" + answer(b'{"done":1}', status=b"201 Created")
    async with scripted(lambda c, r, req: both) as server, opened(server) as pool:
        got = await pool.send("POST", "/x", {}, b"{}")
        assert (got.status, got.reason, got.body) == (201, "Created", b'{"done":1}')
        assert (await pool.send("POST", "/x", {}, b"{}")).status == 201


async def test_a_body_that_ends_when_the_server_closes() -> None:
    until_eof = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it" + THEN_CLOSE
    async with scripted(lambda c, r, req: until_eof) as server, opened(server) as pool:
        got = await pool.send("GET", "/x", {}, None)
        assert (got.status, got.body) == (200, b"all of it")
        assert not pool._idle


async def test_no_answer_in_time_is_a_timeout_and_the_connection_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(http1, "REQUEST_TIMEOUT", 0.2)
    stalled = asyncio.Event()

    def script(c: int, r: int, req: bytes) -> bytes:
        stalled.set()
        return b""  # nothing: the server never answers

    async with scripted(script) as server, opened(server) as pool:
        with pytest.raises(TransportError, match=r"TimeoutError: no answer within 0\.2 s"):
            await pool.send("GET", "/x", {}, None)
        assert stalled.is_set() and not pool._idle
        await waiting.until(lambda: server.closed == 1)  # the client closed its side


async def test_no_connection_is_an_error_naming_the_cause() -> None:
    pool = Http1Pool("http://127.0.0.1:1", TransportOptions(), None)
    with pytest.raises(TransportError, match=r"^ConnectionRefusedError"):
        await pool.send("GET", "/x", {}, None)


@pytest.mark.parametrize(
    ("method", "target", "headers", "named"),
    [
        ("HEAD", "/x", {}, "HEAD is not supported"),
        ("GE T", "/x", {}, "is not an HTTP token"),
        ("GET", "/x y", {}, "holds a space or line break"),
        ("GET", "/x\r\nEvil: 1", {}, "holds a space or line break"),
        ("GET", "/x", {"X-A": "a\r\nEvil: 1"}, "X-A's value holds a line break"),
        ("GET", "/x", {"X A": "a"}, "header name 'X A'"),
    ],
)
async def test_what_cannot_be_sent_safely_is_refused_by_name(
    method: str, target: str, headers: dict[str, str], named: str
) -> None:
    async with scripted(lambda c, r, req: OK) as server, opened(server) as pool:
        with pytest.raises(TransportError, match=named):
            await pool.send(method, target, headers, None)
    assert server.requests == [], "nothing was sent"


async def test_at_most_25_connections_are_kept_idle() -> None:
    async with scripted(lambda c, r, req: OK) as server, opened(server) as pool:
        await asyncio.gather(*(pool.send("GET", f"/{i}", {}, None) for i in range(30)))
        assert len(pool._idle) == http1.MAX_IDLE
    assert len(server.connections) == 30


# Every test above that takes no fixture, again on uvloop's loop: the operator's.
_WITHOUT_FIXTURES = [
    name
    for name, test in list(globals().items())
    if name.startswith("test_")
    and inspect.iscoroutinefunction(test)
    and not inspect.signature(test).parameters
]


@pytest.mark.parametrize("name", _WITHOUT_FIXTURES)
def test_on_the_operator_s_loop(name: str) -> None:
    async def on_uvloop() -> str:
        await globals()[name]()
        return type(asyncio.get_running_loop()).__module__

    assert eventloop.run(on_uvloop()).startswith("uvloop")
