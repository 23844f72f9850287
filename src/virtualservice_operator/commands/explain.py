"""`explain SERVICE`: what the operator does for one Service name, and why (read-only).

Reads the config from the operator's ConfigMap and the cluster as the operator sees it
(`commands.inspect`), then prints, in order:

- the config in one line;
- the Service SERVICE in each watched namespace: real (routed or why not), placeholder,
  absent, excluded; and in any namespace the operator does not watch, with why;
- the VirtualService SERVICE-virtual-service: managed or not, and its routes;
- sync: "in sync", every action a reconcile would take now (drift), or "held back" by a
  host conflict (a VirtualService not this instance's routes the host for the mesh);
- "why nothing happens": each reason the operator leaves something alone (system
  namespace, exclude label, the `kubernetes` Service, dev-only name, unmanaged
  VirtualService, placeholders off, namespace not in the config, a configured namespace
  that does not exist, a host conflict);
- the recent Events about objects named SERVICE in the watched namespaces (those the
  operator records land on the Service in the default namespace).

Exit codes: 0 in sync; 1 drift (a reconcile would write) or held back; 2 usage; 3 could not read the
cluster or the ConfigMap is missing or invalid.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from virtualservice_operator.commands import (
    EXIT_OK,
    EXIT_PROBLEM,
    EXIT_USAGE,
    add_command,
)
from virtualservice_operator.commands.check_config import summary
from virtualservice_operator.commands.inspect import (
    NameState,
    add_cluster_flags,
    describe_route,
    evaluate,
    load_config,
    load_view,
    with_client,
)
from virtualservice_operator.commands.output import Style, table
from virtualservice_operator.domain.constants import (
    EXCLUDE_LABEL,
    SYSTEM_NAMESPACES,
    virtual_service_name,
)
from virtualservice_operator.domain.model import ServiceInfo, is_dns_label
from virtualservice_operator.kube.client import EVENTS, JSON, Forbidden, KubeClient

MAX_EVENTS = 10


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(
        sub,
        "explain",
        summary="what the operator does for a Service name, and why (read-only)",
        description=(
            "Explain, from the cluster, what the operator does for the Service name SERVICE "
            "and why: the Service in each watched namespace, the VirtualService and its "
            "routes, what a reconcile would change now (drift), why something is left "
            "alone, and the recent Events. Reads only; writes nothing."
        ),
        examples=[
            "virtualservice-operator explain cart",
            "virtualservice-operator explain cart --kubeconfig ~/.kube/prod",
        ],
        handler=run,
    )
    p.add_argument("service", metavar="SERVICE", help="the Service name (no namespace)")
    add_cluster_flags(p)


def run(args: argparse.Namespace) -> int:
    name: str = args.service
    if not is_dns_label(name):
        print(f"error: {name!r} is not a Service name (a DNS label)", file=sys.stderr)
        return EXIT_USAGE

    async def work(client: KubeClient) -> tuple[NameState, list[JSON] | None]:
        config = await load_config(
            client, args.config_map_namespace, args.config_map_name, args.instance
        )
        # The Events are listed while the view is: one round trip less.
        listing = asyncio.ensure_future(_list_events(client, name))
        try:
            state = evaluate(await load_view(client, config, name), name)
            found = await listing
        finally:
            listing.cancel()
        if found is None:
            return state, None
        # Same-named objects elsewhere are other teams' business, not the operator's.
        watched = set(config.watched_namespaces)
        events = [e for e in found if (e.get("involvedObject") or {}).get("namespace") in watched]
        return state, events

    state, events = with_client(args.kubeconfig, work, args.context)
    where = f"{args.config_map_namespace}/{args.config_map_name}"
    print("\n".join(report(state, events, where, Style())))
    return EXIT_OK if state.in_sync else EXIT_PROBLEM


async def _list_events(client: KubeClient, name: str) -> list[JSON] | None:
    """Events about objects named `name`, in any namespace; None if we may not list them."""
    try:
        found, _ = await client.list(EVENTS, None, field_selector=f"involvedObject.name={name}")
    except Forbidden:  # e.g. run inside the pod: the operator may create Events, not list
        return None
    return found


def report(state: NameState, events: list[JSON] | None, where: str, style: Style) -> list[str]:
    name, config = state.name, state.config
    lines = [style.title(f"Service name {name}"), f"Config (ConfigMap {where}): {summary(config)}"]
    lines += ["", style.title("Services named " + name)]
    rows = [[ns, role, describe_service(state, ns)] for ns, role in _namespaces(state)]
    lines += ["  " + line for line in table(["NAMESPACE", "ROLE", "STATE"], rows)]

    vs = state.virtual_service
    lines += [
        "",
        style.title(f"VirtualService {config.default_namespace}/{virtual_service_name(name)}"),
    ]
    if vs is None:
        lines.append("  absent")
    else:
        managed = "managed" if state.managed else f"NOT managed ({state.unmanaged_reason()})"
        lines.append(f"  {managed}")
        routes = [describe_route(r) for r in (vs.get("spec") or {}).get("http") or []]
        lines += ["  " + line for line in table(["ROUTE", "MATCH", "DESTINATION"], routes)]

    lines += ["", style.title("Sync")]
    if state.error:
        lines.append(f"  {style.bad('cannot compute desired state')}: {state.error}")
    elif state.in_sync:
        lines.append(f"  {style.ok('in sync')}: a reconcile now would write nothing")
    elif not state.actions:
        lines.append(f"  {style.bad('held back')}: a reconcile now would write nothing")
    else:
        lines.append(f"  {style.bad('drift')}: a reconcile now would")
        lines += [
            f"  - {a.verb} {a.kind} {a.namespace}/{a.name}: {a.reason}" for a in state.actions
        ]
    lines += [
        f"  {style.warn('warning')}: {w}" for w in state.plan.warnings if w.reason != "HostConflict"
    ]
    lines += [f"  {style.bad('host conflict')}: {c}" for c in state.host_conflicts]

    reasons = why_nothing_happens(state)
    if reasons:
        lines += ["", style.title("Why nothing happens")]
        lines += [f"  - {reason}" for reason in reasons]

    lines += ["", style.title(f"Recent events about {name}")]
    if events is None:
        lines.append("  cannot list Events: forbidden for these credentials")
    else:
        lines += ["  " + line for line in _events(events)] or ["  none"]
    return lines


def _namespaces(state: NameState) -> list[tuple[str, str]]:
    config = state.config
    found = [(config.default_namespace, "default")]
    found += [(ns, "developer") for ns in config.developer_namespaces]
    return found + [(ns, "not watched") for ns in sorted(state.elsewhere)]


def describe_service(state: NameState, ns: str) -> str:
    desired = state.desired
    if ns in state.elsewhere:
        return (
            "system namespace: never acted on"
            if ns in SYSTEM_NAMESPACES
            else ("not in the config: ignored")
        )
    if ns in state.absent:
        return f"namespace {ns} {state.absent[ns]}: nothing is written there"
    if ns == state.config.default_namespace and state.unselected:
        return "real, not selected by serviceSelector"
    svc = state.services.get(ns)
    if svc is None:
        if desired is not None and ns in desired.placeholders:
            return "absent: a placeholder is wanted"
        return "absent"
    if svc.excluded:
        return f"real, excluded by label {EXCLUDE_LABEL}=true"
    if svc.is_placeholder:
        return f"placeholder -> {svc.external_name}"
    real = f"real ({svc.type}, ports {_ports(svc)})"
    if desired is not None and ns in desired.routed_namespaces:
        return f"{real}: routed"
    why = _namespace_notes(state).get(ns)  # e.g. no HTTP port, no route
    return f"{real}: {why}" if why else real


def _namespace_notes(state: NameState) -> dict[str, str]:
    """`Desired.notes` about one developer namespace (written "namespace: why")."""
    notes: dict[str, str] = {}
    for note in state.desired.notes if state.desired else ():
        ns, sep, why = note.partition(": ")
        if sep and ns in state.config.developer_namespaces:
            notes[ns] = why
    return notes


def _ports(svc: ServiceInfo) -> str:
    return ",".join(f"{p.name}:{p.port}" if p.name else str(p.port) for p in svc.ports) or "none"


def why_nothing_happens(state: NameState) -> list[str]:
    """Every reason the operator leaves something about this name alone: the namespaces
    it does not watch, then the reasons desired state gives (`Desired.notes`, but for
    the placeholders it makes), the unmanaged VirtualService, placeholders off."""
    name, config, desired = state.name, state.config, state.desired
    d = config.default_namespace
    reasons = []
    for ns in sorted(state.elsewhere):
        if ns in SYSTEM_NAMESPACES:
            reasons.append(f"{ns} is a system namespace: its Services are never acted on")
        else:
            reasons.append(
                f"{ns} is neither defaultNamespace nor in developerNamespaces: not watched"
            )
    for ns, why in state.absent.items():
        reasons.append(
            f"namespace {ns} {why}: nothing is written there until it exists (the operator "
            "acts as soon as it is created)"
        )
    if state.unselected:
        selector = config.service_selector.query() if config.service_selector else ""
        reasons.append(
            f"Service {d}/{name} is not selected by serviceSelector ({selector}): nothing is "
            "made for this name"
        )
    elif desired is not None and desired.virtual_service is None:
        reasons += [f"{note}: nothing is made for this name" for note in desired.notes]
    elif desired is not None:
        notes = _namespace_notes(state)
        reasons += [
            f"{ns}: {why}"
            for ns, why in notes.items()
            if ns not in desired.placeholders and ns not in state.absent
        ]
    if state.host_conflicts:
        reasons.append(
            f"VirtualService {d}/{virtual_service_name(name)} is held back by a host conflict "
            "(see Sync): it is made or updated once the other VirtualService no longer routes "
            "that host"
        )
    vs = state.virtual_service
    if vs is not None and not state.managed:
        reasons.append(
            f"VirtualService {d}/{virtual_service_name(name)} is unmanaged "
            f"({state.unmanaged_reason()}): never changed or deleted; "
            "label it back to hand it over (docs/operations.md)"
        )
    lacking = [
        ns
        for ns in config.developer_namespaces
        if ns not in state.services and ns not in state.absent
    ]
    if d in state.services and lacking and not config.enable_placeholder_services:
        reasons.append(
            f"placeholders are off (enablePlaceholderServices: false): none in {', '.join(lacking)}"
        )
    return reasons


def _events(events: list[JSON]) -> list[str]:
    def when(event: JSON) -> str:
        meta = event.get("metadata") or {}
        return str(
            event.get("lastTimestamp")
            or event.get("eventTime")
            or meta.get("creationTimestamp")
            or ""
        )

    recent = sorted(events, key=when)[-MAX_EVENTS:]
    rows = []
    for e in recent:
        obj = e.get("involvedObject") or {}
        target = f"{obj.get('kind', '?')} {obj.get('namespace', '')}/{obj.get('name', '')}"
        message = str(e.get("message", "")).replace("\n", " ")
        rows.append([when(e), str(e.get("type", "")), str(e.get("reason", "")), target, message])
    return table(["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"], rows) if rows else []
