"""`status`: every name the operator manages, its developer routes, placeholders, sync.

One row per Service name that has a managed VirtualService (label
managed-by=virtualservice-operator, in any namespace) or that a reconcile would act on
now: the VirtualService, its developer routes (routes named `dev-...`), the developer
namespaces holding a placeholder of that name, and whether the name is in sync (the
same desired-vs-actual comparison as `explain`; "drift" counts the actions a reconcile
would take). Read-only.

A name whose VirtualService is held back by a host conflict (a VirtualService not
this instance's routes its host for the mesh) is listed, not in sync, with the conflict.
Configured namespaces that do not exist are named once, before the table (on stderr
with -o json or yaml, whose output stays a list of names).

Exit codes: 0 when the table was printed, even with drift (the operator is normally
about to fix it); with --check, 1 when any name is not in sync; 2 usage; 3 could not
read the cluster or the ConfigMap is missing or invalid.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from typing import Any

from virtualservice_operator.commands import (
    EXIT_OK,
    EXIT_PROBLEM,
    add_command,
)
from virtualservice_operator.commands.inspect import (
    ClusterView,
    NameState,
    add_cluster_flags,
    evaluate,
    load_config,
    load_view,
    with_client,
)
from virtualservice_operator.commands.output import Style, dump, table
from virtualservice_operator.domain.desired import developer_route_names
from virtualservice_operator.kube.client import KubeClient


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(
        sub,
        "status",
        summary="every managed VirtualService: developer routes, placeholders, in sync or not",
        description=(
            "List every name the operator manages (a VirtualService labelled "
            "managed-by=virtualservice-operator, or a name a reconcile would act on now) "
            "with its developer routes, its placeholders and whether it is in sync. "
            "Reads only; writes nothing."
        ),
        examples=[
            "virtualservice-operator status",
            "virtualservice-operator status --check -o json   # exit 1 on drift",
        ],
        handler=run,
        note="status exits 0 even with drift, unless --check is given",
    )
    p.add_argument(
        "-o",
        "--output",
        choices=["table", "json", "yaml"],
        default="table",
        help="table for people; json or yaml for scripts (default: table)",
    )
    p.add_argument("--check", action="store_true", help="exit 1 if any name is not in sync")
    add_cluster_flags(p)


def run(args: argparse.Namespace) -> int:
    async def work(client: KubeClient) -> tuple[list[dict[str, Any]], list[str]]:
        config = await load_config(
            client, args.config_map_namespace, args.config_map_name, args.instance
        )
        view = await load_view(client, config)
        return collect(view), namespace_notes(view)

    records, notes = with_client(args.kubeconfig, work, args.context)
    if args.output == "table":
        print("\n".join([*notes, *([""] if notes else []), *render_table(records, Style())]))
    else:
        for note in notes:
            print(note, file=sys.stderr)
        sys.stdout.write(dump(records, args.output))
    drift = any(not r["inSync"] for r in records)
    return EXIT_PROBLEM if args.check and drift else EXIT_OK


def namespace_notes(view: ClusterView) -> list[str]:
    """One line per configured namespace that does not exist (or is being deleted)."""
    notes = [
        f"namespace {ns} {why}: nothing is written there until it exists"
        for ns, why in view.absent.items()
    ]
    if not view.cache.namespaces_known:
        notes.append("cannot list namespaces with these credentials: all taken to exist")
    return notes


def judged(view: ClusterView) -> Iterator[NameState]:
    """Every name the cache knows, judged as the reconciler judges it, one at a time."""
    absent = view.absent
    return (evaluate(view, name, absent) for name in view.names())


def collect(view: ClusterView) -> list[dict[str, Any]]:
    """A record per name to show: those with a managed VirtualService, something to do,
    or held back by a host conflict. Only the record is kept: a name's desired state goes
    once it is judged."""
    return [as_record(s) for s in judged(view) if not s.in_sync or s.managed_virtual_services()]


def as_record(state: NameState) -> dict[str, Any]:
    vss = state.managed_virtual_services()
    vs = state.virtual_service if state.managed else None
    return {
        "service": state.name,
        "virtualServices": [f"{v['metadata']['namespace']}/{v['metadata']['name']}" for v in vss],
        "developerRoutes": developer_route_names(vs),
        "placeholders": state.placeholders(),
        "inSync": state.in_sync,
        "actions": [f"{a.verb} {a.kind} {a.namespace}/{a.name}: {a.reason}" for a in state.actions],
        **({"error": state.error} if state.error else {}),
        **({"hostConflicts": state.host_conflicts} if state.host_conflicts else {}),
    }


def render_table(records: list[dict[str, Any]], style: Style) -> list[str]:
    if not records:
        return ["no managed VirtualServices"]
    rows = []
    for record in records:
        actions = len(record["actions"])
        if record["inSync"]:
            sync = "in sync"
        elif "error" in record:
            sync = "error"
        elif "hostConflicts" in record and not actions:
            sync = "held: host conflict (explain NAME)"
        else:
            sync = f"drift ({actions} action{'s' if actions != 1 else ''})"
        rows.append(
            [
                record["service"],
                ",".join(record["virtualServices"]) or "(missing)",
                ",".join(record["developerRoutes"]) or "-",
                ",".join(record["placeholders"]) or "-",
                sync,
            ]
        )
    headers = ["SERVICE", "VIRTUALSERVICE", "DEVELOPER ROUTES", "PLACEHOLDERS", "SYNC"]

    def colour(cell: str) -> str:
        return style.ok(cell) if cell == "in sync" else style.bad(cell)

    return table(headers, rows, last=colour)
