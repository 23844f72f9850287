"""How the client's requests reach the API server: a `Transport` sends one request and
returns its `Answer`; `KubeClient` (kube/client.py) does the rest (credentials, the retry after
a 401, typed errors, decoding, metrics).

Two transports, because the operator and the read-only commands cost differently:
- `LoopTransport` (looptransport.py): the operator's, on its event loop. Under churn the
  operator's throughput is bounded by its CPU per request: its requests go over
  kept-alive HTTP/1.1 connections of its own (http1.py), its watches (and any request
  through a proxy) over aiohttp's client.
- `ThreadTransport` (here): the commands'. `explain` and `status` live for a second and
  make a handful of requests, so their start-up is most of their time, and importing
  aiohttp alone costs them about 0.12 s (half of it two SSL contexts it makes at import,
  loading the system's CA bundle twice, that we never use). The standard library's
  `http.client`, one blocking connection per request in flight in worker threads, costs
  a tenth of that; large answers are decompressed in the thread, outside the GIL.

Both take the same `TransportOptions`: one TLS context (from `trust`, the one function
that decides whom a client trusts), one proxy decision (`proxy_for`, client-go's), the
fixed headers (User-Agent, impersonation) and whether to ask for gzip. Everything is
decided once per client, nothing per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import ipaddress
import os
import ssl
import threading
import zlib
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol, TypeAlias
from urllib.parse import SplitResult, urlsplit

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


@dataclass(frozen=True)
class TransportOptions:
    """How a transport reaches the server, decided once (kube/kubeconfig.py)."""

    ssl_context: ssl.SSLContext | None = None  # None for https: the system's trust (`trust`)
    server_hostname: str | None = None  # tls-server-name: checked in place of the URL's host
    headers: tuple[tuple[str, str], ...] = ()  # on every request (a name may repeat)
    proxy: str | None = None  # an http:// proxy URL (`proxy_for`), or None
    compression: bool = True  # ask for gzip (a kubeconfig's disable-compression: False)


TransportFactory: TypeAlias = Callable[[str, TransportOptions], Transport]
"""(server URL, options) -> a transport: either class."""


def trust(
    cafile: str | None = None, cadata: str | None = None, *, insecure: bool = False
) -> ssl.SSLContext:
    """A client TLS context: the given CA alone, else the system's store (with
    SSL_CERT_FILE and SSL_CERT_DIR honoured, as Go's crypto/x509 honours them); with
    `insecure`, nothing verified and no store loaded. Every transport's context is one
    of these."""
    if insecure:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=cafile, cadata=cadata)


@contextlib.contextmanager
def memory_file(data: bytes) -> Iterator[str]:
    """`data` as a file name OpenSSL can open (it loads key pairs from files only): an
    anonymous memory file, never on a disk and gone with the process however it ends."""
    fd = os.memfd_create("tls", os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


class ProxyError(ValueError):
    """A proxy this client cannot use; `source` names where it was set (proxy-url or
    the environment variable), the message the fix."""

    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"{source}: {message}")
        self.source = source


def proxy_for(server: str, proxy_url: str | None, environ: Mapping[str, str]) -> str | None:
    """The proxy for requests to `server`, as client-go picks it: the kubeconfig's
    proxy-url, else the environment as Go's http.ProxyFromEnvironment reads it
    (HTTPS_PROXY or HTTP_PROXY by the server's scheme, upper case first; NO_PROXY; never
    for localhost or a loopback address). Only http:// proxies without a password are
    supported; any other raises `ProxyError`."""
    where = "proxy-url"
    if not proxy_url:
        url = urlsplit(server)
        name = "HTTPS_PROXY" if url.scheme == "https" else "HTTP_PROXY"
        proxy_url = environ.get(name) or environ.get(name.lower())
        where = name
        if not proxy_url or not _uses_proxy(url, _env(environ, "NO_PROXY")):
            return None
    parsed = urlsplit(proxy_url)
    if not parsed.scheme or not parsed.netloc:  # Go reads "host:port" as http://host:port
        parsed = urlsplit(f"http://{proxy_url}")
    if parsed.scheme != "http":
        raise ProxyError(
            where,
            f"{parsed.scheme}:// proxies are not supported (only http://); "
            "use an http:// proxy or reach the API server without one",
        )
    if parsed.username is not None or parsed.password is not None:
        raise ProxyError(
            where,
            "a proxy with user and password is not supported; "
            "allow this client by address at the proxy instead",
        )
    return parsed.geturl()


def _env(environ: Mapping[str, str], name: str) -> str:
    return environ.get(name) or environ.get(name.lower()) or ""


def _uses_proxy(url: SplitResult, no_proxy: str) -> bool:
    """golang.org/x/net/http/httpproxy's useProxy, for a request to `url`."""
    host = (url.hostname or "").lower()
    port = str(url.port or (443 if url.scheme == "https" else 80))
    if host == "localhost":
        return False
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None and ip.is_loopback:
        return False
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if not entry:
            continue
        if entry == "*":
            return False
        if "/" in entry:  # a CIDR block: any port
            with contextlib.suppress(ValueError):
                if ip is not None and ip in ipaddress.ip_network(entry, strict=False):
                    return False
            continue
        entry_host, entry_port = _split_host_port(entry)
        try:
            entry_ip = ipaddress.ip_address(entry_host.strip("[]"))
        except ValueError:
            entry_ip = None
        if entry_ip is not None:  # an address matches that address only
            if ip == entry_ip and (not entry_port or entry_port == port):
                return False
            continue
        if entry_host.startswith("*."):
            entry_host = entry_host[1:]
        exact = not entry_host.startswith(".")
        suffix = "." + entry_host if exact else entry_host
        if (host.endswith(suffix) or (exact and host == entry_host)) and (
            not entry_port or entry_port == port
        ):
            return False
    return True


def _split_host_port(entry: str) -> tuple[str, str]:
    if entry.startswith("["):
        host, _, rest = entry.partition("]")
        return host + "]", rest.lstrip(":")
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        return host, port
    return entry, ""


def media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def gunzip(raw: bytes) -> bytes:
    """A gzip answer's body, decompressed; an unreadable one is a `TransportError`."""
    try:
        return zlib.decompress(raw, wbits=zlib.MAX_WBITS | 16)
    except zlib.error as e:
        raise TransportError(f"gzip answer unreadable: {describe(e)}") from e


class _Connection(http.client.HTTPSConnection):
    """HTTPS with the kubeconfig's `tls-server-name`, when it names one, checked in
    place of the server's host; through a proxy, a CONNECT tunnel to the server."""

    def __init__(
        self,
        host: str,
        port: int | None,
        tls: ssl.SSLContext,
        server_hostname: str | None,
        proxy: tuple[str, int] | None,
    ) -> None:
        if proxy is None:
            super().__init__(host, port, timeout=REQUEST_TIMEOUT, context=tls)
        else:
            super().__init__(*proxy, timeout=REQUEST_TIMEOUT, context=tls)
            self.set_tunnel(host, port)
        self._tls = tls
        self._server_hostname = server_hostname or host

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)  # and the tunnel, with a proxy
        self.sock = self._tls.wrap_socket(self.sock, server_hostname=self._server_hostname)


class ThreadTransport:
    """Blocking `http.client` connections used from worker threads (`asyncio.to_thread`),
    kept alive and reused. For the read-only commands; they never watch."""

    def __init__(self, server: str, options: TransportOptions | None = None) -> None:
        options = options or TransportOptions()
        url = urlsplit(server)
        self._host = url.hostname or ""
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._prefix = url.path.rstrip("/")
        # None: plain HTTP.
        self._tls = (options.ssl_context or trust()) if url.scheme == "https" else None
        self._server_hostname = options.server_hostname
        self._proxy: tuple[str, int] | None = None
        if options.proxy is not None:
            proxy = urlsplit(options.proxy)
            self._proxy = (proxy.hostname or "", proxy.port or 80)
        # Plain HTTP through a proxy names the whole URL in the request line.
        self._origin = f"http://{url.netloc}" if self._proxy and self._tls is None else ""
        fixed = list(options.headers)
        if options.compression:
            fixed.append(("Accept-Encoding", "gzip"))
        self._fixed = fixed
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        """An idle connection (reused: True), else a new one."""
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        if self._tls is not None:
            conn = _Connection(
                self._host, self._port, self._tls, self._server_hostname, self._proxy
            )
            return conn, False
        host, port = self._proxy or (self._host, self._port)
        return http.client.HTTPConnection(host, port, timeout=REQUEST_TIMEOUT), False

    async def send(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes | None
    ) -> Answer:
        return await asyncio.to_thread(self._send, method, target, headers, body)

    def _put(
        self,
        conn: http.client.HTTPConnection,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes | None,
    ) -> None:
        # By hand rather than conn.request(): a fixed header may repeat (Impersonate-Group).
        conn.putrequest(method, self._origin + self._prefix + target, skip_accept_encoding=True)
        # Values as UTF-8 bytes, as Go sends a string's (http.client would take latin-1).
        for name, value in self._fixed:
            conn.putheader(name, value.encode())
        for name, value in headers.items():
            conn.putheader(name, value.encode())
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)

    def _send(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes | None
    ) -> Answer:
        while True:
            conn, reused = self._connection()
            try:
                self._put(conn, method, target, headers, body)
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
                raw = gunzip(raw)
            except TransportError:
                conn.close()
                raise
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
        raise TransportError("watching needs the operator's transport (LoopTransport)")

    async def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(OSError):
                conn.close()
