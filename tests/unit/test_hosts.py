"""Host conflicts for the mesh (Istio's IST0109): the rules, and the plan they hold back."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from virtualservice_operator.domain import plan as planner
from virtualservice_operator.domain.config import OperatorConfig
from virtualservice_operator.domain.constants import INSTANCE_LABEL
from virtualservice_operator.domain.desired import compute_desired
from virtualservice_operator.domain.hosts import fqdn, mesh_bound, shared_mesh_hosts
from virtualservice_operator.domain.model import ServiceInfo, ServicePort, VirtualServiceInfo
from virtualservice_operator.domain.plan import Plan


def vs(ns: str, *hosts: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "x", "namespace": ns}, "spec": {"hosts": list(hosts), **spec}}


@pytest.mark.parametrize(
    ("theirs", "shared"),
    [
        (vs("prod", "web"), ("web.prod.svc.cluster.local",)),
        (vs("prod", "web.prod.svc.cluster.local"), ("web.prod.svc.cluster.local",)),
        (vs("team", "web.prod.svc.cluster.local"), ("web.prod.svc.cluster.local",)),
        (vs("team", "web"), ()),  # web.team.svc.cluster.local
        (vs("prod", "web.prod"), ()),  # a dot: taken as written, as Istio does
        (vs("prod", "web", gateways=["ingress"]), ()),  # not bound to the mesh
        (vs("prod", "web", gateways=["ingress", "mesh"]), ("web.prod.svc.cluster.local",)),
        (vs("prod", "web", exportTo=["."]), ("web.prod.svc.cluster.local",)),
        (vs("prod", "web", exportTo=["*"]), ("web.prod.svc.cluster.local",)),
    ],
)
def test_shared_mesh_hosts_as_istio_resolves_them(theirs: dict[str, Any], shared: tuple) -> None:
    assert shared_mesh_hosts(vs("prod", "web"), theirs) == shared


def test_export_scopes_meet_only_where_both_are_seen() -> None:
    ours = vs("prod", "web", exportTo=["."])
    assert shared_mesh_hosts(ours, vs("prod", "web", exportTo=["team"])) == ()
    assert shared_mesh_hosts(ours, vs("prod", "web", exportTo=["prod"])) != ()
    assert shared_mesh_hosts(ours, vs("prod", "web")) != ()  # everywhere meets anything


def test_fqdn_and_mesh_binding() -> None:
    assert fqdn("web", "prod") == "web.prod.svc.cluster.local"
    assert fqdn("*.example.com", "prod") == "*.example.com"
    assert fqdn("web.example.com", "prod") == "web.example.com"
    assert mesh_bound(vs("p", "a")) and mesh_bound(vs("p", "a", gateways=[]))
    assert not mesh_bound(vs("p", "a", gateways=["istio-system/gw"]))


_HOSTS = st.sampled_from(["web", "api", "web.prod", "web.prod.svc.cluster.local", "*.x.io"])
_SPECS = st.fixed_dictionaries(
    {"hosts": st.lists(_HOSTS, max_size=3)},
    optional={
        "gateways": st.lists(st.sampled_from(["mesh", "gw"]), max_size=2),
        "exportTo": st.lists(st.sampled_from([".", "*", "prod", "team"]), max_size=2),
    },
)


@given(
    a=st.tuples(st.sampled_from(["prod", "team"]), _SPECS),
    b=st.tuples(st.sampled_from(["prod", "team"]), _SPECS),
)
def test_conflict_is_symmetric_and_needs_a_shared_resolved_host(a: Any, b: Any) -> None:
    one = {"metadata": {"namespace": a[0]}, "spec": a[1]}
    two = {"metadata": {"namespace": b[0]}, "spec": b[1]}
    shared = shared_mesh_hosts(one, two)
    assert shared == shared_mesh_hosts(two, one)
    for host in shared:
        assert host in {fqdn(h, a[0]) for h in a[1]["hosts"]}
        assert host in {fqdn(h, b[0]) for h in b[1]["hosts"]}


# -- in the plan --------------------------------------------------------------------------


def _config(**kw: Any) -> OperatorConfig:
    return OperatorConfig(default_namespace="prod", developer_namespaces=("qa",), **kw)


def _plan(config: OperatorConfig, vss: list[dict[str, Any]]) -> Plan:
    services = {"prod": ServiceInfo("prod", "web", uid="u", ports=(ServicePort(80, "http"),))}
    desired = compute_desired(config, "web", services)
    records = [VirtualServiceInfo.from_dict(v) for v in vss]
    return planner.plan(desired, config=config, services=services, virtual_services=records)


def _theirs(instance: str | None = None, host: str = "web") -> dict[str, Any]:
    labels = {"managed-by": "virtualservice-operator", INSTANCE_LABEL: instance} if instance else {}
    return {
        "metadata": {"name": "hand-made", "namespace": "prod", "labels": labels},
        "spec": {"hosts": [host], "http": [{"route": [{"destination": {"host": "web"}}]}]},
    }


@pytest.mark.parametrize("instance", [None, "other.instance"])
def test_a_virtual_service_not_ours_for_the_host_holds_ours_back(instance: str | None) -> None:
    p = _plan(_config(), [_theirs(instance)])
    assert p.actions == ()
    [warning] = p.host_conflicts
    who = f"instance {instance}" if instance else "no label managed-by"
    assert warning.message.startswith(
        f"VirtualService prod/hand-made ({who}) already routes web.prod.svc.cluster.local "
        "for the mesh: prod/web-virtual-service is not created while it does"
    )
    assert "allowHostConflicts: true" in warning.message


def test_ours_is_left_as_it_is_not_updated_and_resolves_when_the_other_goes() -> None:
    config = _config()
    alone = _plan(config, [])
    [create] = alone.actions
    assert create.body is not None
    stale = copy.deepcopy(create.body)
    stale["metadata"].update(resourceVersion="3", uid="v")
    stale["spec"]["http"] = []  # drift that would be corrected without the other
    p = _plan(config, [stale, _theirs()])
    assert p.actions == () and p.host_conflicts
    assert "is left as it is while it does" in p.host_conflicts[0].message
    assert [a.verb for a in _plan(config, [stale]).actions] == ["update"]


def test_deleting_ours_is_not_held_back() -> None:
    config = _config()
    [create] = _plan(config, []).actions
    assert create.body is not None
    existing = {**create.body, "metadata": {**create.body["metadata"], "uid": "v"}}
    records = [VirtualServiceInfo.from_dict(v) for v in (existing, _theirs())]
    desired = compute_desired(config, "web", {})
    p = planner.plan(desired, config=config, services={}, virtual_services=records)
    assert [a.verb for a in p.actions] == ["delete"]


def test_allow_host_conflicts_keeps_the_old_behaviour() -> None:
    p = _plan(_config(allow_host_conflicts=True), [_theirs()])
    assert [a.verb for a in p.actions] == ["create"]
    assert [w.reason for w in p.warnings] == ["VirtualServiceConflict"]


def test_no_conflict_for_another_host_or_a_gateway_only_virtual_service() -> None:
    assert [a.verb for a in _plan(_config(), [_theirs(host="web.prod")]).actions] == ["create"]
    gateway = _theirs()
    gateway["spec"]["gateways"] = ["istio-system/ingress"]
    assert [a.verb for a in _plan(_config(), [gateway]).actions] == ["create"]
