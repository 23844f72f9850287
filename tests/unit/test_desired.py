"""The desired state for one Service name: rules and properties."""

from __future__ import annotations

import dataclasses
import json
import random
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from virtualservice_operator.domain.config import OperatorConfig
from virtualservice_operator.domain.desired import (
    Desired,
    baggage_regex,
    compute_desired,
    is_http_port,
)
from virtualservice_operator.domain.instance import DEFAULT_INSTANCE
from virtualservice_operator.domain.model import ServiceInfo, ServicePort
from virtualservice_operator.domain.ports import own_hosts

INSTANCE = "virtualservice-operator/instance"

HTTP = ServicePort(80, "http")


def cfg(**kw: Any) -> OperatorConfig:
    base: dict[str, Any] = {"default_namespace": "prod", "developer_namespaces": ("qa", "dev")}
    return OperatorConfig(**{**base, **kw})


def svc(ns: str, *ports: ServicePort, name: str = "web", **kw: Any) -> ServiceInfo:
    return ServiceInfo(ns, name, uid=f"uid-{ns}", ports=ports or (HTTP,), **kw)


def placeholder(ns: str, source_ns: str = "prod") -> ServiceInfo:
    return ServiceInfo(
        ns,
        "web",
        type="ExternalName",
        external_name=f"web.{source_ns}.svc.cluster.local",
        labels={"virtualservice-operator/placeholder-service": "true", INSTANCE: DEFAULT_INSTANCE},
        annotations={"virtualservice-operator/source": f"{source_ns}/web"},
    )


def desired(config: OperatorConfig, *services: ServiceInfo) -> Desired:
    return compute_desired(config, "web", {s.namespace: s for s in services})


def http_routes(d: Desired) -> list[dict[str, Any]]:
    assert d.virtual_service is not None
    routes: list[dict[str, Any]] = d.virtual_service["spec"]["http"]
    return routes


def test_service_in_default_only_gives_the_rendered_template() -> None:
    d = desired(cfg(), svc("prod"))
    vs = d.virtual_service
    assert vs is not None
    assert vs["metadata"]["name"] == "web-virtual-service"
    assert vs["metadata"]["namespace"] == "prod"
    assert vs["metadata"]["labels"] == {
        "managed-by": "virtualservice-operator",
        INSTANCE: DEFAULT_INSTANCE,
    }
    assert vs["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "name": "web",
            "uid": "uid-prod",
            "controller": True,
            "blockOwnerDeletion": False,
        }
    ]
    assert http_routes(d) == [{"route": [{"destination": {"host": "web.prod.svc.cluster.local"}}]}]
    assert d.placeholders == {}
    assert d.routed_namespaces == ()


def test_no_owner_reference_without_uid() -> None:
    d = desired(cfg(), ServiceInfo("prod", "web"))
    assert d.virtual_service is not None
    assert "ownerReferences" not in d.virtual_service["metadata"]


def test_template_labels_kept_and_managed_by_forced(templates: dict[str, str]) -> None:
    template = templates["default"].replace("managed-by: virtualservice-operator", "team: x")
    d = desired(cfg(virtual_service_template=template), svc("prod"))
    assert d.virtual_service is not None
    assert d.virtual_service["metadata"]["labels"] == {
        "team": "x",
        "managed-by": "virtualservice-operator",
        INSTANCE: DEFAULT_INSTANCE,
    }


@pytest.mark.parametrize(
    ("services", "note"),
    [
        ((svc("qa"),), "dev-only: no Service web in default namespace prod"),
        (
            (svc("prod", labels={"virtualservice-operator/exclude": "true"}), svc("qa")),
            "excluded by label virtualservice-operator/exclude=true on prod/web",
        ),
    ],
)
def test_nothing_wanted(services: tuple[ServiceInfo, ...], note: str) -> None:
    d = desired(cfg(enable_placeholder_services=True), *services)
    assert (d.virtual_service, dict(d.placeholders), d.notes) == (None, {}, (note,))


def test_kubernetes_service_is_ignored() -> None:
    d = compute_desired(cfg(), "kubernetes", {"prod": svc("prod", name="kubernetes")})
    assert d.virtual_service is None
    assert "API server" in d.notes[0]


def test_developer_routes_in_config_order_before_template_routes() -> None:
    d = desired(cfg(developer_namespaces=("qa", "dev", "x")), svc("dev"), svc("prod"), svc("qa"))
    routes = http_routes(d)
    assert d.routed_namespaces == ("qa", "dev")
    assert routes[:2] == [
        {
            "name": "dev-qa",
            "match": [{"headers": {"x-developer": {"exact": "qa"}}}],
            "route": [{"destination": {"host": "web.qa.svc.cluster.local"}}],
        },
        {
            "name": "dev-dev",
            "match": [{"headers": {"x-developer": {"exact": "dev"}}}],
            "route": [{"destination": {"host": "web.dev.svc.cluster.local"}}],
        },
    ]
    assert routes[2] == {"route": [{"destination": {"host": "web.prod.svc.cluster.local"}}]}


def test_custom_header() -> None:
    d = desired(cfg(routing={"header": "X-Team"}), svc("prod"), svc("qa"))
    assert http_routes(d)[0]["match"] == [{"headers": {"x-team": {"exact": "qa"}}}]


def test_placeholders_and_excluded_get_no_routes() -> None:
    excluded = svc("dev", labels={"virtualservice-operator/exclude": "true"})
    d = desired(cfg(), svc("prod"), placeholder("qa"), excluded)
    assert d.routed_namespaces == ()
    assert len(http_routes(d)) == 1
    assert "dev: excluded by label virtualservice-operator/exclude=true" in d.notes


def test_multi_port_service_gets_one_route_per_http_port() -> None:
    ports = (
        ServicePort(9090, "http-metrics"),
        ServicePort(8080, "grpc-api"),
        ServicePort(5432, "tcp-db"),
        ServicePort(53, "dns", protocol="UDP"),
        ServicePort(6379, "cache", app_protocol="redis"),
    )
    d = desired(cfg(), svc("prod"), svc("qa", *ports))
    routes = http_routes(d)
    assert [r["name"] for r in routes[:2]] == ["dev-qa-8080", "dev-qa-9090"]
    assert routes[0]["match"] == [{"headers": {"x-developer": {"exact": "qa"}}, "port": 8080}]
    assert routes[0]["route"] == [
        {"destination": {"host": "web.qa.svc.cluster.local", "port": {"number": 8080}}}
    ]
    assert "name" not in routes[2]


def test_single_http_port_among_several_still_names_its_port() -> None:
    # IST0112 counts every port of the destination Service, TCP ones included.
    d = desired(cfg(), svc("prod"), svc("qa", ServicePort(80, "http"), ServicePort(5432, "tcp")))
    assert http_routes(d)[0]["route"][0]["destination"]["port"] == {"number": 80}


TWO_PORTS = (ServicePort(8080, "http"), ServicePort(9090, "grpc-api"), ServicePort(5432, "tcp-db"))


def test_template_route_is_written_per_http_port_for_a_multi_port_default_service() -> None:
    """IST0112: the template's port-less catch-all becomes one route per HTTP port."""
    d = desired(cfg(), svc("prod", *TWO_PORTS), svc("qa", *TWO_PORTS))
    routes = http_routes(d)
    assert [r.get("name") for r in routes] == ["dev-qa-8080", "dev-qa-9090", None, None]
    assert routes[2:] == [
        {
            "match": [{"port": port}],
            "route": [
                {"destination": {"host": "web.prod.svc.cluster.local", "port": {"number": port}}}
            ],
        }
        for port in (8080, 9090)
    ]


CUSTOM_ROUTES = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: ${serviceName}-virtual-service
spec:
  hosts: [${serviceName}]
  http:
  - name: api
    match: [{uri: {prefix: /api}}, {headers: {x-canary: {exact: "1"}}}]
    route:
    - destination: {host: ${serviceName}.${defaultNamespace}, subset: v2}
      weight: 10
    - destination: {host: ${serviceName}, subset: v1}
      weight: 90
    mirror: {host: ${serviceName}.${defaultNamespace}.svc}
    retries: {attempts: 3}
  - match: [{port: 9090, uri: {prefix: /x}}]
    route:
    - destination: {host: ${serviceName}.${defaultNamespace}.svc.cluster.local}
  - route:
    - destination: {host: elsewhere.other.svc.cluster.local}
"""


def test_template_routes_made_port_explicit_keep_everything_else() -> None:
    d = desired(cfg(virtual_service_template=CUSTOM_ROUTES), svc("prod", *TWO_PORTS))
    api_8080, api_9090, fixed, other = http_routes(d)
    assert api_8080["name"] == "api-8080" and api_9090["name"] == "api-9090"
    assert api_8080["match"] == [
        {"uri": {"prefix": "/api"}, "port": 8080},
        {"headers": {"x-canary": {"exact": "1"}}, "port": 8080},
    ]
    assert [w["destination"] for w in api_9090["route"]] == [
        {"host": "web.prod", "subset": "v2", "port": {"number": 9090}},
        {"host": "web", "subset": "v1", "port": {"number": 9090}},
    ]
    assert [w["weight"] for w in api_9090["route"]] == [10, 90]
    assert api_9090["mirror"] == {"host": "web.prod.svc", "port": {"number": 9090}}
    assert api_9090["retries"] == {"attempts": 3}
    # A route already matching one port names it on its destination; other hosts as written.
    assert fixed["match"] == [{"port": 9090, "uri": {"prefix": "/x"}}]
    assert fixed["route"][0]["destination"]["port"] == {"number": 9090}
    assert other == {"route": [{"destination": {"host": "elsewhere.other.svc.cluster.local"}}]}


@pytest.mark.parametrize(
    "ports",
    [
        (ServicePort(80, "http"),),
        (ServicePort(5432, "tcp-db"), ServicePort(3306, "mysql")),
    ],
    ids=["one port", "no HTTP port"],
)
def test_template_routes_as_written_otherwise(ports: tuple[ServicePort, ...]) -> None:
    d = desired(cfg(), svc("prod", *ports))
    assert http_routes(d) == [{"route": [{"destination": {"host": "web.prod.svc.cluster.local"}}]}]


@pytest.mark.parametrize(
    ("ports", "names"),
    [
        ((ServicePort(8080),), ["dev-qa"]),
        ((ServicePort(5432, "tcp-db"),), []),
        ((ServicePort(5432, "mysql"), ServicePort(443, "https")), []),
    ],
)
def test_route_count(ports: tuple[ServicePort, ...], names: list[str]) -> None:
    d = desired(cfg(), svc("prod"), svc("qa", *ports))
    assert [r.get("name") for r in http_routes(d)[:-1]] == names


@pytest.mark.parametrize(
    ("port", "http"),
    [
        (ServicePort(80), True),
        (ServicePort(80, "http2-x"), True),
        (ServicePort(80, "grpc"), True),
        (ServicePort(80, "web", app_protocol="kubernetes.io/h2c"), True),
        (ServicePort(80, "tcp-x", app_protocol="http"), True),  # appProtocol wins, as in Istio
        (ServicePort(80, "TLS"), False),
        (ServicePort(80, "mongo-x"), False),
        (ServicePort(80, "web", app_protocol="mysql"), False),
        (ServicePort(80, "http", protocol="SCTP"), False),
        (ServicePort(80, "redis"), False),
    ],
)
def test_is_http_port(port: ServicePort, http: bool) -> None:
    assert is_http_port(port) is http


BAGGAGE = [
    ("x-developer=qa", True),
    ("x-developer=qa;ttl=30", True),
    ("userId=alice, x-developer = qa ;p1;p2=v, other=1", True),
    ("a=1,x-developer=qa", True),
    ("x-developer=qa-2", False),
    ("x-developer=q", False),
    ("x-developer=qaz,b=1", False),
    ("my-x-developer=qa", False),
    ("x-developer-2=qa", False),
    ("a=x-developer=qa", False),
    ("other=qa", False),
    ("", False),
]


@pytest.mark.parametrize(("header", "matches"), BAGGAGE)
def test_baggage_regex(header: str, matches: bool) -> None:
    assert bool(re.fullmatch(baggage_regex("x-developer", "qa"), header)) is matches


def test_baggage_mode_route() -> None:
    d = desired(cfg(routing={"match": "baggage"}), svc("prod"), svc("qa"))
    regex = http_routes(d)[0]["match"][0]["headers"]["baggage"]["regex"]
    assert re.fullmatch(regex, "x-developer=qa")
    assert not re.fullmatch(regex, "x-developer=qa-other")


def test_placeholders() -> None:
    config = cfg(
        developer_namespaces=("qa", "dev", "real"),
        enable_placeholder_services=True,
        placeholder={"labels": {"team": "x"}, "annotations": {"a/b": "c"}},
    )
    source = svc(
        "prod", ServicePort(80, "http", app_protocol="http"), ServicePort(53, "dns", "UDP")
    )
    d = desired(config, source, placeholder("dev", "old"), svc("real"))
    assert list(d.placeholders) == ["qa", "dev"]
    assert d.placeholders["qa"] == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "web",
            "namespace": "qa",
            "labels": {
                "virtualservice-operator/placeholder-service": "true",
                INSTANCE: DEFAULT_INSTANCE,
                "team": "x",
            },
            "annotations": {"virtualservice-operator/source": "prod/web", "a/b": "c"},
        },
        "spec": {
            "type": "ExternalName",
            "externalName": "web.prod.svc.cluster.local",
            "ports": [
                {"port": 80, "protocol": "TCP", "name": "http", "appProtocol": "http"},
                {"port": 53, "protocol": "UDP", "name": "dns"},
            ],
        },
    }
    assert d.routed_namespaces == ("real",)
    assert not desired(cfg(), source).placeholders  # disabled by default


def test_real_service_over_placeholder_counts_as_real() -> None:
    # `kubectl apply` of a real Service keeps our label: still real, gets its route.
    applied = svc(
        "qa",
        labels={"virtualservice-operator/placeholder-service": "true"},
        annotations={"virtualservice-operator/source": "prod/web"},
    )
    d = desired(cfg(enable_placeholder_services=True), svc("prod"), applied)
    assert d.routed_namespaces == ("qa",)
    assert "qa" not in d.placeholders


def test_unwatched_namespaces_and_other_names_are_ignored() -> None:
    services = {"prod": svc("prod"), "elsewhere": svc("elsewhere"), "qa": svc("qa", name="api")}
    d = compute_desired(cfg(), "web", services)
    assert d.routed_namespaces == ()


# --- properties ----------------------------------------------------------------------


def check_istio_rules(d: Desired, services: dict[str, ServiceInfo]) -> None:
    """What `istioctl analyze` would say about what we write."""
    if d.virtual_service is None:
        return
    routes = http_routes(d)
    # IST0130: only the last route may lack a match.
    assert all(r.get("match") for r in routes[:-1])
    # IST0131: no two routes with an identical match.
    matches = [json.dumps(r.get("match"), sort_keys=True) for r in routes if r.get("match")]
    assert len(matches) == len(set(matches))
    names = [str(r.get("name", "")) for r in routes]
    ours = [i for i, n in enumerate(names) if n.startswith("dev-")]
    assert ours == list(range(len(ours)))  # developer routes come first
    for route in routes[: len(ours)]:
        destination = route["route"][0]["destination"]
        ns = destination["host"].split(".")[1]
        assert ns in d.routed_namespaces
        dev = services[ns]
        assert not dev.is_placeholder and not dev.excluded
        if len(dev.ports) > 1:  # IST0112
            assert destination["port"]["number"] == route["match"][0]["port"]
    source = services[d.virtual_service["metadata"]["namespace"]]
    if len(source.ports) > 1 and any(is_http_port(p) for p in source.ports):
        own = own_hosts(d.service, source.namespace)
        for route in routes[len(ours) :]:  # IST0112 on the template's own routes
            for weighted in route.get("route") or []:
                if weighted["destination"]["host"] in own:
                    assert weighted["destination"]["port"]["number"] == route["match"][0]["port"]


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_properties(gen: Any, data: st.DataObject) -> None:
    world = data.draw(gen.world())
    config, s, services = world.config, world.service, world.services
    d = compute_desired(config, s, services)
    # Deterministic and independent of mapping order.
    items = list(services.items())
    random.Random(data.draw(st.integers())).shuffle(items)
    assert compute_desired(config, s, dict(items)) == d
    check_istio_rules(d, services)
    # Never a placeholder where a real Service exists, never one in D.
    for ns in d.placeholders:
        assert ns in config.developer_namespaces
        assert ns not in services or services[ns].is_placeholder
    if d.virtual_service is None:
        assert not d.placeholders and not d.routed_namespaces


# --- the cached record (model.py) ------------------------------------------------------


def test_service_info_from_api_json() -> None:
    obj = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "web",
            "namespace": "qa",
            "uid": "u1",
            "resourceVersion": "42",
            "labels": {"app": "web", "virtualservice-operator/exclude": "false"},
            "annotations": {
                "virtualservice-operator/x": "kept",
                "kubectl.kubernetes.io/last-applied-configuration": "{...}",
                "other": "dropped",
            },
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": "10.0.0.1",
            "ports": [
                {"name": "http", "port": 80, "targetPort": "web", "protocol": "TCP"},
                {"port": 53, "protocol": "UDP", "appProtocol": "dns", "targetPort": 5353},
            ],
        },
    }
    info = ServiceInfo.from_dict(obj)
    assert info == ServiceInfo(
        "qa",
        "web",
        uid="u1",
        resource_version="42",
        ports=(
            ServicePort(80, "http", "TCP", None),
            ServicePort(53, None, "UDP", "dns"),
        ),
        labels={"virtualservice-operator/exclude": "false"},  # a real Service: only our keys
        annotations={"virtualservice-operator/x": "kept"},
    )
    assert hash(info) == hash(ServiceInfo.from_dict(obj))
    assert not info.is_placeholder and not info.carries_placeholder_marking and not info.excluded
    assert ServiceInfo.from_dict({}) == ServiceInfo("", "")


def test_marked_services_keep_all_annotations_but_last_applied() -> None:
    meta = {
        "name": "web",
        "namespace": "qa",
        "labels": {"virtualservice-operator/placeholder-service": "true"},
        "annotations": {"a/b": "c", "kubectl.kubernetes.io/last-applied-configuration": "{}"},
    }
    assert dict(ServiceInfo.from_dict({"metadata": meta}).annotations) == {"a/b": "c"}


@pytest.mark.parametrize(
    ("change", "is_placeholder"),
    [
        ({}, True),
        ({"type": "ClusterIP"}, False),
        ({"external_name": "web.other.svc.cluster.local"}, False),
        ({"labels": {"virtualservice-operator/placeholder-service": "false"}}, False),
        ({"annotations": {}}, False),
        ({"annotations": {"virtualservice-operator/source": "prod"}}, False),
    ],
)
def test_is_placeholder(change: dict[str, Any], is_placeholder: bool) -> None:
    info = dataclasses.replace(placeholder("qa"), **change)
    assert info.is_placeholder is is_placeholder


# -- namespaces that do not exist -------------------------------------------------------


def test_nothing_is_made_in_a_namespace_that_does_not_exist() -> None:
    config = OperatorConfig(
        default_namespace="prod",
        developer_namespaces=("staging", "qa"),
        enable_placeholder_services=True,
    )
    services = {"prod": ServiceInfo("prod", "web", uid="u")}
    d = compute_desired(config, "web", services, {"staging": "does not exist"})
    assert list(d.placeholders) == ["qa"]
    assert "staging: namespace staging does not exist: nothing is made there" in d.notes
    assert dict(d.absent_namespaces) == {"staging": "does not exist"}
    gone = compute_desired(config, "web", services, {"prod": "is being deleted"})
    assert gone.virtual_service is None and not gone.placeholders
    assert gone.notes == ("default namespace prod is being deleted",)
    # Only configured namespaces count.
    assert not compute_desired(config, "web", services, {"other": "x"}).absent_namespaces
