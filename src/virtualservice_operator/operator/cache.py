"""What the operator knows of the cluster: one informer per (kind, namespace) it watches.

- Services: one informer per watched namespace (the default one and each developer
  one), so only those namespaces are cached, and only the fields ServiceInfo keeps.
- This instance's VirtualServices (`managed_vs`): one cluster-wide informer on
  `virtualservice-operator/instance=<instance>`, so ours are seen wherever they are (an
  old default namespace leaves orphans), also after a user removed `managed-by` from one.
- Every other VirtualService in the default namespace (`unmanaged_vs`: the instance label
  missing or different): to leave a user's or another instance's alone (and say so), and
  to warn about a second one for the same host. The two selectors split D's
  VirtualServices between them: each is in exactly one.

- Namespaces (`namespaces`): one cluster-wide informer keeping each namespace's name and
  phase, so that a configured namespace that does not exist (or is being deleted) is
  known before anything is written there (`absent_namespaces`), and its creation is seen
  at once (`on_namespace`).
- With `serviceSelector`, the default namespace's Services are listed and watched with
  it: the API server filters, and a Service that stops matching leaves the cache as a
  deleted one does.

Every change maps to a Service *name* (the reconcile key) through `on_name`.
`reconfigure` starts and stops informers when the config changes the namespaces.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from virtualservice_operator.domain.config import OperatorConfig
from virtualservice_operator.domain.constants import (
    others_selector,
    own_selector,
    service_for_virtual_service,
    virtual_service_name,
)
from virtualservice_operator.domain.model import (
    NamespaceInfo,
    ServiceInfo,
    ServiceWire,
    VirtualServiceInfo,
)
from virtualservice_operator.kube.client import (
    JSON,
    NAMESPACES,
    SERVICES,
    WATCH_IDLE_TIMEOUT,
    WATCH_TIMEOUT,
    Forbidden,
    Kind,
    KubeClient,
    NotFound,
)
from virtualservice_operator.operator.kinds import VIRTUAL_SERVICES
from virtualservice_operator.runtime.informer import Informer
from virtualservice_operator.runtime.tasks import first_of


def _service_page(raw: bytes) -> tuple[list[ServiceInfo], str, str | None]:
    # Imported on the first protobuf page: `explain`'s small JSON lists never pay for it.
    from virtualservice_operator.operator.service_protobuf import service_page

    return service_page(raw)


def _lists_done() -> None:
    """Every informer has listed: the protobuf decoder's caches can go (if it was used)."""
    decoder = sys.modules.get("virtualservice_operator.operator.service_protobuf")
    if decoder is not None:
        decoder.forget()


# Listed as protobuf straight into records: the API server encodes protobuf for about half
# the CPU of JSON, and it reads faster here (bench/README.md). A JSON answer is decoded
# into only the fields ServiceInfo keeps (a Service's JSON is mostly managedFields and
# status, which nothing here reads).
_SERVICE_RECORDS = replace(SERVICES, items=ServiceWire, protobuf=_service_page)
# More objects than a list of ours will hold: one page, which the API server serves from
# its watch cache (see `fill`).
ONE_PAGE = 1_000_000
# Lists `fill` has in flight: 3 at L, 145 MiB peak against 167 MiB with all 13 at once,
# in the same time within the noise.
FILL_IN_FLIGHT = 3
# One name's Services (`fill` for explain): a page of one, not worth importing protobuf.
_SERVICE_RECORDS_JSON = replace(SERVICES, items=ServiceWire)


def _vs_names(vs: VirtualServiceInfo) -> list[str]:
    """The Service names a VirtualService concerns: its own name's, and its short hosts'."""
    names = {host.split(".", 1)[0] for host in vs.hosts if host}
    if name := service_for_virtual_service(vs.name):
        names.add(name)
    return sorted(names)


class ClusterCache:
    def __init__(
        self,
        client: KubeClient,
        on_name: Callable[[str], None],
        *,
        instance: str,
        on_namespace: Callable[[str], None] = lambda name: None,
        watch_timeout: int = WATCH_TIMEOUT,
        idle_timeout: float = WATCH_IDLE_TIMEOUT,
    ) -> None:
        self._client = client
        self._on_name = on_name
        self._watch_timeout = watch_timeout
        self._idle_timeout = idle_timeout
        self.services: dict[str, Informer[ServiceInfo]] = {}
        self.instance = instance
        self.managed_vs: Informer[VirtualServiceInfo] = self._vs_informer(
            None, own_selector(instance)
        )
        self.unmanaged_vs: Informer[VirtualServiceInfo] | None = None
        self._on_namespace = on_namespace
        self.namespaces: Informer[NamespaceInfo] = self._namespace_informer()
        # Set when the namespaces may not be listed (RBAC from before the operator watched
        # them): the other caches need not wait, and every namespace is taken to exist.
        self._namespaces_refused = asyncio.Event()
        self._default_namespace: str | None = None
        self._selector: str | None = None  # serviceSelector's query, on D's informer
        self._reconfiguring = asyncio.Lock()

    # -- informers ----------------------------------------------------------------------

    def _informer(self, kind: Kind, namespace: str | None, **options: Any) -> Informer[Any]:
        """An informer with this cache's client and watch timings."""
        return Informer(
            self._client,
            kind,
            namespace,
            watch_timeout=self._watch_timeout,
            idle_timeout=self._idle_timeout,
            **options,
        )

    def _namespace_informer(self, page_size: int = 500) -> Informer[NamespaceInfo]:
        def handler(old: NamespaceInfo | None, new: NamespaceInfo | None) -> None:
            if old is None or new is None or old.phase != new.phase:
                # Soon, not now: during a list the informer is marked synced only after
                # its last handler, and whoever is told reads `absent_namespaces`.
                name = (new or old).name  # type: ignore[union-attr]
                asyncio.get_running_loop().call_soon(self._on_namespace, name)

        return self._informer(
            NAMESPACES,
            None,
            transform=NamespaceInfo.from_dict,
            version_of=lambda n: n.resource_version,
            handler=handler,
            page_size=page_size,
            on_failure=self._namespaces_failed,
        )

    def _namespaces_failed(self, error: BaseException) -> bool:
        if not isinstance(error, Forbidden):
            return False
        if not self._namespaces_refused.is_set():
            self._namespaces_refused.set()
            import structlog  # here: the read-only commands import this module, never log

            structlog.get_logger("cache").error(
                "the operator may not list and watch namespaces: a configured namespace that "
                "does not exist is not seen before writing there. Fix: grant get, list and "
                "watch on namespaces in its ClusterRole (deployments/deployment.yaml, or "
                "upgrade the chart)",
                error=str(error),
            )
        return True

    @property
    def namespaces_known(self) -> bool:
        """The namespaces are listed (False: every configured namespace is taken to exist)."""
        return self.namespaces.synced.is_set()

    def _service_informer(
        self,
        namespace: str,
        field_selector: str | None = None,
        kind: Kind = _SERVICE_RECORDS,
        page_size: int = 500,
        label_selector: str | None = None,
    ) -> Informer[ServiceInfo]:
        def handler(old: ServiceInfo | None, new: ServiceInfo | None) -> None:
            self._on_name((new or old).name)  # type: ignore[union-attr]

        return self._informer(
            kind,
            namespace,
            transform=ServiceInfo.read,
            version_of=lambda s: s.resource_version,
            handler=handler,
            label_selector=label_selector,
            field_selector=field_selector,
            page_size=page_size,
            key_by_name=True,  # one namespace each: the record's interned name is the key
        )

    def _vs_informer(
        self,
        namespace: str | None,
        selector: str,
        field_selector: str | None = None,
        page_size: int = 500,
    ) -> Informer[VirtualServiceInfo]:
        def handler(old: VirtualServiceInfo | None, new: VirtualServiceInfo | None) -> None:
            for name in {*(_vs_names(old) if old else ()), *(_vs_names(new) if new else ())}:
                self._on_name(name)

        return self._informer(
            VIRTUAL_SERVICES,
            namespace,
            transform=VirtualServiceInfo.from_dict,
            version_of=lambda vs: vs.resource_version,
            handler=handler,
            label_selector=selector,
            field_selector=field_selector,
            indexers={"service": _vs_names},
            page_size=page_size,
        )

    async def reconfigure(self, config: OperatorConfig) -> None:
        """Watch exactly the namespaces `config` names; wait until every informer is synced."""
        # One at a time: a reload may come while the first fill is still going on.
        async with self._reconfiguring:
            await self._reconfigure(config)

    async def _reconfigure(self, config: OperatorConfig) -> None:
        wanted = set(config.watched_namespaces)
        selector = _selector(config)
        stale = set(self.services) - wanted
        if selector != self._selector or config.default_namespace != self._default_namespace:
            # D's Services are listed with the selector: a new one means a new list.
            stale |= {config.default_namespace, self._default_namespace or ""} & set(self.services)
        for ns in sorted(stale):
            await self.services.pop(ns).stop()
        self._selector = selector
        for ns in sorted(wanted - set(self.services)):
            labels = selector if ns == config.default_namespace else None
            self.services[ns] = self._service_informer(ns, label_selector=labels)
            self.services[ns].start()
        if self._default_namespace != config.default_namespace:
            if self.unmanaged_vs is not None:
                await self.unmanaged_vs.stop()
            self.unmanaged_vs = self._vs_informer(
                config.default_namespace, others_selector(self.instance)
            )
            self.unmanaged_vs.start()
            self._default_namespace = config.default_namespace
        self.managed_vs.start()
        self.namespaces.start()
        await self.wait_synced()

    async def fill(self, config: OperatorConfig, name: str | None = None) -> None:
        """List once, without watching, what `config` makes a cache never started hold: a
        snapshot for the read-only commands, read through the reconciler's own indexes.
        With `name`, only what `snapshot(config, name)` reads: the Services of that name
        and ours named after it (and, as `fresh`, the other VirtualServices in D)."""
        services = f"metadata.name={name}" if name else None
        kind = _SERVICE_RECORDS_JSON if name else _SERVICE_RECORDS
        selector = self._selector = _selector(config)
        # One page per list: the API server serves it from its watch cache, where pages
        # after the first come from etcd at several times the cost. The operator's own
        # informers keep pages of 500, which bound their peak memory.
        self.services = {
            ns: self._service_informer(
                ns,
                services,
                kind,
                page_size=ONE_PAGE,
                label_selector=selector if ns == config.default_namespace else None,
            )
            for ns in config.watched_namespaces
        }
        own = f"metadata.name={virtual_service_name(name)}" if name else None
        self.managed_vs = self._vs_informer(
            None, own_selector(self.instance), own, page_size=ONE_PAGE
        )
        self.unmanaged_vs = self._vs_informer(
            config.default_namespace, others_selector(self.instance), page_size=ONE_PAGE
        )
        self._default_namespace = config.default_namespace
        # The informer's own list (store, indexes, resourceVersion), not its watch loop.
        # Whole lists a few at once: each answer is held whole until decoded, and more in
        # flight only adds to the peak memory (the decoding is one at a time anyway). One
        # name's lists are small: all at once.
        # The VirtualServices first: custom resources are listed as JSON, the slowest
        # list for the API server to write (a quarter of a second at 5,000), so it is
        # written while the Services' lists are decoded rather than after them.
        informers: list[Informer[Any]] = [
            self.managed_vs,
            self.unmanaged_vs,
            *self.services.values(),
        ]
        in_flight = asyncio.Semaphore(len(informers) if name else FILL_IN_FLIGHT)

        async def relist(informer: Informer[Any]) -> None:
            async with in_flight:
                await informer.relist()

        async def namespaces() -> None:
            self.namespaces = self._namespace_informer(page_size=ONE_PAGE)
            with contextlib.suppress(Forbidden):  # these credentials may not list them
                await self.namespaces.relist()

        await asyncio.gather(namespaces(), *(relist(informer) for informer in informers))
        _lists_done()

    async def wait_synced(self) -> None:
        await asyncio.gather(*(i.synced.wait() for i in self.informers()[:-1]))
        await first_of(self.namespaces.synced.wait(), self._namespaces_refused.wait())
        _lists_done()

    def informers(self) -> list[Informer[Any]]:
        """Every informer; the namespaces' last (`wait_synced` and `synced` need it or its
        refusal, not both)."""
        extra = [self.unmanaged_vs] if self.unmanaged_vs is not None else []
        return [*self.services.values(), self.managed_vs, *extra, self.namespaces]

    def synced(self) -> bool:
        return (
            bool(self._default_namespace)
            and all(i.synced.is_set() for i in self.informers()[:-1])
            and (self.namespaces_known or self._namespaces_refused.is_set())
        )

    async def stop(self) -> None:
        for informer in self.informers():
            await informer.stop()

    # -- reading ------------------------------------------------------------------------

    def absent_namespaces(self, config: OperatorConfig) -> dict[str, str]:
        """The configured namespaces that cannot be written in -> why ("does not exist",
        "is being deleted"); none until the namespaces are listed, or if they may not be."""
        if not self.namespaces_known:
            return {}
        absent = {}
        for ns in config.watched_namespaces:
            info = self.namespaces.get(ns)
            if info is None:
                absent[ns] = "does not exist"
            elif info.phase == "Terminating":
                absent[ns] = "is being deleted"
        return absent

    def all_names(self) -> set[str]:
        names: set[str] = set()
        for services in self.services.values():
            names.update(s.name for s in services.values())
        for vss in (self.managed_vs, self.unmanaged_vs):
            if vss is not None:
                for vs in vss.values():
                    names.update(_vs_names(vs))
        return names

    def snapshot(
        self, config: OperatorConfig, name: str
    ) -> tuple[dict[str, ServiceInfo], list[VirtualServiceInfo]]:
        """The cached Services named `name` per watched namespace, and the VirtualServices
        that concern it (ours anywhere, and any in the default namespace naming it)."""
        services: dict[str, ServiceInfo] = {}
        for ns in config.watched_namespaces:
            informer = self.services.get(ns)
            svc = informer.get(name) if informer else None
            if svc is not None:
                services[ns] = svc
        vss = list(self.managed_vs.by_index("service", name))
        if self.unmanaged_vs is not None:
            vss.extend(self.unmanaged_vs.by_index("service", name))
        return services, vss

    async def fresh(
        self, config: OperatorConfig, name: str
    ) -> tuple[dict[str, ServiceInfo], list[VirtualServiceInfo]]:
        """The same as snapshot(), read from the API server (after a conflict)."""
        services: dict[str, ServiceInfo] = {}
        selector = _selector(config)
        for ns in config.watched_namespaces:
            if selector and ns == config.default_namespace:
                # Read as D's informer reads: only a Service the selector selects.
                found, _ = await self._client.list(
                    SERVICES, ns, label_selector=selector, field_selector=f"metadata.name={name}"
                )
                services.update((ns, ServiceInfo.from_dict(obj)) for obj in found)
                continue
            try:
                obj = await self._client.get(SERVICES, ns, name)
            except NotFound:
                continue
            services[ns] = ServiceInfo.from_dict(obj)
        items, _ = await self._client.list(
            VIRTUAL_SERVICES, None, field_selector=f"metadata.name={virtual_service_name(name)}"
        )
        vss = [VirtualServiceInfo.from_dict(o) for o in items]
        seen = {(vs.namespace, vs.name) for vs in vss}
        # Others in the default namespace that name this host: the cache is good enough
        # for a warning.
        if self.unmanaged_vs is not None:
            vss.extend(
                vs
                for vs in self.unmanaged_vs.by_index("service", name)
                if (vs.namespace, vs.name) not in seen
            )
        return services, vss

    # -- after our own writes -----------------------------------------------------------

    def record_write(self, kind: str, obj: JSON) -> None:
        if kind == "Service":
            informer = self.services.get(obj["metadata"]["namespace"])
            if informer is not None:
                informer.upsert(obj)
        elif VirtualServiceInfo.from_dict(obj).instance == self.instance:
            self.managed_vs.upsert(obj)

    def record_delete(self, kind: str, namespace: str, name: str) -> None:
        if kind == "Service":
            informer = self.services.get(namespace)
            if informer is not None:
                informer.forget(name)
        else:
            self.managed_vs.forget(f"{namespace}/{name}")

    def placeholder_count(self) -> int:
        """Placeholder Services as cached, for the gauge (a walk of the whole cache)."""
        return sum(1 for i in self.services.values() for s in i.values() if s.is_placeholder)


def _selector(config: OperatorConfig) -> str | None:
    """serviceSelector as a list's labelSelector (None: every Service)."""
    selector = config.service_selector
    return (selector.query() or None) if selector is not None else None
