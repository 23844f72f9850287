"""Immutable records of the objects the cache keeps: Services and VirtualServices.

The cache stores one `ServiceInfo` per Service in a watched namespace instead of the
full JSON: only what the desired-state function and the planner read. Records are
frozen and hashable so they can be shared between workers without copying.
A `NamespaceInfo` says whether a namespace is there to write in.
A `VirtualServiceInfo` names what the planner decides on (identity, version, labels,
hosts, deletion) and keeps the object as read: an update is that object with our
changes, so that nothing a user or another controller set on it is lost.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec

from virtualservice_operator.domain.constants import (
    EXCLUDE_LABEL,
    INSTANCE_LABEL,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    PLACEHOLDER_LABEL,
    PLACEHOLDER_VALUE,
    SOURCE_ANNOTATION,
    service_host,
)

# Annotation keys kept for every Service: ours. Everything else is dropped to keep the
# cache small, except on Services carrying our marking (see `ServiceInfo.from_dict`).
OUR_PREFIX = "virtualservice-operator/"
# Large and never read by us; dropped even from the Services we keep in full.
_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def is_dns_label(value: object) -> bool:
    """True for an RFC 1123 label: what namespace and Service names must be."""
    return isinstance(value, str) and len(value) <= 63 and _DNS_LABEL.fullmatch(value) is not None


class FrozenMap(Mapping[str, str]):
    """An immutable, hashable str->str mapping (labels, annotations)."""

    __slots__ = ("_data", "_hash")

    def __init__(self, data: Mapping[str, str] | None = None) -> None:
        self._data: dict[str, str] = dict(data or {})
        self._hash: int | None = None

    def __getitem__(self, key: str) -> str:
        return self._data[key]

    # The dict's own, not Mapping's (through __getitem__ and KeyError): the planner asks
    # a few labels of every cached Service for every name.
    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self._data.items()))
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenMap):  # the common case (cache sharing): no copy
            return self._data == other._data
        if isinstance(other, Mapping):
            return self._data == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"FrozenMap({self._data!r})"


@dataclass(frozen=True, slots=True)
class ServicePort:
    port: int
    name: str | None = None
    protocol: str = "TCP"
    app_protocol: str | None = None


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    namespace: str
    name: str
    uid: str = ""
    resource_version: str = ""
    type: str = "ClusterIP"
    external_name: str | None = None
    ports: tuple[ServicePort, ...] = ()
    labels: Mapping[str, str] = field(default_factory=FrozenMap)
    annotations: Mapping[str, str] = field(default_factory=FrozenMap)
    # Placeholders never select pods; a selector means a team applied its own Service.
    has_selector: bool = False
    # `is_placeholder`, worked out once: every name's plan asks it of each of its Services.
    _placeholder: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Accept plain dicts/lists from callers but store immutable values, so that
        # equality and hashing work and nobody can mutate a cached record.
        if not isinstance(self.labels, FrozenMap):
            object.__setattr__(self, "labels", FrozenMap(self.labels))
        if not isinstance(self.annotations, FrozenMap):
            object.__setattr__(self, "annotations", FrozenMap(self.annotations))
        if not isinstance(self.ports, tuple):
            object.__setattr__(self, "ports", tuple(self.ports))
        object.__setattr__(self, "_placeholder", self._in_placeholder_shape())

    @property
    def source(self) -> tuple[str, str] | None:
        """(namespace, name) from the source annotation, if well formed."""
        value = self.annotations.get(SOURCE_ANNOTATION)
        if not value or "/" not in value:
            return None
        namespace, name = value.split("/", 1)
        return (namespace, name) if namespace and name else None

    @property
    def is_placeholder(self) -> bool:
        """Ours and still in placeholder shape (see `_in_placeholder_shape`)."""
        return self._placeholder

    def _in_placeholder_shape(self) -> bool:
        """Ours and still in placeholder shape.

        Anything else is a real Service: this is how a user's `kubectl apply` of a real
        Service over a placeholder (type changes, label kept by the 3-way merge) makes
        it real. `kubectl apply` of a manifest without `type:` keeps ExternalName and our
        label (3-way merge) but adds the selector: that too makes it real.
        """
        source = self.source
        return (
            self.labels.get(PLACEHOLDER_LABEL) == PLACEHOLDER_VALUE
            and self.type == "ExternalName"
            and not self.has_selector
            and source is not None
            and self.external_name == service_host(self.name, source[0])
        )

    @property
    def instance(self) -> str:
        """The operator instance that made it ("" if none did, or one before instances)."""
        return self.labels.get(INSTANCE_LABEL, "")

    @property
    def carries_placeholder_marking(self) -> bool:
        return PLACEHOLDER_LABEL in self.labels or SOURCE_ANNOTATION in self.annotations

    @property
    def excluded(self) -> bool:
        return self.labels.get(EXCLUDE_LABEL) == "true"

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> ServiceInfo:
        """Build from a Service as the API server returns it (JSON dict)."""
        meta = _mapping(obj.get("metadata"))
        spec = _mapping(obj.get("spec"))
        return cls._build(
            namespace=str(meta.get("namespace") or ""),
            name=str(meta.get("name") or ""),
            uid=str(meta.get("uid") or ""),
            resource_version=str(meta.get("resourceVersion") or ""),
            type=str(spec.get("type") or "ClusterIP"),
            external_name=_opt_str(spec.get("externalName")),
            ports=tuple(_port(p) for p in spec.get("ports") or () if isinstance(p, Mapping)),
            raw_labels=_mapping(meta.get("labels")),
            raw_annotations=_mapping(meta.get("annotations")),
            has_selector=bool(spec.get("selector")),
        )

    @classmethod
    def from_wire(cls, obj: ServiceWire) -> ServiceInfo:
        """Build from a Service decoded from a list page straight into `ServiceWire`."""
        meta, spec = obj.metadata, obj.spec
        return cls._build(
            namespace=meta.namespace,
            name=meta.name,
            uid=meta.uid,
            resource_version=meta.resourceVersion,
            type=spec.type or "ClusterIP",
            external_name=spec.externalName,
            ports=tuple(
                ServicePort(p.port, p.name, p.protocol or "TCP", p.appProtocol)
                for p in spec.ports or ()
            ),
            raw_labels=meta.labels or {},
            raw_annotations=meta.annotations or {},
            has_selector=bool(spec.selector),
        )

    @classmethod
    def read(cls, obj: Mapping[str, Any] | ServiceWire | ServiceInfo) -> ServiceInfo:
        """From a list's typed item or a watch event's (or a write's answer's) JSON; a
        record already built (a protobuf list's) as it is."""
        if isinstance(obj, ServiceInfo):
            return obj
        return cls.from_wire(obj) if isinstance(obj, ServiceWire) else cls.from_dict(obj)

    @property
    def key(self) -> str:
        """The informer's key: "namespace/name"."""
        return f"{self.namespace}/{self.name}"

    @classmethod
    def _build(
        cls,
        *,
        namespace: str,
        name: str,
        uid: str,
        resource_version: str,
        type: str,
        external_name: str | None,
        ports: tuple[ServicePort, ...],
        raw_labels: Mapping[str, Any],
        raw_annotations: Mapping[str, Any],
        has_selector: bool,
    ) -> ServiceInfo:
        labels, annotations = kept_metadata(raw_labels, raw_annotations)
        return cls(
            namespace=sys.intern(namespace),
            name=sys.intern(name),
            uid=uid,
            resource_version=resource_version,
            type=sys.intern(type),
            # The same for a name's placeholders in every developer namespace: one string.
            external_name=sys.intern(external_name) if external_name else external_name,
            ports=_shared(ports),
            labels=labels,
            annotations=annotations,
            has_selector=has_selector,
        )


def kept_metadata(
    raw_labels: Mapping[str, Any], raw_annotations: Mapping[str, Any]
) -> tuple[FrozenMap, FrozenMap]:
    """The labels and annotations a `ServiceInfo` keeps of a Service's (shared maps)."""
    marked = PLACEHOLDER_LABEL in raw_labels or SOURCE_ANNOTATION in raw_annotations
    # Placeholders are ours: keep all their labels and annotations so the planner can
    # compare the configured extras. Real Services: only our keys (exclude, marking),
    # which is all any decision reads; the cache stays small at any scale.
    labels = {
        str(k): str(v) for k, v in raw_labels.items() if marked or str(k).startswith(OUR_PREFIX)
    }
    annotations = {
        str(k): str(v)
        for k, v in raw_annotations.items()
        if str(k).startswith(OUR_PREFIX) or (marked and k != _LAST_APPLIED)
    }
    return _shared_map(labels), _shared_map(annotations)


class _WireMeta(msgspec.Struct):
    name: str = ""
    namespace: str = ""
    uid: str = ""
    resourceVersion: str = ""
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class _WirePort(msgspec.Struct):
    port: int = 0
    name: str | None = None
    protocol: str | None = None
    appProtocol: str | None = None


class _WireSpec(msgspec.Struct):
    type: str | None = None
    externalName: str | None = None
    ports: list[_WirePort] | None = None
    selector: dict[str, str] | None = None


class ServiceWire(msgspec.Struct):
    """A listed Service as decoded from the API server's JSON: only the fields
    `ServiceInfo` keeps. The decoder skips the rest (managedFields, status...) without
    building it, which makes a list of Services several times cheaper to read."""

    metadata: _WireMeta = msgspec.field(default_factory=_WireMeta)
    spec: _WireSpec = msgspec.field(default_factory=_WireSpec)

    @property
    def key(self) -> str:
        """The informer's key: "namespace/name"."""
        return f"{self.metadata.namespace}/{self.metadata.name}"


@dataclass(frozen=True, slots=True)
class VirtualServiceInfo:
    namespace: str
    name: str
    uid: str = ""
    resource_version: str = ""
    labels: Mapping[str, str] = field(default_factory=FrozenMap)
    hosts: tuple[str, ...] = ()
    terminating: bool = False  # deletionTimestamp set: going, not to be written
    # The object as the API server returned it, without managedFields, kept as its JSON
    # text: a fifth of the memory of the decoded object (5 KiB with 20 developer routes),
    # decoded when a reconcile of its name reads it (`body`).
    raw: bytes = field(default=b"{}", compare=False, repr=False)

    @property
    def body(self) -> dict[str, Any]:
        """The object as the API server returned it (without managedFields): a new copy
        at each read, which the caller may change."""
        return _decode_json(self.raw)  # type: ignore[no-any-return]

    @property
    def managed(self) -> bool:
        return self.labels.get(MANAGED_BY_LABEL) == MANAGED_BY_VALUE

    @property
    def instance(self) -> str:
        """The operator instance that made it ("" if none did, or one before instances)."""
        return self.labels.get(INSTANCE_LABEL, "")

    def names_host(self, service: str, namespace: str) -> bool:
        """True if a host is `service` or its cluster-local name in `namespace`."""
        return bool({service, service_host(service, namespace)} & set(self.hosts))

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> VirtualServiceInfo:
        """Build from a VirtualService as the API server returns it (JSON dict)."""
        meta = _mapping(obj.get("metadata"))
        if "managedFields" in meta:  # large, churning, and never read
            meta = {k: v for k, v in meta.items() if k != "managedFields"}
            obj = {**obj, "metadata": meta}
        hosts = _mapping(obj.get("spec")).get("hosts")
        labels = _mapping(meta.get("labels"))
        return cls(
            namespace=str(meta.get("namespace") or ""),
            name=str(meta.get("name") or ""),
            uid=str(meta.get("uid") or ""),
            resource_version=str(meta.get("resourceVersion") or ""),
            # Ours all carry the same two labels: one shared map.
            labels=_shared_map({str(k): str(v) for k, v in labels.items()}),
            hosts=tuple(h for h in hosts if isinstance(h, str)) if isinstance(hosts, list) else (),
            terminating=bool(meta.get("deletionTimestamp")),
            raw=_encode_json(obj),
        )


@dataclass(frozen=True, slots=True)
class NamespaceInfo:
    """What the cache keeps of a namespace: whether it is there to write in."""

    name: str
    phase: str
    resource_version: str

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> NamespaceInfo:
        meta = _mapping(obj.get("metadata"))
        terminating = _mapping(obj.get("status")).get("phase") == "Terminating"
        return cls(
            str(meta.get("name") or ""),
            # A deletionTimestamp comes before the phase does.
            "Terminating" if terminating or meta.get("deletionTimestamp") else "Active",
            str(meta.get("resourceVersion") or ""),
        )


_encode_json = msgspec.json.Encoder().encode
_decode_json = msgspec.json.Decoder().decode

_S = TypeVar("_S", bound=Hashable)
_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")
_SHARED: dict[Hashable, Hashable] = {}
_SHARED_MAX = 10_000


def remember(cache: dict[_K, _V], key: _K, value: _V) -> _V:
    """Put `value` in a bounded cache (emptied when full, at `_SHARED_MAX` entries) and
    return it: the decoded-value caches here and in `operator.service_protobuf`."""
    if len(cache) >= _SHARED_MAX:
        cache.clear()
    cache[key] = value
    return value


def _shared(value: _S) -> _S:
    """One instance of each equal value (placeholders of one Service share their labels
    and ports across namespaces)."""
    existing = _SHARED.get(value)
    if existing is not None:
        return existing  # type: ignore[return-value]
    return remember(_SHARED, value, value)  # type: ignore[return-value]


_SHARED_MAPS: dict[tuple[tuple[str, str], ...], FrozenMap] = {}


def _shared_map(data: dict[str, str]) -> FrozenMap:
    """`_shared(FrozenMap(data))`, found by the items in order (as the API server sends
    them) without building the map or hashing it as a set first."""
    key = tuple(data.items())
    existing = _SHARED_MAPS.get(key)
    if existing is not None:
        return existing
    return remember(_SHARED_MAPS, key, FrozenMap(data))


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def _port(p: Mapping[str, Any]) -> ServicePort:
    # No targetPort: placeholders are ExternalName (no pods to target) and routes name
    # Service ports, so nothing reads it.
    return ServicePort(
        port=int(p.get("port") or 0),
        name=_opt_str(p.get("name")),
        protocol=str(p.get("protocol") or "TCP"),
        app_protocol=_opt_str(p.get("appProtocol")),
    )
