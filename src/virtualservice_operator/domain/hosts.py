"""Which hosts two VirtualServices both route for the mesh, as Istio sees them (IST0109).

Istio applies one VirtualService per host to sidecars: when two bound to the `mesh`
gateway list the same host for namespaces that see both, only one is used (analysis
IST0109, ConflictingMeshGatewayVirtualServiceHosts). The rules here are that analyzer's
(`pkg/config/analysis/analyzers/virtualservice/conflictingmeshgatewayhosts.go`):

- a VirtualService is bound to the mesh when it lists no `gateways`, or lists `mesh`;
- a host without a dot (a short name) means `<host>.<its namespace>.svc.cluster.local`;
  any other host is taken as written (`cart.prod` is not `cart.prod.svc.cluster.local`);
- `exportTo` scopes a host: empty or `*` is every namespace, `.` the VirtualService's
  own; two scopes meet when either is every namespace or they share a namespace.

Wildcard hosts (`*.example.com`) are compared as written. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MESH_GATEWAY = "mesh"
CLUSTER_DOMAIN = "svc.cluster.local"
_EVERYWHERE = "*"


def fqdn(host: str, namespace: str) -> str:
    """`host` as Istio resolves it for a VirtualService in `namespace`."""
    if host.startswith("*") or "." in host:
        return host
    return f"{host}.{namespace}.{CLUSTER_DOMAIN}"


def _spec(vs: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = vs.get("spec")
    return spec if isinstance(spec, Mapping) else {}


def _namespace(vs: Mapping[str, Any]) -> str:
    meta = vs.get("metadata")
    return str(meta.get("namespace") or "") if isinstance(meta, Mapping) else ""


def _strings(value: object) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def mesh_bound(vs: Mapping[str, Any]) -> bool:
    """True when the VirtualService applies to sidecars (no gateways, or `mesh` listed)."""
    gateways = _strings(_spec(vs).get("gateways"))
    return not gateways or MESH_GATEWAY in gateways


def export_scope(vs: Mapping[str, Any]) -> frozenset[str]:
    """The namespaces the VirtualService is exported to (`{"*"}`: every namespace)."""
    export_to = _strings(_spec(vs).get("exportTo"))
    if not export_to or _EVERYWHERE in export_to:
        return frozenset({_EVERYWHERE})
    own = _namespace(vs)
    return frozenset(own if ns == "." else ns for ns in export_to)


def mesh_hosts(vs: Mapping[str, Any]) -> frozenset[str]:
    """The hosts the VirtualService routes for the mesh, resolved (empty if not mesh-bound)."""
    if not mesh_bound(vs):
        return frozenset()
    ns = _namespace(vs)
    return frozenset(fqdn(h, ns) for h in _strings(_spec(vs).get("hosts")))


def shared_mesh_hosts(ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> tuple[str, ...]:
    """The hosts both VirtualServices route for the mesh where both are seen, sorted
    (empty: Istio sees no conflict between them)."""
    shared = mesh_hosts(ours) & mesh_hosts(theirs)
    if not shared:
        return ()
    a, b = export_scope(ours), export_scope(theirs)
    if _EVERYWHERE in a or _EVERYWHERE in b or a & b:
        return tuple(sorted(shared))
    return ()
