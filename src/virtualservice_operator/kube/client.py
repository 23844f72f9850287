"""The Kubernetes API boundary: a small async REST client over raw JSON.

Kubeconfig and in-cluster loading (contexts, CA, client certificates) come from
`kubeconfig`, credentials from `kubeauth`; requests go through a transport
(transport.py: aiohttp's client for the operator, `http.client` in threads for the
read-only commands). Requests are plain
JSON so that the cache decides what to keep (a Service is a few hundred bytes in the
cache, not a tree of typed models), except lists of a kind that names a protobuf
decoder (`Kind.protobuf`: Services), read as client-go reads built-in kinds (see
`kube.protobuf`). HTTP failures become typed errors here, once (`raise ... from`).
"""

from __future__ import annotations

import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Final
from urllib.parse import quote, urlencode

import msgspec

from virtualservice_operator import __version__
from virtualservice_operator.kube.credentials import Credentials, CredentialsError
from virtualservice_operator.kube.kubeconfig import ClusterAccess as ClusterAccess  # noqa: PLC0414
from virtualservice_operator.kube.transport import (
    Answer,
    TransportError,
    TransportFactory,
    TransportOptions,
    describe,
)

JSON = dict[str, Any]

WATCH_TIMEOUT: Final = 300  # seconds a watch asks the API server to stay open
WATCH_IDLE_TIMEOUT: Final = 120.0  # a watch silent this long is re-established

PageDecoder = Callable[[bytes], tuple[list[Any], str, str | None]]
"""A protobuf list page's bytes -> (items, resourceVersion, continue token)."""

PROTOBUF = "application/vnd.kubernetes.protobuf"
# As client-go asks for a built-in kind: protobuf, JSON from a server that has none.
_ACCEPT_PROTOBUF = f"{PROTOBUF},application/json"


class ApiError(Exception):
    """An error answer from the API server (or no answer at all: status 0)."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        retry_after: float | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after
        # The Status's `details` (kind, name, causes): what the error is about.
        self.details: Mapping[str, Any] = details or {}


class NotFound(ApiError):
    pass


class Conflict(ApiError):
    """409: a stale resourceVersion or a failed precondition (the object changed)."""


class AlreadyExists(Conflict):
    pass


class Gone(ApiError):
    """410: the resourceVersion is too old (etcd compacted); relist."""


class TooManyRequests(ApiError):
    pass


class Forbidden(ApiError):
    pass


class Invalid(ApiError):
    pass


class ServerError(ApiError):
    pass


def error_from_status(
    code: int, body: Mapping[str, Any] | None, retry_after: float | None = None
) -> ApiError:
    body = body or {}
    reason = str(body.get("reason", ""))
    message = str(body.get("message", "")) or reason
    cls: type[ApiError]
    if code == 404:
        cls = NotFound
    elif code == 409:
        cls = AlreadyExists if reason == "AlreadyExists" else Conflict
    elif code == 410:
        cls = Gone
    elif code == 429:
        cls = TooManyRequests
    elif code == 403:
        cls = Forbidden
    elif code == 422:
        cls = Invalid
    elif code >= 500 or code == 0:
        cls = ServerError
    else:
        cls = ApiError
    details = body.get("details")
    return cls(
        code, reason, message, retry_after, details if isinstance(details, Mapping) else None
    )


@dataclass(frozen=True)
class Kind:
    """Where a resource kind lives in the REST API, and what its list items are decoded
    into: JSON dicts, or with `items`, a msgspec Struct naming only the fields read (a
    list's items then skip the JSON tree entirely; watches and single reads stay JSON).
    With `protobuf`, lists are asked for as protobuf and its pages decoded by it (an
    answer in JSON is still read as `items` says)."""

    group: str
    version: str
    plural: str
    kind: str
    items: type[msgspec.Struct] | None = field(default=None, compare=False)
    protobuf: PageDecoder | None = field(default=None, compare=False)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        ns = f"/namespaces/{namespace}" if namespace else ""
        tail = f"/{name}" if name else ""
        return f"{base}{ns}/{self.plural}{tail}"


SERVICES = Kind("", "v1", "services", "Service")
CONFIGMAPS = Kind("", "v1", "configmaps", "ConfigMap")
EVENTS = Kind("", "v1", "events", "Event")
NAMESPACES = Kind("", "v1", "namespaces", "Namespace")
LEASES = Kind("coordination.k8s.io", "v1", "leases", "Lease")

RequestObserver = Callable[[str, int, float], None]
"""Called after every request with (HTTP method, status code, seconds); 0 = no answer.

The HTTP method, as client-go labels `rest_client_requests_total`: lists and watches are GET."""


# Named in the API server's audit log, as client-go names its binaries.
USER_AGENT = f"virtualservice-operator/{__version__}"
_TRANSPORT_ERRORS = (TransportError, CredentialsError)


class KubeClient:
    """Async JSON client. One instance per process; close() when done.

    `transport` sends the requests: by default the operator's `LoopTransport`
    (imported only then), `ThreadTransport` for the read-only commands (transport.py).
    """

    def __init__(
        self,
        server: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        credentials: Credentials | None = None,
        observe: RequestObserver | None = None,
        transport: TransportFactory | None = None,
        headers: tuple[tuple[str, str], ...] = (),
        proxy: str | None = None,
        compression: bool = True,
    ) -> None:
        """`headers` go on every request (impersonation); `proxy` is an http:// URL."""
        if transport is None:
            from virtualservice_operator.kube.looptransport import LoopTransport

            transport = LoopTransport
        options = TransportOptions(
            ssl_context, server_hostname, (("User-Agent", USER_AGENT), *headers), proxy, compression
        )
        self._transport = transport(server, options)
        self._credentials = credentials or Credentials()
        self._observe = observe or (lambda method, code, seconds: None)

    @classmethod
    def from_kubeconfig(
        cls,
        path: str | None = None,
        observe: RequestObserver | None = None,
        transport: TransportFactory | None = None,
        context: str | None = None,
    ) -> KubeClient:
        """A client for `ClusterAccess.from_kubeconfig(path, context)`."""
        return cls.for_access(ClusterAccess.from_kubeconfig(path, context), observe, transport)

    @classmethod
    def for_access(
        cls,
        access: ClusterAccess,
        observe: RequestObserver | None = None,
        transport: TransportFactory | None = None,
    ) -> KubeClient:
        return cls(
            access.server,
            ssl_context=access.ssl_context,
            server_hostname=access.tls_server_name,
            credentials=access.credentials,
            observe=observe,
            transport=transport,
            headers=access.headers,
            proxy=access.proxy,
            compression=access.compression,
        )

    async def close(self) -> None:
        await self._transport.close()

    async def _headers(self, headers: dict[str, str]) -> dict[str, str]:
        if (value := await self._credentials.header()) is not None:
            headers["Authorization"] = value
        return headers

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> Answer:
        """The answer, its body undecoded; an error answer raises its typed error."""
        headers = {"Accept": accept}
        content = None
        if body is not None:
            content = _encode(body)
            headers["Content-Type"] = content_type
        target = _target(path, params)
        for attempt in (1, 2):
            started = time.monotonic()
            try:
                answer = await self._transport.send(
                    method, target, await self._headers(headers), content
                )
            except _TRANSPORT_ERRORS as e:
                self._observe(method, 0, time.monotonic() - started)
                raise _transport_error(e, "ConnectionError") from e
            self._observe(method, answer.status, time.monotonic() - started)
            if answer.status == 401 and attempt == 1 and await self._refresh():
                continue  # rotated token: retry once, as client-go does
            if answer.status >= 400:
                raise _error(answer)
            return answer
        raise AssertionError("unreachable")

    async def _refresh(self) -> bool:
        try:
            return await self._credentials.refresh()
        except CredentialsError:
            return False

    async def get(self, kind: Kind, namespace: str | None, name: str) -> JSON:
        return _json(await self._request("GET", kind.path(namespace, name)))

    async def list_pages(
        self,
        kind: Kind,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int = 500,
    ) -> AsyncIterator[tuple[list[Any], str]]:
        """Pages of at most `limit` objects, each with the list's resourceVersion (final
        on the last page): JSON dicts, or `kind.items` Structs. A cache that transforms
        page by page never holds the raw JSON of a whole large namespace at once.

        The API server serves a first page from its watch cache and the pages after it
        from etcd, which for 5,000 objects costs it several times the CPU of one page
        (bench/README.md): a limit above the count asks for one page."""
        token: str | None = None
        while True:
            answer = await self._request(
                "GET",
                kind.path(namespace),
                params={
                    "labelSelector": label_selector,
                    "fieldSelector": field_selector,
                    "limit": limit,
                    "continue": token,
                },
                accept=_ACCEPT_PROTOBUF if kind.protobuf else "application/json",
            )
            if kind.protobuf is not None and answer.content_type == PROTOBUF:
                items, version, token = kind.protobuf(answer.body)
            else:
                page = _page_decoder(kind.items).decode(answer.body)
                items, version, token = (
                    page.items or [],
                    page.metadata.resourceVersion,
                    page.metadata.continue_,
                )
            yield items, version
            if not token:
                return

    async def list(
        self,
        kind: Kind,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int = 500,
    ) -> tuple[list[JSON], str]:
        """Every object (paginated), and the list's resourceVersion to watch from."""
        items: list[JSON] = []
        last = ""
        async for page, version in self.list_pages(
            kind,
            namespace,
            label_selector=label_selector,
            field_selector=field_selector,
            limit=limit,
        ):
            items.extend(page)
            last = version
        return items, last

    async def watch(
        self,
        kind: Kind,
        namespace: str | None = None,
        *,
        resource_version: str,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: int = WATCH_TIMEOUT,
        idle_timeout: float = WATCH_IDLE_TIMEOUT,
    ) -> AsyncIterator[tuple[str, JSON]]:
        """Yield (type, object) events, BOOKMARK included; raises Gone on 410.

        `idle_timeout` bounds the silence between two bytes: a stalled connection
        (a proxy that froze, a half-open TCP session) ends in an error, not a hang.
        """
        params = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": timeout_seconds,
            "labelSelector": label_selector,
            "fieldSelector": field_selector,
        }
        started = time.monotonic()
        target = _target(kind.path(namespace), params)
        try:
            for attempt in (1, 2):
                headers = await self._headers({"Accept": "application/json"})
                async with self._transport.stream(target, headers, idle_timeout) as (head, chunks):
                    self._observe("GET", head.status, time.monotonic() - started)
                    if head.status == 401 and attempt == 1 and await self._refresh():
                        continue  # rotated token: watch again with it, as a request does
                    if head.status >= 400:
                        raise _error(head)
                    # Lines by hand: a line-reading helper would cap its length (aiohttp's
                    # readline() at 128 KiB), and an object in a watch event may be bigger.
                    buffer = bytearray()
                    async for chunk in chunks:
                        buffer += chunk
                        start = 0
                        while (end := buffer.find(b"\n", start)) >= 0:
                            line = bytes(buffer[start:end])
                            start = end + 1
                            if line.strip():
                                yield _watch_event(line)
                        del buffer[:start]
                    if buffer.strip():
                        yield _watch_event(bytes(buffer))
                    return
        except _TRANSPORT_ERRORS as e:
            raise _transport_error(e, "WatchInterrupted") from e

    async def create(
        self, kind: Kind, namespace: str | None, body: JSON, *, dry_run: bool = False
    ) -> JSON:
        """Create; `dry_run`: validated and admitted (webhooks included) but not stored,
        and unknown fields refused instead of dropped, as `kubectl create --dry-run=server`."""
        params = {"dryRun": "All", "fieldValidation": "Strict"} if dry_run else None
        return _json(await self._request("POST", kind.path(namespace), params=params, body=body))

    async def replace(self, kind: Kind, namespace: str | None, name: str, body: JSON) -> JSON:
        return _json(await self._request("PUT", kind.path(namespace, name), body=body))

    async def merge_patch(self, kind: Kind, namespace: str | None, name: str, patch: JSON) -> JSON:
        return _json(
            await self._request(
                "PATCH",
                kind.path(namespace, name),
                body=patch,
                content_type="application/merge-patch+json",
            )
        )

    async def delete(
        self,
        kind: Kind,
        namespace: str | None,
        name: str,
        *,
        uid: str | None = None,
        resource_version: str | None = None,
    ) -> None:
        """Delete, only if the object is still the one we decided about (preconditions)."""
        preconditions = {
            k: v for k, v in (("uid", uid), ("resourceVersion", resource_version)) if v
        }
        body = (
            {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": preconditions}
            if preconditions
            else None
        )
        await self._request("DELETE", kind.path(namespace, name), body=body)


def _target(path: str, params: Mapping[str, Any] | None) -> str:
    """The path and its query, without the parameters that are None or empty."""
    query = {k: v for k, v in (params or {}).items() if v is not None and v != ""}
    return f"{path}?{urlencode(query, quote_via=quote)}" if query else path


_decode = msgspec.json.decode
# A twelfth of json.dumps' cost per request body (0.3 µs against 4), the same JSON
# compact, in UTF-8 rather than \u escapes.
_encode = msgspec.json.encode


def _json(answer: Answer) -> JSON:
    return _decode(answer.body) if answer.body else {}


class _ListMeta(msgspec.Struct):
    resourceVersion: str = ""
    continue_: str | None = msgspec.field(name="continue", default=None)


class _Page(msgspec.Struct):
    metadata: _ListMeta = msgspec.field(default_factory=_ListMeta)
    items: list[Any] | None = None


@cache
def _page_decoder(items: type[msgspec.Struct] | None) -> msgspec.json.Decoder[Any]:
    """A list page's decoder: items as JSON dicts, or as `items` Structs."""
    if items is None:
        return msgspec.json.Decoder(_Page)
    page = msgspec.defstruct(
        f"{items.__name__}Page",
        [
            ("metadata", _ListMeta, msgspec.field(default_factory=_ListMeta)),
            ("items", list[items] | None, None),  # type: ignore[valid-type]
        ],
    )
    return msgspec.json.Decoder(page)


def _watch_event(line: bytes) -> tuple[str, JSON]:
    event = _decode(line)
    if event.get("type") == "ERROR":
        status = event.get("object") or {}
        raise error_from_status(int(status.get("code") or 500), status)
    return str(event["type"]), event["object"]


def _transport_error(e: BaseException, reason: str) -> ServerError:
    """No answer (status 0): the connection failed, or credentials could not be had."""
    if isinstance(e, CredentialsError):
        reason = "CredentialsError"
    # A TransportError's message already names the error beneath it.
    return ServerError(0, reason, str(e) if isinstance(e, TransportError) else describe(e))


def _error(answer: Answer) -> ApiError:
    raw = answer.body
    body: Any
    try:
        if answer.content_type == PROTOBUF:  # a Status, when we asked for protobuf
            from virtualservice_operator.kube.protobuf import status

            body = status(raw)
        else:
            body = _decode(raw)
    except (ValueError, msgspec.DecodeError):
        body = {"reason": answer.reason, "message": raw[:500].decode(errors="replace")}
    retry_after = None
    if answer.retry_after is not None:
        with contextlib.suppress(ValueError):
            retry_after = float(answer.retry_after)
    return error_from_status(answer.status, body if isinstance(body, dict) else None, retry_after)
