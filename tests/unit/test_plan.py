"""Planning: the actions that turn the actual state into the desired one."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from virtualservice_operator.domain import plan as planner
from virtualservice_operator.domain.config import OperatorConfig
from virtualservice_operator.domain.constants import SYSTEM_NAMESPACES
from virtualservice_operator.domain.desired import compute_desired
from virtualservice_operator.domain.instance import DEFAULT_INSTANCE
from virtualservice_operator.domain.model import ServiceInfo, ServicePort, VirtualServiceInfo
from virtualservice_operator.domain.plan import Action, Plan, PlanWarning, plan_orphan_sweep

PH_LABEL = "virtualservice-operator/placeholder-service"
SOURCE = "virtualservice-operator/source"
INSTANCE = "virtualservice-operator/instance"


def plan(desired: Any, *, virtual_services: list[dict[str, Any]], **kw: Any) -> Plan:
    """`plan.plan` on the records the cache would hold of these VirtualServices (the
    tests write them as the API server returns them)."""
    records = [VirtualServiceInfo.from_dict(v) for v in virtual_services]
    return planner.plan(desired, virtual_services=records, **kw)


def cfg(**kw: Any) -> OperatorConfig:
    base: dict[str, Any] = {"default_namespace": "prod", "developer_namespaces": ("qa", "dev")}
    return OperatorConfig(**{**base, **kw})


def svc(ns: str, **kw: Any) -> ServiceInfo:
    kw.setdefault("ports", (ServicePort(80, "http"),))
    return ServiceInfo(ns, "web", uid=f"uid-{ns}", resource_version="7", **kw)


def ours(ns: str, source_ns: str = "prod", **kw: Any) -> ServiceInfo:
    return svc(
        ns,
        type="ExternalName",
        external_name=f"web.{source_ns}.svc.cluster.local",
        labels={PH_LABEL: "true", INSTANCE: DEFAULT_INSTANCE},
        annotations={SOURCE: f"{source_ns}/web"},
        **kw,
    )


def run(config: OperatorConfig, services: list[ServiceInfo], vss: list[dict[str, Any]]) -> Plan:
    by_ns = {s.namespace: s for s in services}
    d = compute_desired(config, "web", by_ns)
    return plan(d, config=config, services=by_ns, virtual_services=vss)


def verbs(p: Plan) -> list[tuple[str, str, str]]:
    return [(a.verb, a.kind, a.namespace) for a in p.actions]


def converged(config: OperatorConfig, services: list[ServiceInfo]) -> dict[str, Any]:
    """The VirtualService as it is after the operator created it."""
    d = compute_desired(config, "web", {s.namespace: s for s in services})
    assert d.virtual_service is not None
    vs = copy.deepcopy(d.virtual_service)
    vs["metadata"].update(resourceVersion="5", uid="vs-uid")
    return vs


def test_missing_virtual_service_is_created() -> None:
    p = run(cfg(), [svc("prod")], [])
    [action] = p.actions
    assert (action.verb, action.kind, action.namespace, action.name) == (
        "create",
        "VirtualService",
        "prod",
        "web-virtual-service",
    )
    assert action.body == compute_desired(cfg(), "web", {"prod": svc("prod")}).virtual_service


def test_converged_state_plans_nothing() -> None:
    config = cfg(enable_placeholder_services=True)
    services = [svc("prod"), svc("qa"), ours("dev")]
    p = run(config, services, [converged(config, services)])
    assert p == Plan((), ())


def test_changed_spec_updates_keeping_foreign_metadata(make_vs: Any) -> None:
    actual = make_vs("prod", "web-virtual-service", managed=True)
    actual["metadata"]["labels"]["extra"] = "kept"
    actual["metadata"]["annotations"] = {"kept": "yes"}
    actual["metadata"]["ownerReferences"] = [{"kind": "Thing", "uid": "other"}]
    [action] = run(cfg(), [svc("prod")], [actual]).actions
    assert (action.verb, action.resource_version, action.uid) == (
        "update",
        "5",
        actual["metadata"]["uid"],
    )
    body = action.body
    assert body is not None
    assert body["spec"]["hosts"] == ["web"]
    assert body["apiVersion"] == "networking.istio.io/v1beta1"
    assert body["status"] == actual["status"]
    meta = body["metadata"]
    assert meta["resourceVersion"] == "5"
    assert meta["labels"] == {
        "managed-by": "virtualservice-operator",
        INSTANCE: DEFAULT_INSTANCE,
        "extra": "kept",
    }
    assert meta["annotations"] == {"kept": "yes"}
    assert [r["uid"] for r in meta["ownerReferences"]] == ["other", "uid-prod"]
    assert "spec differs" in action.reason


def test_missing_owner_reference_alone_triggers_update() -> None:
    vs = converged(cfg(), [svc("prod")])
    del vs["metadata"]["ownerReferences"]
    assert verbs(run(cfg(), [svc("prod")], [vs])) == [("update", "VirtualService", "prod")]


def test_unmanaged_virtual_service_is_left_alone_with_a_warning(make_vs: Any) -> None:
    vs = make_vs("prod", "web-virtual-service", managed=False)
    p = run(cfg(), [svc("prod")], [vs])
    assert p.actions == ()
    assert p.warnings == (
        PlanWarning(
            "UnmanagedVirtualService",
            "VirtualService prod/web-virtual-service exists without label "
            "managed-by=virtualservice-operator: left alone",
        ),
    )
    assert run(cfg(), [], [vs]) == Plan((), ())  # not deleted either


def test_virtual_service_deleted_when_no_longer_wanted(make_vs: Any) -> None:
    vs = make_vs("prod", "web-virtual-service", managed=True)
    excluded = svc("prod", labels={"virtualservice-operator/exclude": "true"})
    for services in ([], [excluded]):
        [action] = run(cfg(), services, [vs]).actions
        assert (action.verb, action.resource_version, action.uid) == (
            "delete",
            "5",
            "vs-prod-web-virtual-service",
        )


def test_terminating_virtual_service_is_waited_for(make_vs: Any) -> None:
    vs = make_vs("prod", "web-virtual-service", managed=True)
    vs["metadata"]["deletionTimestamp"] = "2025-01-01T00:00:00Z"
    assert run(cfg(), [svc("prod")], [vs]).actions == ()


def test_orphans_in_other_namespaces(make_vs: Any) -> None:
    orphan = make_vs("old", "web-virtual-service", managed=True)
    foreign = make_vs("team", "web-virtual-service", managed=False)
    system = make_vs("istio-system", "web-virtual-service", managed=True)
    p = run(cfg(), [svc("prod")], [converged(cfg(), [svc("prod")]), orphan, foreign, system])
    assert verbs(p) == [("delete", "VirtualService", "old")]


def test_own_second_virtual_service_for_the_host_is_warned_about(make_vs: Any) -> None:
    other = make_vs(
        "prod", "hand-made", managed=True, spec={"hosts": ["web.prod.svc.cluster.local"]}
    )
    p = run(cfg(), [svc("prod")], [converged(cfg(), [svc("prod")]), other])
    assert p.actions == ()
    assert p.warnings[0].reason == "VirtualServiceConflict"
    assert "prod/hand-made also routes web.prod.svc.cluster.local for the mesh" in str(
        p.warnings[0]
    )


def test_placeholder_lifecycle() -> None:
    config = cfg(enable_placeholder_services=True)
    vs = converged(config, [svc("prod")])
    p = run(config, [svc("prod")], [vs])
    assert verbs(p) == [("create", "Service", "qa"), ("create", "Service", "dev")]
    # Source gone: placeholders go, with preconditions.
    p = run(config, [ours("qa"), ours("dev")], [])
    assert [(a.verb, a.namespace, a.resource_version, a.uid) for a in p.actions] == [
        ("delete", "qa", "7", "uid-qa"),
        ("delete", "dev", "7", "uid-dev"),
    ]
    # Feature disabled: same.
    assert verbs(run(cfg(), [svc("prod"), ours("qa")], [vs])) == [("delete", "Service", "qa")]


def test_stale_placeholder_is_updated_merging_metadata() -> None:
    config = cfg(enable_placeholder_services=True, placeholder={"labels": {"team": "x"}})
    stale = ours("qa", source_ns="old-prod", ports=(ServicePort(81, "http"),))
    stale = dataclasses.replace(stale, labels={**stale.labels, "mine": "1"})
    services = [svc("prod"), stale, svc("dev")]
    [action] = run(config, services, [converged(config, services)]).actions
    assert (action.verb, action.namespace, action.resource_version) == ("update", "qa", "7")
    assert action.body is not None
    assert action.body["metadata"]["resourceVersion"] == "7"
    assert action.body["metadata"]["labels"] == {
        PH_LABEL: "true",
        INSTANCE: DEFAULT_INSTANCE,
        "mine": "1",
        "team": "x",
    }
    assert action.body["spec"]["externalName"] == "web.prod.svc.cluster.local"
    assert action.body["spec"]["ports"] == [{"port": 80, "protocol": "TCP", "name": "http"}]


def test_real_service_over_placeholder_is_unmarked_never_deleted() -> None:
    applied = svc(
        "qa",
        labels={PH_LABEL: "true", INSTANCE: DEFAULT_INSTANCE},
        annotations={SOURCE: "prod/web"},
    )
    config = cfg(enable_placeholder_services=True)
    services = [svc("prod"), applied, ours("dev")]
    [action] = run(config, services, [converged(config, services)]).actions
    assert (action.verb, action.kind, action.namespace) == ("unmark", "Service", "qa")
    assert action.body == {
        "metadata": {
            "resourceVersion": "7",
            "labels": {PH_LABEL: None, INSTANCE: None},
            "annotations": {SOURCE: None},
        }
    }


def test_services_in_default_or_system_namespaces_are_never_touched() -> None:
    config = cfg()
    services = {"prod": ours("prod", source_ns="x"), "kube-system": ours("kube-system")}
    d = compute_desired(config, "web", services)
    p = plan(d, config=config, services=services, virtual_services=[])
    assert verbs(p) == [("create", "VirtualService", "prod")]


def test_placeholder_in_dropped_namespace_is_cleaned_up_when_passed() -> None:
    services = {"prod": svc("prod"), "gone": ours("gone")}
    d = compute_desired(cfg(), "web", services)
    p = plan(d, config=cfg(), services=services, virtual_services=[converged(cfg(), [svc("prod")])])
    assert verbs(p) == [("delete", "Service", "gone")]


def test_kubernetes_service_never_planned(make_vs: Any) -> None:
    config = cfg()
    services = {"prod": ServiceInfo("prod", "kubernetes", uid="u")}
    d = compute_desired(config, "kubernetes", services)
    vs = make_vs("prod", "kubernetes-virtual-service", managed=True)
    assert plan(d, config=config, services=services, virtual_services=[vs]) == Plan((), ())


# --- properties ----------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_plan_properties(gen: Any, apply: Any, data: st.DataObject) -> None:
    world = data.draw(gen.world())
    d = compute_desired(world.config, world.service, world.services, world.absent)
    p = plan(
        d, config=world.config, services=world.services, virtual_services=world.virtual_services
    )
    # Nothing is written where a namespace does not exist.
    assert not [a for a in p.actions if a.namespace in world.absent]
    # A VirtualService not ours routing our host for the mesh holds ours back.
    if p.host_conflicts:
        assert not world.config.allow_host_conflicts
        held = [a for a in p.actions if a.kind == "VirtualService" and a.verb != "delete"]
        assert [a.namespace for a in held] == [], held
    vss = {(v["metadata"]["namespace"], v["metadata"]["name"]): v for v in world.virtual_services}
    for a in p.actions:
        assert a.namespace not in SYSTEM_NAMESPACES
        assert world.service != "kubernetes"
        if a.kind == "VirtualService" and a.verb != "create":
            labels = vss[(a.namespace, a.name)]["metadata"]["labels"]
            assert labels.get("managed-by") == "virtualservice-operator"
            assert labels.get(INSTANCE) == world.config.instance  # never another's
        if a.kind == "Service" and a.verb in ("update", "delete"):
            assert world.services[a.namespace].is_placeholder
        if a.kind == "Service" and a.verb != "create":
            assert world.services[a.namespace].instance == world.config.instance
        if a.kind == "Service":
            assert a.namespace != world.config.default_namespace
    # Applying the plan converges: planning again finds nothing to do.
    after = apply(world, p)
    d2 = compute_desired(after.config, after.service, after.services, after.absent)
    again = plan(
        d2, config=after.config, services=after.services, virtual_services=after.virtual_services
    )
    assert again.actions == ()


def test_default_namespace_change_moves_everything() -> None:
    old = cfg(enable_placeholder_services=True)
    new = cfg(default_namespace="staging", enable_placeholder_services=True)
    services = [svc("prod"), svc("staging"), ours("qa", source_ns="prod")]
    by_ns = {s.namespace: s for s in services}
    d = compute_desired(new, "web", by_ns)
    p = plan(d, config=new, services=by_ns, virtual_services=[converged(old, services)])
    assert verbs(p) == [
        ("create", "VirtualService", "staging"),
        ("delete", "VirtualService", "prod"),
        ("update", "Service", "qa"),
        ("create", "Service", "dev"),
    ]


# -- the orphan sweep and the gate ------------------------------------------------------


def test_orphan_sweep_deletes_only_our_placeholders_outside_the_watched_namespaces() -> None:
    config = cfg()  # watches prod, qa, dev
    left = ours("old-dev")
    actions = plan_orphan_sweep(
        config,
        [
            left,
            ours("qa"),  # watched: handled by name, not by the sweep
            svc("gone", labels={PH_LABEL: "true"}),  # marked but real: never deleted
            ours("kube-system"),  # a system namespace: never
        ],
    )
    assert actions == (
        Action(
            verb="delete",
            kind="Service",
            namespace="old-dev",
            name="web",
            resource_version="7",
            uid="uid-old-dev",
            reason="orphaned placeholder: its namespace is no longer in the config",
        ),
    )


def test_nothing_is_planned_for_an_ignored_service() -> None:
    # Even if something wanted it: the gate drops every action about `kubernetes`.
    want = compute_desired(cfg(enable_placeholder_services=True), "web", {"prod": svc("prod")})
    assert want.virtual_service is not None
    body = copy.deepcopy(want.virtual_service)
    body["metadata"]["name"] = "kubernetes-virtual-service"
    desired = dataclasses.replace(
        want,
        service="kubernetes",
        virtual_service=body,
        placeholders={ns: copy.deepcopy(p) for ns, p in want.placeholders.items()},
    )
    config = cfg(enable_placeholder_services=True)
    assert plan(desired, config=config, services={}, virtual_services=[]) == Plan((), ())
    assert plan_orphan_sweep(config, [dataclasses.replace(ours("old"), name="kubernetes")]) == ()
