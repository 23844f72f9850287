"""The difference between desired and actual state for one Service name, as actions.

Pure: the reconciler hands in the cached actual state and applies the actions. An
action is planned only where something differs, so a converged cluster costs no
request at all; applying the bodies and planning again yields no action.

Safety rules, checked here once for every writer:
- a VirtualService without `managed-by: virtualservice-operator` is never written or
  deleted (only warned about);
- a real Service is never written, except to remove our marking ("unmark") from one
  a user applied over a placeholder;
- nothing in a system namespace, nothing about the `kubernetes` Service.

Bodies: `create` is the manifest to POST; `update` is the whole object to PUT (it
carries metadata.resourceVersion for optimistic concurrency); `delete` carries
resourceVersion and uid as preconditions; `unmark` is a JSON merge patch.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from virtualservice_operator.config import OperatorConfig
from virtualservice_operator.constants import (
    IGNORED_SERVICES,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    PLACEHOLDER_LABEL,
    SOURCE_ANNOTATION,
    SYSTEM_NAMESPACES,
    service_host,
    virtual_service_name,
)
from virtualservice_operator.desired import Desired
from virtualservice_operator.model import ServiceInfo

Verb = Literal["create", "update", "delete", "unmark"]
Kind = Literal["VirtualService", "Service"]


@dataclass(frozen=True)
class Action:
    verb: Verb
    kind: Kind
    namespace: str
    name: str
    body: dict[str, Any] | None
    resource_version: str | None
    uid: str | None
    reason: str


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]
    warnings: tuple[str, ...]


def is_managed(vs: Mapping[str, Any]) -> bool:
    labels = _meta(vs).get("labels")
    return isinstance(labels, Mapping) and labels.get(MANAGED_BY_LABEL) == MANAGED_BY_VALUE


def plan(
    desired: Desired,
    *,
    config: OperatorConfig,
    services: Mapping[str, ServiceInfo],
    virtual_services: Sequence[dict[str, Any]],
) -> Plan:
    """Actions turning the actual state into `desired`, for the name `desired.service`.

    `services`: namespace -> Service named S (watched namespaces; a caller may add
    placeholders found elsewhere, e.g. in a namespace dropped from the config, to have
    them cleaned up). `virtual_services`: VirtualServices named `S-virtual-service` in
    any namespace, plus any other VirtualService in D whose hosts name S.
    """
    s = desired.service
    if s in IGNORED_SERVICES:
        return Plan((), ())
    actions: list[Action] = []
    warnings: list[str] = []
    _plan_virtual_services(desired, config, virtual_services, actions, warnings)
    _plan_placeholders(desired, config, services, actions)
    return Plan(tuple(actions), tuple(warnings))


def _plan_virtual_services(
    desired: Desired,
    config: OperatorConfig,
    virtual_services: Sequence[dict[str, Any]],
    actions: list[Action],
    warnings: list[str],
) -> None:
    s, d = desired.service, config.default_namespace
    name = virtual_service_name(s)
    want = desired.virtual_service
    ours: dict[str, Any] | None = None
    orphans = []
    for vs in sorted(
        virtual_services, key=lambda v: (str(_meta(v).get("namespace", "")), _name(v))
    ):
        ns = str(_meta(vs).get("namespace", ""))
        if ns in SYSTEM_NAMESPACES:
            continue
        if _name(vs) == name and ns == d:
            ours = vs
        elif _name(vs) == name:
            if is_managed(vs) and not _terminating(vs):
                orphans.append(_delete("VirtualService", vs, f"orphan: not in namespace {d}"))
        elif ns == d and want is not None and _names_host(vs, s, d):
            warnings.append(
                f"VirtualService {d}/{_name(vs)} also routes host {s}: "
                "Istio merges or conflicts with it"
            )
    if ours is None:
        if want is not None:
            body = copy.deepcopy(want)
            actions.append(
                Action("create", "VirtualService", d, name, body, None, None, "not found")
            )
    elif not is_managed(ours):
        if want is not None:
            warnings.append(
                f"VirtualService {d}/{name} exists without label "
                f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}: left alone"
            )
    elif _terminating(ours):
        pass  # being deleted: recreated once the deletion is seen
    elif want is None:
        reason = desired.notes[0] if desired.notes else "no longer desired"
        actions.append(_delete("VirtualService", ours, reason))
    elif diff := _vs_differences(ours, want):
        meta = _meta(ours)
        rv, uid = str(meta.get("resourceVersion") or ""), str(meta.get("uid") or "")
        body = _vs_update_body(ours, want)
        actions.append(
            Action("update", "VirtualService", d, name, body, rv or None, uid or None, diff)
        )
    # Orphans last: the new VirtualService exists before the old one goes.
    actions.extend(orphans)


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
    desired: Desired,
    config: OperatorConfig,
    services: Mapping[str, ServiceInfo],
    actions: list[Action],
) -> None:
    s, d = desired.service, config.default_namespace
    order = {ns: i for i, ns in enumerate(config.developer_namespaces)}
    namespaces = sorted(
        {*services, *desired.placeholders}, key=lambda ns: (order.get(ns, len(order)), ns)
    )
    for ns in namespaces:
        # Services in D are what everything derives from: never touched from here.
        if ns == d or ns in SYSTEM_NAMESPACES:
            continue
        actual = services.get(ns)
        if actual is not None and actual.name != s:
            continue
        want = desired.placeholders.get(ns)
        if actual is None:
            if want is not None:
                actions.append(
                    Action(
                        "create",
                        "Service",
                        ns,
                        s,
                        copy.deepcopy(want),
                        None,
                        None,
                        f"placeholder for {d}/{s} missing",
                    )
                )
        elif not actual.is_placeholder:
            if actual.carries_placeholder_marking:
                actions.append(_unmark(ns, actual))
        elif want is None:
            reason = f"placeholder no longer wanted ({'; '.join(desired.notes) or 'disabled'})"
            actions.append(_delete("Service", actual, reason, ns))
        else:
            diff = _placeholder_differences(actual, want)
            if diff:
                actions.append(
                    Action(
                        "update",
                        "Service",
                        ns,
                        s,
                        _placeholder_update_body(actual, want),
                        actual.resource_version or None,
                        actual.uid or None,
                        diff,
                    )
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


def _unmark(namespace: str, actual: ServiceInfo) -> Action:
    patch = {
        "metadata": {
            "resourceVersion": actual.resource_version or None,
            "labels": {PLACEHOLDER_LABEL: None},
            "annotations": {SOURCE_ANNOTATION: None},
        }
    }
    return Action(
        "unmark",
        "Service",
        namespace,
        actual.name,
        patch,
        actual.resource_version or None,
        actual.uid or None,
        "a real Service replaced the placeholder: removing the placeholder marking",
    )


def _delete(
    kind: Kind, obj: Mapping[str, Any] | ServiceInfo, reason: str, namespace: str = ""
) -> Action:
    if isinstance(obj, ServiceInfo):
        ns, name, rv, uid = namespace, obj.name, obj.resource_version, obj.uid
    else:
        meta = _meta(obj)
        ns, name = str(meta.get("namespace", "")), _name(obj)
        rv, uid = str(meta.get("resourceVersion") or ""), str(meta.get("uid") or "")
    return Action("delete", kind, ns, name, None, rv or None, uid or None, reason)


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _name(obj: Mapping[str, Any]) -> str:
    return str(_meta(obj).get("name", ""))


def _terminating(obj: Mapping[str, Any]) -> bool:
    return bool(_meta(obj).get("deletionTimestamp"))


def _names_host(vs: Mapping[str, Any], service: str, namespace: str) -> bool:
    spec = vs.get("spec")
    hosts = spec.get("hosts") if isinstance(spec, Mapping) else None
    return isinstance(hosts, list) and bool(
        {service, service_host(service, namespace)} & set(h for h in hosts if isinstance(h, str))
    )
