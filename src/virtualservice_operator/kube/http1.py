"""The operator's requests over kept-alive HTTP/1.1 connections of its own.

Why not aiohttp's client session for these: under churn the operator's throughput is
bounded by its CPU per request, and the session's request machinery (its tracing hooks,
cookie jar, header multidicts, timers, response object) was 44% of the operator's CPU in
its profile at M. Here a request is one buffer written to an `asyncio.Protocol`
connection and its answer is parsed by llhttp (httptools, kept by uvloop's authors).
Watches stay on aiohttp, and so does every request through a proxy (looptransport.py).

Where Go's net/http (client-go's transport) decides something, this does the same:
- Connections are kept alive and reused, one request at a time on each: a request takes
  an idle connection, else opens one (no limit, as client-go sets none). At most 25 are
  kept idle (client-go's MaxIdleConnsPerHost), none longer than 90 s (IdleConnTimeout).
- An answer with `Connection: close` (or HTTP/1.0 without keep-alive) ends its
  connection; an idle connection the server closed is dropped, never used.
- A GET, OPTIONS or TRACE whose reused connection broke before any byte of the answer
  came is sent once more on a new connection (net/http's shouldRetryRequest). A write is
  not: net/http replays one only when it knows nothing was written, and a buffered write
  never knows that. The caller's retry decides, as for any other lost answer.
- gzip is asked for unless compression is off, and gzip answers are decompressed.
- Interim 1xx answers are skipped; a 101 (protocol switch) is an error.
- An answer without Content-Length or chunked encoding ends when the server closes.
- REQUEST_TIMEOUT bounds the whole request, CONNECT_TIMEOUT the connect and TLS handshake.
- Refused by name, never sent: HEAD (llhttp cannot know that its answer has no body),
  a method that is not a token, a target with a space or line break, and a header whose
  name is not a token or whose value holds a line break. Header values are sent as
  UTF-8, as Go sends a string's bytes.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections.abc import Iterable, Mapping
from typing import cast
from urllib.parse import urlsplit

import httptools

from virtualservice_operator.kube.transport import (
    CONNECT_TIMEOUT,
    REQUEST_TIMEOUT,
    Answer,
    TransportError,
    TransportOptions,
    describe,
    gunzip,
    media_type,
)

MAX_IDLE = 25
IDLE_TIMEOUT = 90.0
# net/http's isReplayable: methods that may be sent twice without harm.
_REPLAYABLE = frozenset({"GET", "OPTIONS", "TRACE"})
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_BAD_TARGET = re.compile(r"\s")


class Broken(TransportError):
    """The connection ended or failed before a whole answer came; `answered`: some of
    the answer had come."""

    def __init__(self, message: str, answered: bool) -> None:
        super().__init__(message)
        self.answered = answered


class _Connection(asyncio.Protocol):
    """One connection: a request written whole, its answer parsed as it comes."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Answer] | None = None
        self.closed = False
        self.keep_alive = False
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self._got = 0  # bytes of the answer received
        self._head_done = False
        self._reason: list[bytes] = []
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, though uvloop's TLS one is no asyncio.Transport subclass.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._got += len(data)
        if self._waiter is None:  # nothing was asked: the server is out of step
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(Broken("the server switched protocols (101); not supported", True))
        except httptools.HttpParserError as e:
            self._fail(Broken(f"malformed answer: {describe(e)}", True))

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._until_eof():  # the body was "everything until the server closes"
            self._complete()
            return
        if self._got == 0:
            message = describe(exc) if exc else "the server closed the connection before answering"
            self._fail(Broken(message, False))
        else:
            cut = describe(exc) if exc else "the server closed the connection"
            self._fail(Broken(f"answer cut short after {self._got} bytes: {cut}", True))

    # httptools' callbacks
    def on_status(self, status: bytes) -> None:
        self._reason.append(status)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._head_done = True

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._parser.get_status_code() < 200:  # an interim answer (100 Continue...)
            self._reset()
            self._got = 1  # an answer has begun: a broken connection is not retried
            return
        self._complete()

    # the request
    async def request(self, data: bytes) -> Answer:
        assert self._transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(data)
        try:
            return await self._waiter
        finally:
            self._waiter = None

    def ready(self, now: float) -> bool:
        """Idle and usable: not closed by either side, not idle too long."""
        return (
            not self.closed
            and self._transport is not None
            and not self._transport.is_closing()
            and now - self.idle_since < IDLE_TIMEOUT
        )

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    def _until_eof(self) -> bool:
        headers = self._headers
        return (
            self._head_done
            and "content-length" not in headers
            and "chunked" not in headers.get("transfer-encoding", "").lower()
            and self._parser.get_status_code() not in (204, 304)
        )

    def _complete(self) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        headers = self._headers
        self.keep_alive = not self.closed and self._parser.should_keep_alive()
        body = b"".join(self._body)
        if headers.get("content-encoding", "").lower() == "gzip":
            try:
                body = gunzip(body)
            except TransportError as e:
                self.keep_alive = False
                waiter.set_exception(e)
                return
        waiter.set_result(
            Answer(
                self._parser.get_status_code(),
                b"".join(self._reason).decode("latin-1"),
                media_type(headers.get("content-type")),
                headers.get("retry-after"),
                body,
            )
        )
        self._reset()

    def _fail(self, error: Broken) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        self.close()


class Http1Pool:
    """Kept-alive connections to one server, direct (no proxy), plain or TLS."""

    def __init__(self, server: str, options: TransportOptions, tls: ssl.SSLContext | None) -> None:
        url = urlsplit(server)
        self._host = url.hostname or ""
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._prefix = url.path.rstrip("/")
        self._tls = tls
        self._server_hostname = (options.server_hostname or self._host) if tls else None
        authority = url.netloc.rpartition("@")[2]
        fixed = [("Host", authority), *options.headers]
        if options.compression:
            fixed.append(("Accept-Encoding", "gzip"))
        self._fixed = "".join(f"{name}: {value}\r\n" for name, value in _checked(fixed))
        self._idle: list[_Connection] = []

    async def send(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes | None
    ) -> Answer:
        data = self._request(method, target, headers, body)
        conn: _Connection | None = None
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                while True:
                    conn = self._take()
                    reused = conn is not None
                    if conn is None:
                        conn = await self._open()
                    try:
                        answer = await conn.request(data)
                    except Broken as e:
                        conn.close()
                        if reused and not e.answered and method in _REPLAYABLE:
                            continue
                        raise
                    break
        except BaseException as e:
            if conn is not None:  # its request may still be on it
                conn.close()
            if isinstance(e, TimeoutError):  # an OSError too: first
                raise TransportError(f"TimeoutError: no answer within {REQUEST_TIMEOUT:g} s") from e
            if isinstance(e, OSError):  # ssl.SSLError included
                raise TransportError(describe(e)) from e
            raise
        self._give_back(conn)
        return answer

    def _request(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes | None
    ) -> bytes:
        if method == "HEAD":
            raise TransportError(
                "HEAD is not supported: its answer's length says a body that never comes"
            )
        if not _TOKEN.match(method):
            raise TransportError(f"method {method!r} is not an HTTP token")
        if _BAD_TARGET.search(target):
            raise TransportError(f"request target {target!r} holds a space or line break")
        head = [f"{method} {self._prefix}{target} HTTP/1.1\r\n", self._fixed]
        head.extend(f"{name}: {value}\r\n" for name, value in _checked(headers.items()))
        if body is not None:
            head.append(f"Content-Length: {len(body)}\r\n")
        head.append("\r\n")
        data = "".join(head).encode()
        return data + body if body else data

    def _take(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if conn.ready(now):
                return conn
            conn.close()
        return None

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                _, conn = await loop.create_connection(
                    _Connection,
                    self._host,
                    self._port,
                    ssl=self._tls,
                    server_hostname=self._server_hostname,
                )
        except TimeoutError as e:
            raise TransportError(
                f"TimeoutError: no connection to {self._host}:{self._port} "
                f"within {CONNECT_TIMEOUT:g} s"
            ) from e
        return conn

    def _give_back(self, conn: _Connection) -> None:
        if not conn.keep_alive or conn.closed or len(self._idle) >= MAX_IDLE:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self._idle.append(conn)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def _checked(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The headers, each name a token and no value with a line break, else an error
    naming the header."""
    checked: list[tuple[str, str]] = []
    for name, value in headers:
        if not _TOKEN.match(name):
            raise TransportError(f"header name {name!r} is not an HTTP token")
        if "\r" in value or "\n" in value or "\0" in value:
            raise TransportError(f"header {name}'s value holds a line break or NUL")
        checked.append((name, value))
    return checked
