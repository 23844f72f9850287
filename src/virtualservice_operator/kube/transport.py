"""How the client's requests reach the API server: a `Transport` sends one request and
returns its `Answer`; `KubeClient` (kube/client.py) does the rest (credentials, the retry after
a 401, typed errors, decoding, metrics).

Two transports, because the operator and the read-only commands cost differently:
- `AiohttpTransport` (aiotransport.py): the operator's, on its event loop, watches
  included. Under churn the operator's throughput is bounded by its CPU per request,
  and aiohttp's costs a third of an httpx client's.
- `ThreadTransport` (here): the commands'. `explain` and `status` live for a second and
  make a handful of requests, so their start-up is most of their time, and importing
  aiohttp alone costs them about 0.12 s (half of it two SSL contexts it makes at import,
  loading the system's CA bundle twice, that we never use). The standard library's
  `http.client`, one blocking connection per request in flight in worker threads, costs
  a tenth of that; large answers are decompressed in the thread, outside the GIL.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import ssl
import threading
import zlib
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol, TypeAlias
from urllib.parse import urlsplit

REQUEST_TIMEOUT = 30.0
CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True)
class Answer:
    """One HTTP answer: status, reason, media type (no parameters), Retry-After, body."""

    status: int
    reason: str
    content_type: str
    retry_after: str | None
    body: bytes


class TransportError(Exception):
    """No answer: the connection failed or broke, TLS was refused, or time ran out. The
    message starts with the underlying error's type ("ClientConnectorError: ...")."""


Streamed = tuple[Answer, AsyncIterator[bytes]]
"""An answer's head (an error answer's body read whole) and its body as it comes."""


class Transport(Protocol):
    async def send(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes | None
    ) -> Answer:
        """`target` is the path and query, already encoded."""
        ...

    def stream(
        self, target: str, headers: Mapping[str, str], idle_timeout: float
    ) -> AbstractAsyncContextManager[Streamed]:
        """A GET whose body is read as it comes (a watch); `idle_timeout` bounds the
        silence between two reads."""
        ...

    async def close(self) -> None: ...


TransportFactory: TypeAlias = Callable[[str, "ssl.SSLContext | None", "str | None", str], Transport]
"""(server URL, TLS context, tls-server-name, User-Agent) -> a transport: either class."""


def media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


class _Connection(http.client.HTTPSConnection):
    """HTTPS with the kubeconfig's `tls-server-name`, when it names one, checked in
    place of the host the URL names."""

    def __init__(
        self, host: str, port: int | None, tls: ssl.SSLContext, server_hostname: str | None
    ) -> None:
        super().__init__(host, port, timeout=REQUEST_TIMEOUT, context=tls)
        self._tls = tls
        self._server_hostname = server_hostname or host

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._tls.wrap_socket(self.sock, server_hostname=self._server_hostname)


class ThreadTransport:
    """Blocking `http.client` connections used from worker threads (`asyncio.to_thread`),
    kept alive and reused. For the read-only commands; they never watch."""

    def __init__(
        self,
        server: str,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        user_agent: str = "",
    ) -> None:
        url = urlsplit(server)
        self._host = url.hostname or ""
        self._port = url.port
        self._prefix = url.path.rstrip("/")
        # None: plain HTTP.
        self._tls = (ssl_context or ssl.create_default_context()) if url.scheme == "https" else None
        self._server_hostname = server_hostname
        self._user_agent = user_agent
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        """An idle connection (reused: True), else a new one."""
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        if self._tls is not None:
            return _Connection(self._host, self._port, self._tls, self._server_hostname), False
        return http.client.HTTPConnection(self._host, self._port, timeout=REQUEST_TIMEOUT), False

    async def send(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes | None
    ) -> Answer:
        return await asyncio.to_thread(self._send, method, target, headers, body)

    def _send(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes | None
    ) -> Answer:
        sent = {"User-Agent": self._user_agent, "Accept-Encoding": "gzip", **headers}
        while True:
            conn, reused = self._connection()
            try:
                conn.request(method, self._prefix + target, body=body, headers=sent)
                response = conn.getresponse()
                raw = response.read()
            except (
                http.client.RemoteDisconnected,
                ConnectionResetError,
                BrokenPipeError,
            ) as e:
                conn.close()
                if reused:  # the server closed an idle connection: a new one, once
                    continue
                raise TransportError(describe(e)) from e
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                raise TransportError(describe(e)) from e
            break
        if response.getheader("Content-Encoding", "").lower() == "gzip":
            try:
                raw = zlib.decompress(raw, wbits=zlib.MAX_WBITS | 16)
            except zlib.error as e:
                conn.close()
                raise TransportError(describe(e)) from e
        if response.will_close:
            conn.close()
        else:
            with self._lock:
                self._idle.append(conn)
        return Answer(
            response.status,
            response.reason,
            media_type(response.getheader("Content-Type")),
            response.getheader("Retry-After"),
            raw,
        )

    def stream(
        self, target: str, headers: Mapping[str, str], idle_timeout: float
    ) -> AbstractAsyncContextManager[Streamed]:
        raise TransportError("watching needs the operator's transport (AiohttpTransport)")

    async def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(OSError):
                conn.close()
