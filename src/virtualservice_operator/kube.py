"""The Kubernetes API boundary: a small async REST client over raw JSON.

Authentication, TLS and kubeconfig/in-cluster loading come from lightkube's config
layer (exec plugins and token files included); requests are plain JSON so that the
cache decides what to keep (a Service is a few hundred bytes in the cache, not a tree
of typed models). HTTP failures become typed errors here, once (`raise ... from`).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx2 as httpx
from lightkube.config.client_adapter import AsyncClient as _lightkube_http
from lightkube.config.client_adapter import ConnectionParams
from lightkube.config.kubeconfig import KubeConfig

JSON = dict[str, Any]


class ApiError(Exception):
    """An error answer from the API server (or no answer at all: status 0)."""

    def __init__(
        self, status: int, reason: str, message: str, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after


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
    return cls(code, reason, message, retry_after)


@dataclass(frozen=True)
class Kind:
    """Where a resource kind lives in the REST API."""

    group: str
    version: str
    plural: str
    kind: str

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
LEASES = Kind("coordination.k8s.io", "v1", "leases", "Lease")
# v1beta1 is served by every Istio release that serves v1 too; it is what we watch.
VIRTUAL_SERVICES = Kind("networking.istio.io", "v1beta1", "virtualservices", "VirtualService")


def virtual_service_kind(api_version: str) -> Kind:
    """The endpoint for a VirtualService body: the API server wants body and URL to agree."""
    version = api_version.rsplit("/", 1)[-1]
    return Kind(VIRTUAL_SERVICES.group, version, VIRTUAL_SERVICES.plural, VIRTUAL_SERVICES.kind)


RequestObserver = Callable[[str, int, float], None]
"""Called after every request with (HTTP method, status code, seconds); 0 = no answer.

The HTTP method, as client-go labels `rest_client_requests_total`: lists and watches are GET."""


class KubeClient:
    """Async JSON client. One instance per process; close() when done."""

    def __init__(self, http: httpx.AsyncClient, observe: RequestObserver | None = None) -> None:
        self._http = http
        self._observe = observe or (lambda method, code, seconds: None)

    @classmethod
    def from_kubeconfig(
        cls, path: str | None = None, observe: RequestObserver | None = None
    ) -> KubeClient:
        """`path`, else $KUBECONFIG / ~/.kube/config, else in-cluster ServiceAccount credentials."""
        config = KubeConfig.from_file(path) if path else KubeConfig.from_env()
        single = config.get()
        assert single is not None, "kubeconfig has no current context"
        params = ConnectionParams(timeout=httpx.Timeout(30.0, connect=10.0), trust_env=False)
        return cls(_lightkube_http(single, params), observe)

    @property
    def host(self) -> str:
        return str(self._http.base_url.host)

    async def close(self) -> None:
        await self._http.aclose()

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> JSON:
        headers = {"Accept": "application/json"}
        content = None
        if body is not None:
            content = json.dumps(body, separators=(",", ":")).encode()
            headers["Content-Type"] = content_type
        started = time.monotonic()
        try:
            response = await self._http.request(
                method, path, params=_clean(params), content=content, headers=headers
            )
        except httpx.HTTPError as e:
            self._observe(method, 0, time.monotonic() - started)
            raise ServerError(0, "ConnectionError", f"{type(e).__name__}: {e}") from e
        self._observe(method, response.status_code, time.monotonic() - started)
        if response.status_code >= 400:
            raise _error(response)
        return response.json() if response.content else {}

    async def get(self, kind: Kind, namespace: str | None, name: str) -> JSON:
        return await self._request("GET", kind.path(namespace, name))

    async def list_pages(
        self,
        kind: Kind,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int = 500,
    ) -> AsyncIterator[tuple[list[JSON], str]]:
        """Pages of at most `limit` objects, each with the list's resourceVersion (final
        on the last page). A cache that transforms page by page never holds the raw JSON
        of a whole large namespace at once."""
        token: str | None = None
        while True:
            page = await self._request(
                "GET",
                kind.path(namespace),
                params={
                    "labelSelector": label_selector,
                    "fieldSelector": field_selector,
                    "limit": limit,
                    "continue": token,
                },
            )
            meta = page.get("metadata") or {}
            token = meta.get("continue")
            yield page.get("items") or [], str(meta.get("resourceVersion", ""))
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
        timeout_seconds: int = 300,
        idle_timeout: float = 120.0,
    ) -> AsyncIterator[tuple[str, JSON]]:
        """Yield (type, object) events, BOOKMARK included; raises Gone on 410.

        `idle_timeout` bounds the silence between two bytes: a stalled connection
        (a proxy that froze, a half-open TCP session) ends in an error, not a hang.
        """
        params = _clean(
            {
                "watch": "true",
                "resourceVersion": resource_version,
                "allowWatchBookmarks": "true",
                "timeoutSeconds": timeout_seconds,
                "labelSelector": label_selector,
                "fieldSelector": field_selector,
            }
        )
        timeout = httpx.Timeout(idle_timeout, connect=10.0)
        started = time.monotonic()
        try:
            async with self._http.stream(
                "GET",
                kind.path(namespace),
                params=params,
                timeout=timeout,
                headers={"Accept": "application/json"},
            ) as response:
                self._observe("GET", response.status_code, time.monotonic() - started)
                if response.status_code >= 400:
                    await response.aread()
                    raise _error(response)
                async for line in response.aiter_lines():
                    if not line:
                        continue
                    event = json.loads(line)
                    if event.get("type") == "ERROR":
                        status = event.get("object") or {}
                        raise error_from_status(int(status.get("code") or 500), status)
                    yield str(event["type"]), event["object"]
        except httpx.HTTPError as e:
            raise ServerError(0, "WatchInterrupted", f"{type(e).__name__}: {e}") from e

    async def create(self, kind: Kind, namespace: str | None, body: JSON) -> JSON:
        return await self._request("POST", kind.path(namespace), body=body)

    async def replace(self, kind: Kind, namespace: str | None, name: str, body: JSON) -> JSON:
        return await self._request("PUT", kind.path(namespace, name), body=body)

    async def merge_patch(self, kind: Kind, namespace: str | None, name: str, patch: JSON) -> JSON:
        return await self._request(
            "PATCH",
            kind.path(namespace, name),
            body=patch,
            content_type="application/merge-patch+json",
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

    async def delete_collection(
        self, kind: Kind, namespace: str | None, *, label_selector: str
    ) -> None:
        """Delete every object of `kind` in `namespace` matching `label_selector` (one request)."""
        await self._request(
            "DELETE", kind.path(namespace), params={"labelSelector": label_selector}
        )


def _clean(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if params is None:
        return None
    return {k: v for k, v in params.items() if v is not None and v != ""}


def _error(response: httpx.Response) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = {"reason": response.reason_phrase, "message": response.text[:500]}
    retry_after = None
    if (value := response.headers.get("Retry-After")) is not None:
        try:
            retry_after = float(value)
        except ValueError:
            retry_after = None
    return error_from_status(
        response.status_code, body if isinstance(body, dict) else None, retry_after
    )
