"""Shared generators of random clusters and a simulator applying a Plan to them.

Strategies are handed out by session fixtures and drawn with `st.data()`, so test
modules need not import each other (fragile under pytest's import modes).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import strategies as st

from virtualservice_operator.domain.config import DEFAULT_TEMPLATE, OperatorConfig
from virtualservice_operator.domain.constants import (
    EXCLUDE_LABEL,
    INSTANCE_LABEL,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    PLACEHOLDER_LABEL,
    SOURCE_ANNOTATION,
    service_host,
    virtual_service_name,
)
from virtualservice_operator.domain.instance import DEFAULT_INSTANCE
from virtualservice_operator.domain.model import ServiceInfo, ServicePort
from virtualservice_operator.domain.plan import Plan

NAMESPACES = ("prod", "staging", "dev-a", "dev-ab", "qa")
UNWATCHED = "old-dev"
# Another operator instance sharing the cluster.
OTHER = "staging-operator.config"

RICH_TEMPLATE = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: ${serviceName}-virtual-service
  labels: {team: platform}
  annotations: {note: "costs $$5"}
spec:
  hosts: [${serviceName}, "${serviceName}.${defaultNamespace}.svc.cluster.local"]
  gateways: [mesh]
  http:
  - name: canary
    match: [{headers: {x-canary: {exact: "yes"}}}]
    route: [{destination: {host: "${serviceName}-canary.${defaultNamespace}.svc.cluster.local"}}]
  - name: default
    retries: {attempts: 3}
    timeout: 5s
    route: [{destination: {host: "${serviceName}.${defaultNamespace}.svc.cluster.local"}}]
"""
TCP_TEMPLATE = """\
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: "${serviceName}-virtual-service"}
spec:
  hosts: [${serviceName}]
  tcp:
  - route: [{destination: {host: "${serviceName}.${defaultNamespace}.svc.cluster.local"}}]
"""
TEMPLATES = (DEFAULT_TEMPLATE, RICH_TEMPLATE, TCP_TEMPLATE)


@dataclass
class World:
    config: OperatorConfig
    service: str
    services: dict[str, ServiceInfo]
    virtual_services: list[dict[str, Any]] = field(default_factory=list)
    # Configured namespaces that do not exist (or are being deleted) -> why.
    absent: dict[str, str] = field(default_factory=dict)


class Gen:
    """Hypothesis strategies for configs, Services and whole worlds."""

    def config(self) -> st.SearchStrategy[OperatorConfig]:
        @st.composite
        def build(draw: st.DrawFn) -> OperatorConfig:
            d = draw(st.sampled_from(NAMESPACES))
            others = [ns for ns in NAMESPACES if ns != d]
            devs = draw(st.lists(st.sampled_from(others), unique=True))
            return OperatorConfig(
                default_namespace=d,
                developer_namespaces=tuple(devs),
                enable_placeholder_services=draw(st.booleans()),
                virtual_service_template=draw(st.sampled_from(TEMPLATES)),
                routing={"match": draw(st.sampled_from(["header", "baggage"]))},
                placeholder={"labels": draw(st.sampled_from([{}, {"team": "x"}]))},
                allow_host_conflicts=draw(st.booleans()),
            )

        return build()

    def ports(self) -> st.SearchStrategy[tuple[ServicePort, ...]]:
        port = st.builds(
            ServicePort,
            port=st.sampled_from([80, 443, 8080, 9090, 5432]),
            name=st.sampled_from([None, "http", "http-web", "grpc", "tcp-db", "tls", "redis"]),
            protocol=st.sampled_from(["TCP", "TCP", "UDP", "SCTP"]),
            app_protocol=st.sampled_from([None, None, "http", "tcp", "kubernetes.io/h2c"]),
        )
        return st.lists(port, max_size=4, unique_by=lambda p: p.port).map(tuple)

    def service(self, ns: str, name: str) -> st.SearchStrategy[ServiceInfo]:
        @st.composite
        def build(draw: st.DrawFn) -> ServiceInfo:
            kind = draw(st.sampled_from(["real", "excluded", "placeholder", "marked-real"]))
            labels: dict[str, str] = {}
            annotations: dict[str, str] = {}
            typ, ext = "ClusterIP", None
            if kind == "excluded":
                labels[EXCLUDE_LABEL] = "true"
            if kind in ("placeholder", "marked-real"):
                src = draw(st.sampled_from(NAMESPACES))
                labels[PLACEHOLDER_LABEL] = "true"
                annotations[SOURCE_ANNOTATION] = f"{src}/{name}"
                # Mostly this instance's; sometimes another's, or one made before instances.
                owner = draw(st.sampled_from([DEFAULT_INSTANCE, DEFAULT_INSTANCE, OTHER, None]))
                if owner is not None:
                    labels[INSTANCE_LABEL] = owner
                if kind == "placeholder":
                    typ, ext = "ExternalName", service_host(name, src)
            return ServiceInfo(
                namespace=ns,
                name=name,
                uid=f"uid-{ns}",
                resource_version=str(draw(st.integers(1, 9))),
                type=typ,
                external_name=ext,
                ports=draw(self.ports()),
                labels=labels,
                annotations=annotations,
            )

        return build()

    def world(self) -> st.SearchStrategy[World]:
        @st.composite
        def build(draw: st.DrawFn) -> World:
            config = draw(self.config())
            s = draw(st.sampled_from(["web", "api", "true", "kubernetes"]))
            services = {}
            for ns in (*NAMESPACES, UNWATCHED):
                if draw(st.booleans()):
                    services[ns] = draw(self.service(ns, s))
            d, name = config.default_namespace, virtual_service_name(s)
            vss = []
            state = draw(st.sampled_from(["absent", "managed", "unmanaged", "foreign"]))
            if state != "absent":
                vss.append(vs_dict(d, name, managed=state != "unmanaged", spec={"hosts": [s]}))
                if state == "foreign":
                    vss[-1]["metadata"]["labels"][INSTANCE_LABEL] = OTHER
            if draw(st.booleans()):
                other = draw(st.sampled_from([ns for ns in NAMESPACES if ns != d]))
                vss.append(vs_dict(other, name, managed=draw(st.booleans())))
                if draw(st.booleans()):
                    vss[-1]["metadata"]["labels"].pop(INSTANCE_LABEL, None)
            if draw(st.booleans()):
                host = draw(st.sampled_from([s, f"{s}.{d}.svc.cluster.local", f"{s}.{d}"]))
                spec: dict[str, Any] = {"hosts": [host]}
                spec.update(
                    draw(st.sampled_from([{}, {"gateways": ["mesh"]}, {"gateways": ["gw"]}]))
                )
                vss.append(vs_dict(d, "hand-made", managed=False, spec=spec))
            why = st.sampled_from(["does not exist", "is being deleted"])
            gone = draw(st.lists(st.sampled_from(config.watched_namespaces), unique=True))
            absent = {ns: draw(why) for ns in gone} if draw(st.integers(0, 3)) == 0 else {}
            return World(config, s, services, vss, absent)

        return build()


def vs_dict(
    ns: str, name: str, *, managed: bool, spec: dict[str, Any] | None = None, rv: str = "5"
) -> dict[str, Any]:
    # Managed: made by this (the default) instance.
    labels = (
        {MANAGED_BY_LABEL: MANAGED_BY_VALUE, INSTANCE_LABEL: DEFAULT_INSTANCE}
        if managed
        else {"owner": "me"}
    )
    return {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "VirtualService",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": labels,
            "resourceVersion": rv,
            "uid": f"vs-{ns}-{name}",
        },
        "spec": spec or {"hosts": ["stale"]},
        "status": {"observedGeneration": 1},
    }


def apply_plan(world: World, plan: Plan) -> World:
    """The world after a perfect API server executed `plan` (checking preconditions)."""
    services = dict(world.services)
    vss = {(v["metadata"]["namespace"], v["metadata"]["name"]): v for v in world.virtual_services}
    for a in plan.actions:
        key = (a.namespace, a.name)
        if a.kind == "VirtualService":
            if a.verb in ("update", "delete"):
                assert vss[key]["metadata"]["resourceVersion"] == a.resource_version
            if a.verb == "delete":
                del vss[key]
            else:
                assert a.body is not None
                assert (key in vss) == (a.verb == "update")
                body = copy.deepcopy(a.body)
                body["metadata"]["resourceVersion"] = str(int(a.resource_version or "0") + 1)
                vss[key] = body
            continue
        current = services.get(a.namespace)
        if a.verb in ("update", "delete", "unmark"):
            assert current is not None and current.resource_version == a.resource_version
        if a.verb == "delete":
            del services[a.namespace]
        elif a.verb == "unmark":
            assert current is not None
            labels = {k: v for k, v in current.labels.items() if k != PLACEHOLDER_LABEL}
            notes = {k: v for k, v in current.annotations.items() if k != SOURCE_ANNOTATION}
            services[a.namespace] = dataclasses.replace(
                current, labels=labels, annotations=notes, resource_version="99"
            )
        else:
            assert a.body is not None
            body = copy.deepcopy(a.body)
            body["metadata"]["resourceVersion"] = "100"
            services[a.namespace] = ServiceInfo.from_dict(body)
    return World(world.config, world.service, services, list(vss.values()), world.absent)


@pytest.fixture(scope="session")
def gen() -> Gen:
    return Gen()


@pytest.fixture(scope="session")
def templates() -> dict[str, str]:
    return {"default": DEFAULT_TEMPLATE, "rich": RICH_TEMPLATE, "tcp": TCP_TEMPLATE}


@pytest.fixture(scope="session")
def apply() -> Any:
    return apply_plan


@pytest.fixture(scope="session")
def make_vs() -> Any:
    return vs_dict
