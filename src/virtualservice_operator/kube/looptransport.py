"""The operator's transport, on its event loop: requests over kept-alive HTTP/1.1
connections of its own (http1.py), watches over aiohttp's client, and every request
through a proxy too (see transport.py for why the read-only commands use another)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from virtualservice_operator.kube.http1 import Http1Pool
from virtualservice_operator.kube.transport import (
    CONNECT_TIMEOUT,
    REQUEST_TIMEOUT,
    Answer,
    Streamed,
    TransportError,
    TransportOptions,
    describe,
    trust,
)

_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError)


class LoopTransport:
    """One connection pool for requests, and one aiohttp session for watches (and
    requests through a proxy), made on first use inside the event loop that uses it.
    Both use one TLS context."""

    def __init__(self, server: str, options: TransportOptions | None = None) -> None:
        options = options or TransportOptions()
        self._server = server.rstrip("/")
        https = server.startswith("https:")
        tls = (options.ssl_context or trust()) if https else None
        self._ssl: ssl.SSLContext | bool = tls or False
        # Through a proxy (a CONNECT tunnel, or the whole URL), aiohttp's client does it all.
        self._pool = None if options.proxy else Http1Pool(server, options, tls)
        # aiohttp checks the certificate against this name in place of the URL's host.
        self._extra: dict[str, Any] = {}
        if options.server_hostname:
            self._extra["server_hostname"] = options.server_hostname
        if options.proxy:
            self._extra["proxy"] = options.proxy
        self._headers = CIMultiDict(options.headers)  # a name may repeat (Impersonate-Group)
        # Without compression, no Accept-Encoding at all, as client-go.
        self._skip = () if options.compression else ("Accept-Encoding",)
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                # No pool limit: long-lived watches must never starve requests.
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=0),
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT, sock_connect=CONNECT_TIMEOUT),
                # The proxy is decided once (transport.proxy_for), not from the
                # environment per request.
                trust_env=False,
                headers=self._headers,
                skip_auto_headers=self._skip,
            )
        return self._session

    def _url(self, target: str) -> URL:
        return URL(self._server + target, encoded=True)

    async def send(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes | None
    ) -> Answer:
        if self._pool is not None:
            return await self._pool.send(method, target, headers, body)
        try:
            async with self._http().request(
                method, self._url(target), data=body, headers=headers, **self._extra
            ) as response:
                return _answer(response, await response.read())
        except _ERRORS as e:
            raise TransportError(describe(e)) from e

    @asynccontextmanager
    async def stream(
        self, target: str, headers: Mapping[str, str], idle_timeout: float
    ) -> AsyncIterator[Streamed]:
        # sock_read bounds the silence between two reads, not the watch's whole life.
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=CONNECT_TIMEOUT, sock_read=idle_timeout
        )
        try:
            async with self._http().get(
                self._url(target), timeout=timeout, headers=headers, **self._extra
            ) as response:
                body = await response.read() if response.status >= 400 else b""
                yield _answer(response, body), response.content.iter_any()
        except _ERRORS as e:
            raise TransportError(describe(e)) from e

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
        if self._session is not None:
            await self._session.close()
            self._session = None


def _answer(response: aiohttp.ClientResponse, body: bytes) -> Answer:
    return Answer(
        response.status,
        response.reason or "",
        response.content_type,
        response.headers.get("Retry-After"),
        body,
    )
