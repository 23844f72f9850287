"""Instance isolation, pure parts: identity, and desired/plan never acting on another
instance's objects (the property over random worlds is in test_plan.py)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.unit.test_plan import INSTANCE, cfg, converged, ours, run, svc
from virtualservice_operator.domain.config import parse_config
from virtualservice_operator.domain.constants import own_placeholders_selector
from virtualservice_operator.domain.desired import compute_desired
from virtualservice_operator.domain.instance import (
    DEFAULT_INSTANCE,
    InstanceError,
    check_instance,
    default_instance,
)
from virtualservice_operator.domain.plan import plan_orphan_sweep

OTHER = "staging-system.virtualservice-operator-config"


def test_default_identity_is_the_configmap_location() -> None:
    assert DEFAULT_INSTANCE == "virtualservice-operator-system.virtualservice-operator-config"
    assert default_instance("team-x", "vso-config") == "team-x.vso-config"


@given(st.from_regex(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", fullmatch=True), st.integers(1, 253))
def test_default_identity_is_always_a_valid_distinct_label_value(ns: str, length: int) -> None:
    name = ("c" * length)[:length]
    value = default_instance(ns, name)
    assert check_instance(value) == value
    # Long ones keep a hash of the whole: two ConfigMaps never share an identity.
    assert value != default_instance(ns, name + "x")


@pytest.mark.parametrize("bad", ["", "-x", "x-", "a b", "x" * 64, "a/b"])
def test_bad_identity_is_refused_with_the_rule(bad: str) -> None:
    with pytest.raises(InstanceError, match="1 to 63 letters"):
        check_instance(bad)


def test_identity_is_not_a_config_key_and_configs_compare_by_it() -> None:
    loaded = parse_config("defaultNamespace: prod\ninstance: mine\n")
    assert loaded.config.instance == DEFAULT_INSTANCE
    assert "unknown key 'instance'" in loaded.warnings[0]
    other = loaded.config.with_instance(OTHER)
    assert other.instance == OTHER and other != loaded.config
    assert other.default_namespace == "prod"


def theirs(ns: str, **kw: Any) -> Any:
    """A placeholder another instance made (same default namespace name: worst case)."""
    mine = ours(ns, **kw)
    return dataclasses.replace(mine, labels={**mine.labels, INSTANCE: OTHER})


def test_another_instances_placeholder_is_neither_routed_nor_replaced() -> None:
    config = cfg(enable_placeholder_services=True)
    services = {"prod": svc("prod"), "qa": theirs("qa")}
    d = compute_desired(config, "web", services)
    assert "qa" not in d.placeholders and d.routed_namespaces == ()
    assert any("qa: placeholder of instance" in n for n in d.notes)
    p = run(config, list(services.values()), [converged(config, list(services.values()))])
    # dev gets ours; qa's stays theirs, and the clash is reported.
    assert [(a.verb, a.namespace) for a in p.actions] == [("create", "dev")]
    assert [w.reason for w in p.warnings] == ["PlaceholderClash"]
    assert OTHER in p.warnings[0].message


def test_unlabelled_placeholder_from_an_older_version_is_left_alone() -> None:
    config = cfg(enable_placeholder_services=False)
    old = ours("qa")
    old = dataclasses.replace(old, labels={k: v for k, v in old.labels.items() if k != INSTANCE})
    services = [svc("prod"), old]
    # Placeholders disabled: ours would be deleted; this one is not ours.
    assert run(config, services, [converged(config, services)]).actions == ()


def test_another_instances_virtual_service_is_left_alone(make_vs: Any) -> None:
    vs = make_vs("prod", "web-virtual-service", managed=True)
    vs["metadata"]["labels"][INSTANCE] = OTHER
    p = run(cfg(), [svc("prod")], [vs])
    assert p.actions == ()
    assert [w.reason for w in p.warnings] == ["ForeignVirtualService"]
    assert f"label it {INSTANCE}={DEFAULT_INSTANCE}" in p.warnings[0].message
    # Nor deleted when the name is gone from D, nor as an orphan elsewhere.
    assert run(cfg(), [], [vs]).actions == ()
    elsewhere = make_vs("old", "web-virtual-service", managed=True)
    elsewhere["metadata"]["labels"][INSTANCE] = OTHER
    assert run(cfg(), [svc("prod")], [converged(cfg(), [svc("prod")]), elsewhere]).actions == ()


def test_orphan_sweep_deletes_only_this_instances_placeholders() -> None:
    config = cfg()
    mine, other = ours("gone"), theirs("gone-too")
    assert [a.namespace for a in plan_orphan_sweep(config, [mine, other])] == ["gone"]
    assert own_placeholders_selector(config.instance).endswith(f"{INSTANCE}={DEFAULT_INSTANCE}")
