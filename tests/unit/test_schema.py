"""Offline validation against Istio's VirtualService schema (schema.py)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from virtualservice_operator.domain.config import DEFAULT_TEMPLATE, ConfigError, parse_config
from virtualservice_operator.domain.constants import ISTIO_VERSIONS
from virtualservice_operator.domain.desired import compute_desired
from virtualservice_operator.domain.schema import istio_schema, validate_virtual_service
from virtualservice_operator.domain.template import render_virtual_service
from virtualservice_operator.operator.kinds import VIRTUAL_SERVICES


def good() -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "VirtualService",
        "metadata": {"name": "cart-virtual-service", "namespace": "prod", "labels": {"a": "b"}},
        "spec": {
            "hosts": ["cart"],
            "gateways": ["mesh"],
            "http": [
                {
                    "name": "dev-qa",
                    "match": [{"headers": {"x-developer": {"exact": "qa"}}, "port": 80}],
                    "route": [{"destination": {"host": "cart.qa.svc.cluster.local"}}],
                    "timeout": "1.5s",
                    "retries": {"attempts": 3, "perTryTimeout": "2s"},
                },
                {
                    "route": [
                        {
                            "destination": {
                                "host": "cart.prod.svc.cluster.local",
                                "port": {"number": 80},
                            },
                            "weight": 100,
                        }
                    ]
                },
            ],
        },
    }


def messages(manifest: dict[str, Any]) -> list[str]:
    return [f"{v.path}: {v.message}" for v in validate_virtual_service(manifest)]


def test_packaged_schema_serves_every_version_the_operator_writes_and_watches() -> None:
    schema = istio_schema()
    assert schema.source.startswith("istio.io/api v")
    assert set(ISTIO_VERSIONS) <= set(schema.served)
    assert VIRTUAL_SERVICES.version in schema.served


def test_valid_manifest_and_guide_template_have_no_violation() -> None:
    assert messages(good()) == []
    rendered = render_virtual_service(DEFAULT_TEMPLATE, service="cart", default_namespace="prod")
    assert messages(rendered) == []


def test_the_two_mistakes_of_the_issue() -> None:
    vs = good()
    vs["spec"]["hosts"] = "cart"
    vs["spec"]["http"][0]["route"][0]["destination"]["hosts"] = "x"
    assert messages(vs) == [
        'spec.hosts: expected a list, got a string "cart"',
        "spec.http[0].route[0].destination.hosts: unknown field, which the API server would drop",
    ]
    [_, unknown] = validate_virtual_service(vs)
    assert unknown.fix.startswith("rename it to host (known fields here: host, port, subset")


def test_every_violation_at_once_each_with_its_path_and_fix() -> None:
    vs = good()
    http = vs["spec"]["http"]
    http[0]["match"][0]["headers"]["x-developer"] = {"exact": "a", "prefix": "b"}
    http[0]["match"][0]["port"] = "80"
    http[0]["timeout"] = "5 seconds"
    http[1]["route"][0]["destination"] = {"port": {"number": -1}}
    http[1]["route"][0]["weight"] = True
    vs["spec"]["bogus"] = 1
    found = validate_virtual_service(vs)
    assert [f"{v.path}: {v.message}" for v in found] == [
        "spec.bogus: unknown field, which the API server would drop",
        "spec.http[0].match[0].headers.x-developer: sets exact, prefix; "
        "at most one of exact, prefix, regex allowed",
        'spec.http[0].match[0].port: expected an integer, got a string "80"',
        'spec.http[0].timeout: must be a valid duration greater than 1ms, got a string "5 seconds"',
        "spec.http[1].route[0].destination.host: is required",
        "spec.http[1].route[0].destination.port.number: is -1",
        "spec.http[1].route[0].weight: expected an integer, got a boolean true",
    ]
    assert all(v.fix for v in found)


def test_top_level_extras_are_unknown_but_status_keeps_unknown_fields() -> None:
    vs = good()
    vs["specs"] = {}
    vs["status"] = {"anything": {"goes": 1}, "observedGeneration": "3"}
    assert messages(vs) == ["specs: unknown field, which the API server would drop"]
    vs.pop("specs")
    vs["status"]["observedGeneration"] = 3.5  # int-or-string
    assert messages(vs) == [
        "status.observedGeneration: expected an integer or a string, got a number 3.5"
    ]


def test_map_keys_that_are_not_plain_names_are_quoted_in_paths() -> None:
    vs = good()
    vs["spec"]["http"][0]["match"][0]["headers"] = {"x.y": {"exact": 1}}
    assert messages(vs) == [
        'spec.http[0].match[0].headers["x.y"].exact: expected a string, got an integer 1'
    ]


@pytest.mark.parametrize("value", ["1ms", "5s", "1.5m", "1h30m", "0.002s", "1000us", ".5s"])
def test_durations_accepted(value: str) -> None:
    vs = good()
    vs["spec"]["http"][0]["timeout"] = value
    assert messages(vs) == []


@pytest.mark.parametrize("value", ["0", "0.5ms", "5", "5 s", "s", "-1s", "1d", ""])
def test_durations_refused(value: str) -> None:
    vs = good()
    vs["spec"]["http"][0]["timeout"] = value
    assert [v.path for v in validate_virtual_service(vs)] == ["spec.http[0].timeout"]


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_what_the_operator_writes_always_fits_istios_schema(gen: Any, data: st.DataObject) -> None:
    world = data.draw(gen.world())
    d = compute_desired(world.config, world.service, world.services)
    if d.virtual_service is not None:
        assert messages(d.virtual_service) == []


def _objects(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths to every mapping in `node` whose schema declares its fields."""
    found = []
    if isinstance(node, dict):
        if path[-1:] != ("headers",):  # a map of header names, not of fields
            found.append(path)
        for key, value in node.items():
            found += _objects(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _objects(value, (*path, i))
    return found


@settings(max_examples=60, deadline=None)
@given(data=st.data(), key=st.from_regex(r"[a-z][a-zA-Z]{2,12}", fullmatch=True))
def test_an_added_unknown_field_is_reported_at_its_path(data: st.DataObject, key: str) -> None:
    vs = good()
    targets = [p for p in _objects(vs) if p[:1] == ("spec",)]
    at = data.draw(st.sampled_from(targets))
    node: Any = vs
    for step in at:
        node = node[step]
    if key in node or key in _known_fields(at):
        return
    mutated = copy.deepcopy(vs)
    target: Any = mutated
    for step in at:
        target = target[step]
    target[key] = "x"
    [violation] = validate_virtual_service(mutated)
    assert violation.message.startswith("unknown field")
    assert violation.path.endswith(key)
    assert violation.path.count("[") == sum(isinstance(p, int) for p in at)


def _known_fields(at: tuple[Any, ...]) -> set[str]:
    schema: Any = istio_schema().validator.schema
    for step in at:
        if isinstance(step, int):
            schema = schema["items"]
        else:
            schema = schema.get("properties", {}).get(step) or schema["additionalProperties"]
    return set(schema.get("properties", {}))


def test_config_load_refuses_a_template_istio_would_refuse() -> None:
    text = "defaultNamespace: prod\nvirtualServiceTemplate: |\n" + "".join(
        f"  {line}\n"
        for line in DEFAULT_TEMPLATE.replace(
            "  - ${serviceName}\n", "  - ${serviceName}\n  exportTo: ns\n"
        )
        .replace("host:", "hosts:")
        .splitlines()
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    found = [(p.path, p.message) for p in caught.value.problems]
    # Each with its line in the template: the key's, or for a missing key its parent's.
    assert found == [
        (
            "virtualServiceTemplate",
            'spec.exportTo: expected a list, got a string "ns" (template line 11)',
        ),
        (
            "virtualServiceTemplate",
            "spec.http[0].route[0].destination.host: is required (template line 14)",
        ),
        (
            "virtualServiceTemplate",
            "spec.http[0].route[0].destination.hosts: unknown field, which the API server "
            "would drop (template line 15)",
        ),
    ]
    assert all(p.line == 2 for p in caught.value.problems)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["hosts", "http", "route", "destination", "host", "match", "x"]),
            inner,
            max_size=3,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(spec=_json)
def test_any_json_is_judged_never_raises(spec: Any) -> None:
    vs = {**good(), "spec": spec}
    found = validate_virtual_service(vs)
    assert all(v.path.startswith("spec") and v.message and v.fix for v in found)
    assert len(found) == len(set(found))
