"""The template's own routes made port-explicit for a Service with several ports.

Istio's analysis IST0112 (VirtualServiceDestinationPortSelectorRequired, an Error)
reports a destination with no `port` whose Service exposes more than one port. At run
time Istio sends such a destination to the port the request came in on
(`GetDestinationCluster` uses the listener's port when the destination names none and
the Service has several), so writing that port out changes no request's path; it only
says it, as Istio asks. The rule, for a default Service with several ports and at least
one HTTP-capable port (the same ports that get developer routes):

- an http route whose match clauses name no `port`, and which sends (`route`, `mirror`,
  `mirrors`) to the Service's own host with no port, is written once per HTTP-capable
  port P, ascending: each copy adds `port: P` to every match clause (or matches only
  `port: P` when it had none), names `port: {number: P}` on those own-host destinations,
  and, when the route is named, is named `<name>-P`;
- an http route whose match clauses all name the same port P gets `port: {number: P}` on
  its own-host destinations that name none;
- everything else is kept as written (other hosts' ports are not ours to know).

The Service's own host is any spelling Istio resolves to it from the default namespace:
`S`, `S.D`, `S.D.svc`, `S.D.svc.cluster.local`. Pure: no I/O.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

from virtualservice_operator.domain.constants import service_host


def own_hosts(service: str, namespace: str) -> frozenset[str]:
    """The spellings of the Service's host that Istio resolves from its namespace."""
    full = service_host(service, namespace)
    return frozenset({service, f"{service}.{namespace}", f"{service}.{namespace}.svc", full})


def port_explicit_routes(
    http: list[Any], *, service: str, namespace: str, http_ports: list[int]
) -> list[Any]:
    """`http` (the template's routes) with ports written out, per the module's rule."""
    hosts = own_hosts(service, namespace)
    out: list[Any] = []
    for route in http:
        if not isinstance(route, dict) or not _portless_own(route, hosts):
            out.append(route)
            continue
        matches = route.get("match")
        clauses = matches if isinstance(matches, list) else []
        ports = {c.get("port") for c in clauses if isinstance(c, dict)}
        if not clauses or ports == {None}:
            out += [_for_port(route, port, hosts, expand=True) for port in http_ports]
        elif len(ports) == 1 and isinstance(port := next(iter(ports)), int):
            out.append(_for_port(route, port, hosts, expand=False))
        else:
            out.append(route)
    return out


def _destinations(route: dict[str, Any]) -> Iterator[Any]:
    for weighted in route.get("route") or []:
        if isinstance(weighted, dict):
            yield weighted.get("destination")
    yield route.get("mirror")
    for mirror in route.get("mirrors") or []:
        if isinstance(mirror, dict):
            yield mirror.get("destination")


def _needs_port(destination: Any, hosts: frozenset[str]) -> bool:
    return (
        isinstance(destination, dict)
        and destination.get("host") in hosts
        and destination.get("port") is None
    )


def _portless_own(route: dict[str, Any], hosts: frozenset[str]) -> bool:
    return any(_needs_port(d, hosts) for d in _destinations(route))


def _for_port(
    route: dict[str, Any], port: int, hosts: frozenset[str], *, expand: bool
) -> dict[str, Any]:
    copied = copy.deepcopy(route)
    for destination in _destinations(copied):
        if _needs_port(destination, hosts):
            destination["port"] = {"number": port}
    if expand:
        clauses = copied.get("match") or [{}]
        copied["match"] = [{**c, "port": port} for c in clauses]
        if isinstance(copied.get("name"), str) and copied["name"]:
            copied["name"] = f"{copied['name']}-{port}"
    return copied
