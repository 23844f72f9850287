"""Desired state for one Service name: a pure function of the config and the Services.

`compute_desired(config, S, services)` says what must exist for the name S: the
VirtualService `S-virtual-service` in the default namespace D (the rendered template,
with developer routes in front of the template's own routes) and the placeholder
Services. No I/O, no clock, no logging: the same inputs always give the same output,
whatever the iteration order of `services`.

Developer routes, for each developer namespace N (config order) holding a real,
non-excluded Service S, match the routing header (or a W3C baggage member) with value
N and send to `S.N.svc.cluster.local`:

- only HTTP-capable ports get routes. A port is *not* HTTP-capable when its protocol is
  UDP or SCTP, or its Istio protocol (the appProtocol if set, as Istio gives it
  precedence, else the name's prefix before the first '-') is tcp, tls, https, mongo,
  mysql, redis or udp. Such ports get no developer route: their traffic follows the
  template's routes;
- a Service with no ports, or with exactly one port that is HTTP-capable: one route,
  no port (nothing to disambiguate);
- any other Service with HTTP-capable ports: one route per HTTP-capable port P, ascending,
  matching `port: P` and naming `destination.port` (Istio IST0112 requires a port on
  destinations whose Service has several ports, counting all of them);
- a Service whose ports are all non-HTTP: no route.

The template's own routes are kept after them, made port-explicit for a default Service
with several ports (`ports.py`: the same paths, written out as IST0112 asks).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from virtualservice_operator.domain.config import OperatorConfig
from virtualservice_operator.domain.constants import (
    EXCLUDE_LABEL,
    IGNORED_SERVICES,
    INSTANCE_LABEL,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    PLACEHOLDER_LABEL,
    PLACEHOLDER_VALUE,
    SOURCE_ANNOTATION,
    service_host,
)
from virtualservice_operator.domain.instance import owner
from virtualservice_operator.domain.model import ServiceInfo, ServicePort
from virtualservice_operator.domain.ports import port_explicit_routes
from virtualservice_operator.domain.template import render_virtual_service

NON_HTTP_PROTOCOLS = frozenset({"tcp", "tls", "https", "mongo", "mysql", "redis", "udp"})
_NON_HTTP_TRANSPORTS = frozenset({"UDP", "SCTP"})


@dataclass(frozen=True)
class Desired:
    service: str
    virtual_service: dict[str, Any] | None  # full manifest to exist in D, or None
    placeholders: Mapping[str, dict[str, Any]]  # namespace -> Service manifest
    routed_namespaces: tuple[str, ...]  # developer namespaces with routes, config order
    notes: tuple[str, ...]  # human reasons, for logs and explanations
    # Configured namespaces that do not exist (or are being deleted) -> why: nothing is
    # written there; the plan leaves them alone.
    absent_namespaces: Mapping[str, str] = field(default_factory=lambda: _NONE)


_NONE: Mapping[str, str] = MappingProxyType({})


def compute_desired(
    config: OperatorConfig,
    service: str,
    services: Mapping[str, ServiceInfo],
    absent: Mapping[str, str] = _NONE,
) -> Desired:
    """What must exist for the Service name `service`.

    `services` maps a watched namespace to the Service named `service` in it; anything
    else is ignored. `absent`: the configured namespaces that do not exist, each with
    why ("does not exist", "is being deleted"). Raises TemplateError only if `service`
    is not a DNS label.
    """
    d = config.default_namespace
    absent = (
        MappingProxyType({ns: why for ns, why in absent.items() if ns in config.watched_namespaces})
        if absent
        else _NONE
    )
    # Defensive: only watched namespaces, only this name.
    found = {
        ns: services[ns]
        for ns in config.watched_namespaces
        if ns in services and services[ns].name == service
    }
    source = found.get(d)
    reason = None
    if service in IGNORED_SERVICES:
        reason = f"ignored: {service!r} is the API server's own Service"
    elif d in absent:
        reason = f"default namespace {d} {absent[d]}"
    elif source is None:
        reason = f"dev-only: no Service {service} in default namespace {d}"
    elif source.excluded:
        reason = f"excluded by label {EXCLUDE_LABEL}=true on {d}/{service}"
    if source is None or reason is not None:
        return Desired(service, None, MappingProxyType({}), (), (reason or "",), absent)

    notes: list[str] = []
    routes: list[dict[str, Any]] = []
    routed: list[str] = []
    placeholders: dict[str, dict[str, Any]] = {}
    for ns in config.developer_namespaces:
        if ns in absent:
            notes.append(f"{ns}: namespace {ns} {absent[ns]}: nothing is made there")
            continue
        dev = found.get(ns)
        if dev is not None and dev.is_placeholder and dev.instance != config.instance:
            # Another instance's (or an unlabelled) placeholder holds the name: it keeps it.
            holder = owner(dev.instance)
            notes.append(f"{ns}: placeholder of {holder} holds the name: none of ours")
            continue
        if dev is None or dev.is_placeholder:
            if config.enable_placeholder_services:
                placeholders[ns] = placeholder_manifest(config, source, ns)
                notes.append(f"{ns}: placeholder pointing to {d}")
            continue
        if dev.excluded:
            notes.append(f"{ns}: excluded by label {EXCLUDE_LABEL}=true")
            continue
        dev_routes = developer_routes(config, service, ns, dev.ports)
        if not dev_routes:
            notes.append(f"{ns}: no HTTP port, no route")
            continue
        routes += dev_routes
        routed.append(ns)

    vs = _virtual_service(config, source, routes)
    return Desired(service, vs, MappingProxyType(placeholders), tuple(routed), tuple(notes), absent)


def _virtual_service(
    config: OperatorConfig, source: ServiceInfo, routes: list[dict[str, Any]]
) -> dict[str, Any]:
    """The rendered template, labelled and owned, developer `routes` before its own."""
    service, d = source.name, source.namespace
    vs = render_virtual_service(
        config.virtual_service_template, service=service, default_namespace=d
    )
    meta = vs["metadata"]
    meta["labels"] = {
        **(meta.get("labels") or {}),
        MANAGED_BY_LABEL: MANAGED_BY_VALUE,
        INSTANCE_LABEL: config.instance,
    }
    if source.uid:
        ref = owner_reference(source)
        others = [r for r in meta.get("ownerReferences") or [] if r != ref]
        meta["ownerReferences"] = [*others, ref]
    own = list(vs["spec"].get("http") or [])
    if len(source.ports) > 1 and (http_ports := sorted_http_ports(source.ports)):
        own = port_explicit_routes(own, service=service, namespace=d, http_ports=http_ports)
    vs["spec"]["http"] = routes + own
    return vs


def owner_reference(source: ServiceInfo) -> dict[str, Any]:
    """The VirtualService's reference to its Service in D (garbage collection)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "name": source.name,
        "uid": source.uid,
        "controller": True,
        "blockOwnerDeletion": False,
    }


def is_http_port(port: ServicePort) -> bool:
    if port.protocol.upper() in _NON_HTTP_TRANSPORTS:
        return False
    istio = port.app_protocol or (port.name or "").split("-", 1)[0]
    return istio.lower() not in NON_HTTP_PROTOCOLS


def sorted_http_ports(ports: tuple[ServicePort, ...]) -> list[int]:
    """The HTTP-capable port numbers, ascending, once each."""
    return sorted({p.port for p in ports if is_http_port(p)})


DEVELOPER_ROUTE_PREFIX = "dev-"


def developer_route_names(vs: Mapping[str, Any] | None) -> list[str]:
    """Names of the developer routes (the ones this module makes) in a VirtualService."""
    http = ((vs or {}).get("spec") or {}).get("http") or []
    names = [str(r.get("name")) for r in http if isinstance(r, dict) and r.get("name")]
    return [n for n in names if n.startswith(DEVELOPER_ROUTE_PREFIX)]


def developer_routes(
    config: OperatorConfig, service: str, namespace: str, ports: tuple[ServicePort, ...]
) -> list[dict[str, Any]]:
    """The HTTP routes sending a developer's requests to `service` in `namespace`."""
    match = developer_match(config, namespace)
    host = service_host(service, namespace)
    http_ports = sorted_http_ports(ports)
    if not ports or (len(ports) == 1 and http_ports):
        name = f"{DEVELOPER_ROUTE_PREFIX}{namespace}"
        return [{"name": name, "match": [match], "route": [_dest(host)]}]
    return [
        {
            "name": f"{DEVELOPER_ROUTE_PREFIX}{namespace}-{port}",
            "match": [{**match, "port": port}],
            "route": [_dest(host, port)],
        }
        for port in http_ports
    ]


def _dest(host: str, port: int | None = None) -> dict[str, Any]:
    destination: dict[str, Any] = {"host": host}
    if port is not None:
        destination["port"] = {"number": port}
    return {"destination": destination}


def developer_match(config: OperatorConfig, namespace: str) -> dict[str, Any]:
    routing = config.routing
    if routing.match == "baggage":
        return {"headers": {"baggage": {"regex": baggage_regex(routing.baggage_key, namespace)}}}
    return {"headers": {routing.header: {"exact": namespace}}}


def baggage_regex(key: str, value: str) -> str:
    """RE2 regex (full match) for a W3C baggage header holding the member key=value.

    Members are comma-separated with optional whitespace; a member may carry
    ';properties'. The member must be the whole key and the whole value, so a namespace
    that is a prefix of another never matches it.
    """
    k, v = _re2_escape(key), _re2_escape(value)
    return rf"(.*,)?[ \t]*{k}[ \t]*=[ \t]*{v}[ \t]*(;[^,]*)?(,.*)?"


def _re2_escape(text: str) -> str:
    # Backslash before any non-word character is a literal in both RE2 and Python.
    return re.sub(r"(\W)", r"\\\1", text)


def placeholder_manifest(
    config: OperatorConfig, source: ServiceInfo, namespace: str
) -> dict[str, Any]:
    """An ExternalName Service in `namespace` standing in for `source` (in D)."""
    d, s = config.default_namespace, source.name
    ports = []
    for p in source.ports:
        port: dict[str, Any] = {"port": p.port, "protocol": p.protocol}
        if p.name:
            port["name"] = p.name
        if p.app_protocol:
            port["appProtocol"] = p.app_protocol
        ports.append(port)
    spec: dict[str, Any] = {"type": "ExternalName", "externalName": service_host(s, d)}
    if ports:
        spec["ports"] = ports
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": s,
            "namespace": namespace,
            "labels": {
                PLACEHOLDER_LABEL: PLACEHOLDER_VALUE,
                INSTANCE_LABEL: config.instance,
                **config.placeholder.labels,
            },
            "annotations": {SOURCE_ANNOTATION: f"{d}/{s}", **config.placeholder.annotations},
        },
        "spec": spec,
    }
