"""Service list pages read from the API server's protobuf into the cache's records.

`kube.protobuf` reads the envelope and the wire schema; this turns a `ServiceList` into
`ServiceInfo` records (domain.model), as `ServiceInfo.from_dict` does from JSON.

Reading fields one by one from Python costs more than parsing the bytes, so two fields
are read as their raw bytes and decoded once per distinct value: a Service's `spec`, and
each label and annotation (a map is a repeated key/value message on the wire). A name's
placeholders are alike in every developer namespace, and most Services share labels.
"""

from __future__ import annotations

import sys

from virtualservice_operator.domain.model import (
    FrozenMap,
    ServiceInfo,
    ServicePort,
    kept_metadata,
    remember,
)
from virtualservice_operator.kube.protobuf import MapEntry, ServiceList, ServiceSpec, parse, unwrap

# -- Services -------------------------------------------------------------------------------

_Spec = tuple[str, str | None, tuple[ServicePort, ...], bool]  # type, externalName, ports, selector
_SPECS: dict[bytes, _Spec] = {}
_MAPS: dict[tuple[bytes, ...], dict[str, str]] = {}
_KEPT: dict[tuple[tuple[bytes, ...], tuple[bytes, ...]], tuple[FrozenMap, FrozenMap]] = {}


def forget() -> None:
    """Drop the decoded values' keys (the records keep the values they share): a few MiB
    at 55,000 Services, that the operator's heap can use again once its lists are in."""
    _SPECS.clear()
    _MAPS.clear()
    _KEPT.clear()


def _spec(raw: bytes) -> _Spec:
    spec = parse(ServiceSpec, raw)
    ports = tuple(
        ServicePort(p.port, p.name or None, p.protocol or "TCP", p.appProtocol or None)
        for p in spec.ports
    )
    return (
        sys.intern(spec.type or "ClusterIP"),
        sys.intern(spec.externalName) if spec.externalName else None,
        ports,
        bool(spec.selector),
    )


def _map(entries: tuple[bytes, ...]) -> dict[str, str]:
    found = _MAPS.get(entries)
    if found is None:
        pairs = (parse(MapEntry, entry) for entry in entries)
        found = remember(_MAPS, entries, {e.key: e.value for e in pairs})
    return found


def _kept(labels: tuple[bytes, ...], annotations: tuple[bytes, ...]) -> tuple[FrozenMap, FrozenMap]:
    key = (labels, annotations)
    found = _KEPT.get(key)
    if found is None:
        found = remember(_KEPT, key, kept_metadata(_map(labels), _map(annotations)))
    return found


def service_page(raw: bytes) -> tuple[list[ServiceInfo], str, str | None]:
    """A `ServiceList` page: its Services as records, resourceVersion, continue token.
    The records are those `ServiceInfo.from_dict` makes of the same Services' JSON."""
    page = parse(ServiceList, unwrap(raw))
    intern = sys.intern
    records = []
    for item in page.items:
        meta, spec_raw = item.metadata, item.spec
        spec = _SPECS.get(spec_raw) or remember(_SPECS, spec_raw, _spec(spec_raw))
        labels, annotations = _kept(tuple(meta.labels), tuple(meta.annotations))
        records.append(
            ServiceInfo(
                namespace=intern(meta.namespace),
                name=intern(meta.name),
                uid=meta.uid,
                resource_version=meta.resourceVersion,
                type=spec[0],
                external_name=spec[1],
                ports=spec[2],
                labels=labels,
                annotations=annotations,
                has_selector=spec[3],
            )
        )
    return records, page.metadata.resourceVersion, getattr(page.metadata, "continue") or None
