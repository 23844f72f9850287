"""The difference between desired and actual state, as actions: the gate of every write.

Pure: callers hand in the actual state (from the cache, or a list) and the executor
applies the actions. An action is planned only where something differs, so a converged
cluster costs no request at all; applying the bodies and planning again yields no action.
Two planners, one gate: `plan` for one Service name (the reconciler), `plan_orphan_sweep`
for placeholders left in namespaces the config no longer lists (the resync). Every
action either makes passes `_permitted` before it is returned.

Safety rules, checked here once for every writer:
- only this instance's objects (label `virtualservice-operator/instance` equal to
  `config.instance`) are ever updated or deleted; another instance's, or one made before
  instances existed, is left alone and reported (adopting it is a labelling step);
- a VirtualService without `managed-by: virtualservice-operator` is never written or
  deleted (only warned about);
- a real Service is never written, except to remove our marking ("unmark") from one
  a user applied over a placeholder;
- nothing in a system namespace, nothing about an ignored Service (`kubernetes`).

Bodies: `create` is the manifest to POST (the Desired's own dict, not a copy: desired
state is built afresh for each pass and no one changes a body after planning); `update`
is the whole object to PUT (it carries metadata.resourceVersion for optimistic
concurrency); `delete` carries resourceVersion and uid as preconditions; `unmark` is a
JSON merge patch.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeGuard

from virtualservice_operator.domain.config import OperatorConfig
from virtualservice_operator.domain.constants import (
    IGNORED_SERVICES,
    INSTANCE_LABEL,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    PLACEHOLDER_LABEL,
    SOURCE_ANNOTATION,
    SYSTEM_NAMESPACES,
    service_for_virtual_service,
    virtual_service_name,
)
from virtualservice_operator.domain.desired import Desired
from virtualservice_operator.domain.hosts import shared_mesh_hosts
from virtualservice_operator.domain.instance import owner
from virtualservice_operator.domain.model import ServiceInfo, VirtualServiceInfo

Verb = Literal["create", "update", "delete", "unmark"]
Kind = Literal["VirtualService", "Service"]
# The Event reason each warning is reported under.
WarningReason = Literal[
    "UnmanagedVirtualService",
    "ForeignVirtualService",
    "VirtualServiceConflict",
    "HostConflict",
    "PlaceholderClash",
]


@dataclass(frozen=True, kw_only=True)
class Action:
    verb: Verb
    kind: Kind
    namespace: str
    name: str
    body: dict[str, Any] | None = None
    resource_version: str | None = None
    uid: str | None = None
    reason: str


@dataclass(frozen=True)
class PlanWarning:
    reason: WarningReason
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]
    warnings: tuple[PlanWarning, ...]

    @property
    def host_conflicts(self) -> tuple[PlanWarning, ...]:
        """Why our VirtualService is held back (not created or updated), if it is."""
        return tuple(w for w in self.warnings if w.reason == "HostConflict")


def plan(
    desired: Desired,
    *,
    config: OperatorConfig,
    services: Mapping[str, ServiceInfo],
    virtual_services: Sequence[VirtualServiceInfo],
) -> Plan:
    """Actions turning the actual state into `desired`, for the name `desired.service`.

    `services`: namespace -> Service named S (watched namespaces; a caller may add
    placeholders found elsewhere, e.g. in a namespace dropped from the config, to have
    them cleaned up). `virtual_services`: VirtualServices named `S-virtual-service` in
    any namespace, plus any other VirtualService in D whose hosts name S (the cache's
    records).
    """
    vs_actions, vs_warnings = _plan_virtual_services(desired, config, virtual_services)
    placeholder_actions, placeholder_warnings = _plan_placeholders(desired, config, services)
    # Nothing can be written in a namespace that does not exist, and what is in one being
    # deleted goes with it.
    absent = desired.absent_namespaces
    actions = (a for a in (*vs_actions, *placeholder_actions) if a.namespace not in absent)
    return Plan(_permitted(actions), (*vs_warnings, *placeholder_warnings))


def plan_orphan_sweep(
    config: OperatorConfig, placeholders: Iterable[ServiceInfo]
) -> tuple[Action, ...]:
    """Deletes of our placeholders in namespaces the config no longer watches.

    `placeholders`: Services carrying the placeholder label, from anywhere. Those in
    watched namespaces are left to `plan` (by name); a Service no longer in placeholder
    shape is a real one now and is never deleted.
    """
    watched = set(config.watched_namespaces)
    reason = "orphaned placeholder: its namespace is no longer in the config"
    return _permitted(
        _delete("Service", svc, reason)
        for svc in placeholders
        if svc.namespace not in watched and svc.is_placeholder and svc.instance == config.instance
    )


def _permitted(actions: Iterable[Action]) -> tuple[Action, ...]:
    """The actions the safety rules allow: none in a system namespace, none about an
    ignored Service (the planners never make one; this is the guarantee)."""
    return tuple(
        a
        for a in actions
        if a.namespace not in SYSTEM_NAMESPACES
        and (a.name if a.kind == "Service" else service_for_virtual_service(a.name) or a.name)
        not in IGNORED_SERVICES
    )


def _plan_virtual_services(
    desired: Desired, config: OperatorConfig, virtual_services: Sequence[VirtualServiceInfo]
) -> tuple[list[Action], tuple[PlanWarning, ...]]:
    s, d = desired.service, config.default_namespace
    name = virtual_service_name(s)
    want = desired.virtual_service
    actions: list[Action] = []
    warnings: list[PlanWarning] = []
    ours: VirtualServiceInfo | None = None
    orphans = []
    others: list[VirtualServiceInfo] = []
    for vs in sorted(virtual_services, key=lambda v: (v.namespace, v.name)):
        if vs.namespace in SYSTEM_NAMESPACES:
            continue
        if vs.name == name and vs.namespace == d:
            ours = vs
        elif vs.name == name:
            if _is_ours(vs, config) and not vs.terminating:
                orphans.append(_delete("VirtualService", vs, f"orphan: not in namespace {d}"))
        elif vs.namespace == d:
            others.append(vs)
    if want is not None and (ours is None or _is_ours(ours, config)):
        held = _check_hosts(want, others, config, warnings, exists=ours is not None)
    else:
        held = False
    if ours is None:
        if want is not None and not held:
            actions.append(
                Action(
                    verb="create",
                    kind="VirtualService",
                    namespace=d,
                    name=name,
                    body=want,
                    reason="not found",
                )
            )
    elif not ours.managed:
        if want is not None:
            warnings.append(
                PlanWarning(
                    "UnmanagedVirtualService",
                    f"VirtualService {d}/{name} exists without label "
                    f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}: left alone",
                )
            )
    elif ours.instance != config.instance:
        if want is not None:
            warnings.append(
                PlanWarning(
                    "ForeignVirtualService",
                    f"VirtualService {d}/{name} belongs to {owner(ours.instance)}, not to this "
                    f"instance ({config.instance}): left alone (to adopt it, label it "
                    f"{INSTANCE_LABEL}={config.instance})",
                )
            )
    elif ours.terminating:
        pass  # being deleted: recreated once the deletion is seen
    elif want is None:
        reason = desired.notes[0] if desired.notes else "no longer desired"
        actions.append(_delete("VirtualService", ours, reason))
    elif held:
        pass  # left as it is while the other VirtualService routes the same host
    elif diff := _vs_differences(ours.body, want):
        actions.append(
            Action(
                verb="update",
                kind="VirtualService",
                namespace=d,
                name=name,
                body=_vs_update_body(ours.body, want),
                resource_version=ours.resource_version or None,
                uid=ours.uid or None,
                reason=diff,
            )
        )
    # Orphans last: the new VirtualService exists before the old one goes.
    return [*actions, *orphans], tuple(warnings)


def _is_ours(vs: VirtualServiceInfo, config: OperatorConfig) -> bool:
    return vs.managed and vs.instance == config.instance


def _check_hosts(
    want: Mapping[str, Any],
    others: Sequence[VirtualServiceInfo],
    config: OperatorConfig,
    warnings: list[PlanWarning],
    *,
    exists: bool,
) -> bool:
    """Warn about every other VirtualService in D routing one of our hosts for the mesh;
    True when one that is not ours holds ours back (unless allowHostConflicts)."""
    name, d = want["metadata"]["name"], want["metadata"]["namespace"]
    held = False
    for vs in others:
        shared = shared_mesh_hosts(want, vs.body)
        if not shared:
            continue
        hosts = ", ".join(shared)
        if _is_ours(vs, config) or config.allow_host_conflicts:
            warnings.append(
                PlanWarning(
                    "VirtualServiceConflict",
                    f"VirtualService {d}/{vs.name} also routes {hosts} for the mesh: "
                    "Istio applies only one of the two (IST0109)",
                )
            )
            continue
        held = True
        whose = owner(vs.instance) if vs.managed else f"no label {MANAGED_BY_LABEL}"
        done = "left as it is" if exists else "not created"
        warnings.append(
            PlanWarning(
                "HostConflict",
                f"VirtualService {d}/{vs.name} ({whose}) already routes {hosts} for the mesh: "
                f"{d}/{name} is {done} while it does, since Istio would apply only one of "
                "the two (IST0109). Fix: remove that host from it or delete it, or set "
                "allowHostConflicts: true",
            )
        )
    return held


def _vs_differences(actual: Mapping[str, Any], want: Mapping[str, Any]) -> str:
    """Why `actual` must be updated to `want`, or "" if it need not."""
    meta, want_meta = _meta(actual), want["metadata"]
    reasons = []
    if actual.get("spec") != want["spec"]:
        reasons.append("spec differs from template and routes")
    for key in ("labels", "annotations"):
        have = meta.get(key) or {}
        if any(have.get(k) != v for k, v in (want_meta.get(key) or {}).items()):
            reasons.append(f"{key} differ")
    refs = meta.get("ownerReferences") or []
    if any(ref not in refs for ref in want_meta.get("ownerReferences") or []):
        reasons.append("ownerReference missing")
    return "; ".join(reasons)


def _vs_update_body(actual: Mapping[str, Any], want: Mapping[str, Any]) -> dict[str, Any]:
    # The actual spec is replaced below: copy everything but it.
    body = copy.deepcopy({k: v for k, v in actual.items() if k != "spec"})
    want_meta = want["metadata"]
    meta = body.setdefault("metadata", {})
    body["apiVersion"] = want["apiVersion"]
    body["spec"] = copy.deepcopy(want["spec"])
    for key in ("labels", "annotations"):
        if want_meta.get(key) or meta.get(key):
            meta[key] = {**(meta.get(key) or {}), **(want_meta.get(key) or {})}
    wanted_refs = want_meta.get("ownerReferences") or []
    if wanted_refs:
        # Ours are replaced, including one to an earlier Service of the same name (deleted
        # and created again: a new uid); two controller references would be refused.
        ours = {(r.get("kind"), r.get("name")) for r in wanted_refs}
        kept = [
            r
            for r in meta.get("ownerReferences") or []
            if (r.get("kind"), r.get("name")) not in ours or r.get("apiVersion") != "v1"
        ]
        meta["ownerReferences"] = kept + copy.deepcopy(wanted_refs)
    return body


def _plan_placeholders(
    desired: Desired, config: OperatorConfig, services: Mapping[str, ServiceInfo]
) -> tuple[list[Action], list[PlanWarning]]:
    s, d = desired.service, config.default_namespace
    order = {ns: i for i, ns in enumerate(config.developer_namespaces)}
    namespaces = sorted(
        {*services, *desired.placeholders}, key=lambda ns: (order.get(ns, len(order)), ns)
    )
    actions: list[Action] = []
    warnings: list[PlanWarning] = []
    for ns in namespaces:
        # Services in D are what everything derives from: never touched from here.
        if ns == d or ns in SYSTEM_NAMESPACES:
            continue
        actual = services.get(ns)
        if actual is not None and actual.name != s:
            continue
        if _foreign(actual, config):
            # Another instance made it (or a version before instances): it keeps it.
            if actual.is_placeholder and _wants_placeholder(desired, config, ns):
                warnings.append(_clash(actual, config))
            continue
        want = desired.placeholders.get(ns)
        if actual is None:
            if want is not None:
                actions.append(
                    Action(
                        verb="create",
                        kind="Service",
                        namespace=ns,
                        name=s,
                        body=want,
                        reason=f"placeholder for {d}/{s} missing",
                    )
                )
        elif not actual.is_placeholder:
            if actual.carries_placeholder_marking:
                actions.append(_unmark(actual))
        elif want is None:
            reason = f"placeholder no longer wanted ({'; '.join(desired.notes) or 'disabled'})"
            actions.append(_delete("Service", actual, reason))
        elif diff := _placeholder_differences(actual, want):
            actions.append(
                Action(
                    verb="update",
                    kind="Service",
                    namespace=ns,
                    name=s,
                    body=_placeholder_update_body(actual, want),
                    resource_version=actual.resource_version or None,
                    uid=actual.uid or None,
                    reason=diff,
                )
            )
    return actions, warnings


def _foreign(actual: ServiceInfo | None, config: OperatorConfig) -> TypeGuard[ServiceInfo]:
    """A Service marked as a placeholder by another instance (or none we know)."""
    return (
        actual is not None
        and actual.carries_placeholder_marking
        and actual.instance != config.instance
    )


def _wants_placeholder(desired: Desired, config: OperatorConfig, namespace: str) -> bool:
    """Would this instance put a placeholder in `namespace`, were the name free?"""
    return (
        config.enable_placeholder_services
        and desired.virtual_service is not None
        and namespace in config.developer_namespaces
    )


def _clash(actual: ServiceInfo, config: OperatorConfig) -> PlanWarning:
    return PlanWarning(
        "PlaceholderClash",
        f"placeholder {actual.namespace}/{actual.name} belongs to {owner(actual.instance)}: "
        f"this instance ({config.instance}) makes none there while it exists",
    )


def _ports(spec: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    return [
        (p.get("name"), p.get("port"), p.get("protocol", "TCP"), p.get("appProtocol"))
        for p in spec.get("ports") or []
    ]


def _placeholder_differences(actual: ServiceInfo, want: Mapping[str, Any]) -> str:
    spec, meta = want["spec"], want["metadata"]
    have_ports = [(p.name, p.port, p.protocol, p.app_protocol) for p in actual.ports]
    reasons = []
    if actual.type != spec["type"] or actual.external_name != spec["externalName"]:
        reasons.append(f"points to {actual.external_name}, not {spec['externalName']}")
    if have_ports != _ports(spec):
        reasons.append("ports differ from the source Service")
    if any(actual.labels.get(k) != v for k, v in meta["labels"].items()):
        reasons.append("labels differ")
    if any(actual.annotations.get(k) != v for k, v in meta["annotations"].items()):
        reasons.append("annotations differ")
    return "; ".join(reasons)


def _placeholder_update_body(actual: ServiceInfo, want: Mapping[str, Any]) -> dict[str, Any]:
    body = copy.deepcopy(dict(want))
    meta = body["metadata"]
    meta["labels"] = {**actual.labels, **meta["labels"]}
    meta["annotations"] = {**actual.annotations, **meta["annotations"]}
    if actual.resource_version:
        meta["resourceVersion"] = actual.resource_version
    return body


def _unmark(actual: ServiceInfo) -> Action:
    patch = {
        "metadata": {
            "resourceVersion": actual.resource_version or None,
            "labels": {PLACEHOLDER_LABEL: None, INSTANCE_LABEL: None},
            "annotations": {SOURCE_ANNOTATION: None},
        }
    }
    return Action(
        verb="unmark",
        kind="Service",
        namespace=actual.namespace,
        name=actual.name,
        body=patch,
        resource_version=actual.resource_version or None,
        uid=actual.uid or None,
        reason="a real Service replaced the placeholder: removing the placeholder marking",
    )


class _Record(Protocol):
    """What a delete needs of the record of the object (ServiceInfo, VirtualServiceInfo)."""

    @property
    def namespace(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def resource_version(self) -> str: ...
    @property
    def uid(self) -> str: ...


def _delete(kind: Kind, obj: _Record, reason: str) -> Action:
    """A delete with the version and uid we decided about as preconditions."""
    return Action(
        verb="delete",
        kind=kind,
        namespace=obj.namespace,
        name=obj.name,
        resource_version=obj.resource_version or None,
        uid=obj.uid or None,
        reason=reason,
    )


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}
