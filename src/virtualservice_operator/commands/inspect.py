"""What explain and status share: read the cluster as the operator sees it, then judge.

1. `load_config`: the operator's ConfigMap, read by `config.config_from_configmap` as
   the operator reads it;
2. `load_view`: the operator's own cache (`cache.ClusterCache`), filled by one list per
   informer and no watch: the Services of the watched namespaces, managed
   VirtualServices anywhere, the others in the default namespace, indexed as the
   reconciler's are. For one name, only what that name needs, and its Services in
   every namespace (to say why some are not watched);
3. `evaluate`: for one Service name, desired state (`desired.compute_desired`) and the
   actions a reconcile would take (`plan.plan`), from `ClusterCache.snapshot`, the
   reconciler's own read. No action means the name is in sync. A name costs a constant
   number of index look-ups, so `status` is linear in the cluster's size.

Read-only: nothing here writes to the cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from virtualservice_operator.commands import CommandError
from virtualservice_operator.domain.config import ConfigError, OperatorConfig, config_from_configmap
from virtualservice_operator.domain.constants import (
    CONFIG_KEY,
    CONFIG_MAP_NAME,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    OPERATOR_NAMESPACE,
    virtual_service_name,
)
from virtualservice_operator.domain.desired import Desired, compute_desired
from virtualservice_operator.domain.instance import default_instance, owner
from virtualservice_operator.domain.model import ServiceInfo, VirtualServiceInfo
from virtualservice_operator.domain.plan import Action, Plan, plan
from virtualservice_operator.domain.template import TemplateError
from virtualservice_operator.kube.client import (
    CONFIGMAPS,
    JSON,
    SERVICES,
    ApiError,
    KubeClient,
    NotFound,
)
from virtualservice_operator.kube.transport import ThreadTransport
from virtualservice_operator.operator.cache import ClusterCache

T = TypeVar("T")


def add_cluster_flags(parser: argparse.ArgumentParser) -> None:
    """--kubeconfig, --context and the ConfigMap flags, spelled as `run` spells them."""
    parser.add_argument(
        "--kubeconfig",
        "-kubeconfig",
        default=None,
        metavar="FILE",
        help="kubeconfig file (default: $KUBECONFIG, else in-cluster, else ~/.kube/config)",
    )
    parser.add_argument(
        "--context",
        "-context",
        default=None,
        metavar="NAME",
        help=CONTEXT_HELP,
    )
    parser.add_argument(
        "--config-map-name",
        "-config-map-name",
        default=CONFIG_MAP_NAME,
        metavar="NAME",
        help=f"ConfigMap holding {CONFIG_KEY} (default: %(default)s)",
    )
    parser.add_argument(
        "--config-map-namespace",
        "-config-map-namespace",
        default=OPERATOR_NAMESPACE,
        metavar="NAMESPACE",
        help="namespace of that ConfigMap (default: %(default)s)",
    )
    parser.add_argument(
        "--instance",
        "-instance",
        default=None,
        metavar="NAME",
        help="the operator instance's identity, if `run` was given one "
        "(default: <config-map-namespace>.<config-map-name>)",
    )


CONTEXT_HELP = "kubeconfig context to use (default: its current-context), as kubectl's --context"


def with_client(
    kubeconfig: str | None,
    work: Callable[[KubeClient], Awaitable[T]],
    context: str | None = None,
) -> T:
    """Run `work` with a client on a fresh event loop; API failures become CommandError."""

    async def main() -> T:
        try:
            # The commands' own transport: aiohttp's import alone would be a fifth of
            # explain's time (kube/transport.py).
            client = KubeClient.from_kubeconfig(
                kubeconfig, transport=ThreadTransport, context=context
            )
        except Exception as e:  # KubeconfigError: missing file, no context, bad YAML...
            raise CommandError(f"cannot load kubeconfig: {type(e).__name__}: {e}") from e
        try:
            return await work(client)
        except ApiError as e:
            raise CommandError(f"the API server refused a read: {e}") from e
        finally:
            await client.close()

    # A command's heap only grows until it exits: at 5,000 names the cyclic collector's
    # walks over the cache took half of status's CPU and freed nothing.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return asyncio.run(main())
    finally:
        if collecting:
            gc.enable()


async def load_config(
    client: KubeClient, namespace: str, name: str, instance: str | None = None
) -> OperatorConfig:
    """The config as the operator instance reading this ConfigMap holds it (identity
    included: only that instance's objects are its own)."""
    where = f"ConfigMap {namespace}/{name}"
    try:
        obj: JSON | None = await client.get(CONFIGMAPS, namespace, name)
    except NotFound:
        obj = None
    try:
        config = config_from_configmap(obj, where).config
        return config.with_instance(instance or default_instance(namespace, name))
    except ConfigError as e:
        if obj is None:
            raise CommandError(f"{e.problems[0].format('')} Is the operator installed?") from e
        # Name config.yaml only where a line number in it is given.
        problems = "; ".join(p.format(CONFIG_KEY if p.line else "") for p in e.problems)
        raise CommandError(
            f"{where} holds an invalid config (the operator keeps its last good one): {problems}"
        ) from e


@dataclass(frozen=True)
class ClusterView:
    """The operator's cache filled by one list per informer (no watch), and for one name
    the Services of that name in namespaces the operator does not watch."""

    config: OperatorConfig
    cache: ClusterCache
    elsewhere: Mapping[str, ServiceInfo] = field(default_factory=dict)  # namespace -> it
    # The default namespace's Service of that name, when serviceSelector leaves it out.
    unselected: ServiceInfo | None = None

    @property
    def absent(self) -> dict[str, str]:
        """Configured namespaces that do not exist (or are being deleted) -> why."""
        return self.cache.absent_namespaces(self.config)

    def names(self) -> list[str]:
        """Every Service name the cache knows (the reconciler's keys), sorted."""
        return sorted(self.cache.all_names())


async def load_view(
    client: KubeClient, config: OperatorConfig, service: str | None = None
) -> ClusterView:
    """Read the cluster as the operator's cache does; with `service`, only that name (and
    its Services in every namespace, to say why some are not watched)."""
    # Nothing to queue: no reconcile.
    cache = ClusterCache(client, on_name=lambda name: None, instance=config.instance)
    if service is None:
        await cache.fill(config)
        return ClusterView(config, cache)
    watched = set(config.watched_namespaces)
    _, (items, _) = await asyncio.gather(
        cache.fill(config, service),
        client.list(SERVICES, None, field_selector=f"metadata.name={service}"),
    )
    found = [ServiceInfo.from_dict(obj) for obj in items]
    d = config.default_namespace
    in_cache = cache.services[d].get(f"{d}/{service}") if d in cache.services else None
    unselected = next((s for s in found if s.namespace == d), None) if in_cache is None else None
    elsewhere = {s.namespace: s for s in found if s.namespace not in watched}
    return ClusterView(config, cache, elsewhere, unselected)


@dataclass(frozen=True)
class NameState:
    """Everything about one Service name: actual, desired, and the difference."""

    name: str
    config: OperatorConfig
    services: dict[str, ServiceInfo]  # watched namespace -> the Service named `name`
    elsewhere: dict[str, ServiceInfo]  # other namespaces (not watched) -> that Service
    virtual_services: list[VirtualServiceInfo]  # those that concern the name (the reconciler's)
    desired: Desired | None
    plan: Plan
    error: str = ""  # why desired state cannot be computed
    absent: Mapping[str, str] = field(default_factory=dict)  # namespace -> why
    unselected: bool = False  # the default namespace's Service is not serviceSelector's

    @property
    def actions(self) -> tuple[Action, ...]:
        return self.plan.actions

    @property
    def host_conflicts(self) -> list[str]:
        """Why the VirtualService is held back by another one routing its host."""
        return [w.message for w in self.plan.host_conflicts]

    @property
    def in_sync(self) -> bool:
        """Nothing to write, and nothing held back from being written."""
        return not self.error and not self.actions and not self.plan.host_conflicts

    def _record(self) -> VirtualServiceInfo | None:
        want, d = virtual_service_name(self.name), self.config.default_namespace
        return next((v for v in self.virtual_services if v.name == want and v.namespace == d), None)

    @property
    def virtual_service(self) -> Mapping[str, Any] | None:
        """The VirtualService `name-virtual-service` in the default namespace, if any."""
        vs = self._record()
        return vs.body if vs is not None else None

    @property
    def managed(self) -> bool:
        """That VirtualService is this instance's to manage."""
        vs = self._record()
        return vs is not None and _ours(vs, self.config)

    def unmanaged_reason(self) -> str:
        """Why the operator leaves that VirtualService alone ("" if it does not)."""
        vs = self._record()
        if vs is None or _ours(vs, self.config):
            return ""
        if not vs.managed:
            return f"no label {MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"
        return f"belongs to {owner(vs.instance)}, not to this one ({self.config.instance})"

    def managed_virtual_services(self) -> list[Mapping[str, Any]]:
        """This instance's `name-virtual-service` VirtualServices: one, or more if orphans
        are left."""
        want = virtual_service_name(self.name)
        return [v.body for v in self.virtual_services if v.name == want and _ours(v, self.config)]

    def placeholders(self) -> list[str]:
        """Developer namespaces holding a placeholder of this name, in config order."""
        return [ns for ns in self.config.developer_namespaces if _placeholder(self.services, ns)]


def _ours(vs: VirtualServiceInfo, config: OperatorConfig) -> bool:
    return vs.managed and vs.instance == config.instance


def _placeholder(services: Mapping[str, ServiceInfo], ns: str) -> bool:
    svc = services.get(ns)
    return svc is not None and svc.is_placeholder


def evaluate(
    view: ClusterView, name: str, absent_namespaces: Mapping[str, str] | None = None
) -> NameState:
    """Desired state and the plan for `name`, from the cache's indexes, as the reconciler
    makes them: a constant number of look-ups per name, whatever the cluster's size.
    `absent_namespaces`: `view.absent`, worked out once by a caller judging many names."""
    if absent_namespaces is None:
        absent_namespaces = view.absent
    config, absent = view.config, absent_namespaces
    services, vss = view.cache.snapshot(config, name)
    elsewhere = {ns: svc for ns, svc in view.elsewhere.items() if svc.name == name}
    try:
        desired = compute_desired(config, name, services, absent)
    except TemplateError as e:
        empty = Plan((), ())
        return NameState(name, config, services, elsewhere, vss, None, empty, str(e), absent)
    the_plan = plan(desired, config=config, services=services, virtual_services=vss)
    unselected = view.unselected is not None and view.unselected.name == name
    return NameState(
        name, config, services, elsewhere, vss, desired, the_plan, "", absent, unselected
    )


def describe_route(route: Mapping[str, Any]) -> tuple[str, str, str]:
    """(name, match, destination) of one HTTP route, for humans."""
    name = str(route.get("name") or "(template)")
    matches = route.get("match") or []
    parts = []
    for match in matches if isinstance(matches, list) else []:
        for header, rule in ((match or {}).get("headers") or {}).items():
            value = next(iter(rule.values()), "") if isinstance(rule, dict) and rule else rule
            parts.append(f"{header}={value}")
        if isinstance(match, dict) and "port" in match:
            parts.append(f"port {match['port']}")
    targets = []
    for target in route.get("route") or []:
        dest = (target or {}).get("destination") or {}
        port = (dest.get("port") or {}).get("number")
        targets.append(f"{dest.get('host', '?')}{f':{port}' if port else ''}")
    return name, " ".join(parts) or "*", ", ".join(targets) or "-"
