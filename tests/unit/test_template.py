"""Rendering the VirtualService template: substitution, validation, pass-through."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from virtualservice_operator.domain.config import DEFAULT_TEMPLATE
from virtualservice_operator.domain.template import TemplateError, render_virtual_service


def render(template: str, service: str = "web", ns: str = "prod") -> dict:
    return render_virtual_service(template, service=service, default_namespace=ns)


def test_guide_template_renders() -> None:
    vs = render(DEFAULT_TEMPLATE)
    assert vs == {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "VirtualService",
        "metadata": {
            "name": "web-virtual-service",
            "namespace": "prod",
            "labels": {"managed-by": "virtualservice-operator"},
        },
        "spec": {
            "hosts": ["web"],
            "http": [{"route": [{"destination": {"host": "web.prod.svc.cluster.local"}}]}],
        },
    }


def test_other_fields_pass_through_and_dollar_escape(templates: dict[str, str]) -> None:
    vs = render(templates["rich"])
    assert vs["metadata"] == {
        "name": "web-virtual-service",
        "namespace": "prod",  # absent in the template: set
        "labels": {"team": "platform"},
        "annotations": {"note": "costs $5"},
    }
    assert vs["spec"]["gateways"] == ["mesh"]
    assert vs["spec"]["http"][1]["retries"] == {"attempts": 3}
    assert vs["spec"]["http"][1]["timeout"] == "5s"
    assert render(templates["tcp"])["spec"]["tcp"][0]["route"][0]["destination"]["host"] == (
        "web.prod.svc.cluster.local"
    )


def test_literal_dollar_not_followed_by_a_name_is_kept() -> None:
    template = DEFAULT_TEMPLATE + "  x: {regex: '^/api$'}\n"
    assert render(template)["spec"]["x"] == {"regex": "^/api$"}


@pytest.mark.parametrize("name", ["true", "null", "no", "on"])
def test_values_never_change_yaml_types(name: str) -> None:
    # A Service called "true" stays a string, and a namespace called "123" too.
    vs = render(DEFAULT_TEMPLATE, service=name, ns="123")
    assert vs["spec"]["hosts"] == [name]
    assert vs["metadata"]["namespace"] == "123"


@pytest.mark.parametrize(
    "service", ["web\n  evil: x", "web: x", "a b", "Web", "", "x" * 64, "we$b", "-web"]
)
def test_yaml_injection_through_a_value_is_refused(service: str) -> None:
    with pytest.raises(TemplateError, match="not a DNS label"):
        render(DEFAULT_TEMPLATE, service=service)
    with pytest.raises(TemplateError, match="defaultNamespace"):
        render(DEFAULT_TEMPLATE, ns=service)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${serviceNam}", r"unknown variable \$\{serviceNam\}.*\$\{serviceName\}"),
        ("${namespace}", r"unknown variable \$\{namespace\} at template line 4"),
        ("$serviceName", r"bare variable \$serviceName"),
        ("${serviceName", "unterminated"),
    ],
)
def test_unknown_and_malformed_variables(text: str, expected: str) -> None:
    template = DEFAULT_TEMPLATE.replace('"${serviceName}-virtual-service"', text)
    with pytest.raises(TemplateError, match=expected):
        render(template)


def swap(old: str, new: str) -> str:
    assert old in DEFAULT_TEMPLATE
    return DEFAULT_TEMPLATE.replace(old, new)


@pytest.mark.parametrize(
    ("template", "field", "text"),
    [
        (swap("v1beta1", "v2"), "apiVersion", "networking.istio.io/v1, "),
        (swap("kind: VirtualService", "kind: Gateway"), "kind", "Gateway"),
        (swap("-virtual-service", "-vs"), "metadata.name", "'web-vs'"),
        (swap('"${defaultNamespace}"', "other"), "metadata.namespace", "'other'"),
        (swap("managed-by: virtualservice-operator", "n: 1"), "metadata.labels", "quote"),
        (swap("  http:\n", "  http: {a: 1}\n  x:\n"), "spec.http", "list of routes"),
        (DEFAULT_TEMPLATE.split("spec:")[0], "spec", "missing"),
    ],
)
def test_structural_checks_name_field_and_fix(template: str, field: str, text: str) -> None:
    with pytest.raises(TemplateError) as info:
        render(template)
    assert info.value.field == field
    assert text in str(info.value)
    assert "Fix: " in str(info.value)


@pytest.mark.parametrize(
    ("template", "text"),
    [
        ("", "exactly one YAML document, found 0"),
        (DEFAULT_TEMPLATE + "---\n" + DEFAULT_TEMPLATE, "found 2"),
        ("- a\n- b\n", "must be a YAML mapping"),
        ("a: [b\n", "not valid YAML at template line 2"),
        (DEFAULT_TEMPLATE + "  d: 2001-02-30\n", "not valid YAML"),
        (DEFAULT_TEMPLATE + "  d: 2001-02-03\n", "quote it"),
        (DEFAULT_TEMPLATE + "  f: .nan\n", "JSON cannot carry"),
        (DEFAULT_TEMPLATE + "  1: x\n", "not a string"),
        (DEFAULT_TEMPLATE + "  ${serviceName}: 1\n  web: 2\n", "defined twice"),
        ("a: &a [*a]\n", "more than"),
        (
            'a: &a ["x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a]\n'
            "c: &c [*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d]\n"
            "f: [*e,*e,*e,*e,*e,*e]\n",
            "more than",
        ),
    ],
)
def test_bad_documents(template: str, text: str) -> None:
    with pytest.raises(TemplateError, match=text):
        render(template)


def test_rendering_returns_independent_copies() -> None:
    first = render(DEFAULT_TEMPLATE)
    first["spec"]["http"].append({"x": 1})
    assert len(render(DEFAULT_TEMPLATE)["spec"]["http"]) == 1


@settings(max_examples=300, deadline=None)
@given(
    template=st.one_of(
        st.text(),
        st.text(alphabet="${}:-[]&*!|>\n #'\"abcdefnrtuvx0123").map(lambda t: DEFAULT_TEMPLATE + t),
    ),
    service=st.text(max_size=8),
    ns=st.sampled_from(["prod", "Bad", ""]),
)
def test_only_template_error_escapes(template: str, service: str, ns: str) -> None:
    try:
        vs = render(template, service=service, ns=ns)
    except TemplateError:
        return
    assert vs["metadata"]["name"] == f"{service}-virtual-service"


# -- rendering by JSON text equals the walk --------------------------------------------

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["${serviceName}", "${defaultNamespace}", "x-${serviceName}.y", "$$", "$x"]),
    st.text(alphabet='ab"\\\n\t\u00e9{}$:', max_size=6),
)
_KEYS = st.one_of(
    st.sampled_from(["a", "b", "${serviceName}", "k-${defaultNamespace}", "web"]),
    st.text(alphabet='ab"\\é', max_size=3),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_KEYS, inner, max_size=3)),
    max_leaves=12,
)


def _walked(template: str, service: str, ns: str) -> dict:
    """The walk alone: what rendering gave before the JSON-text path existed."""
    from virtualservice_operator.domain import template as t

    values = {t._TOKENS["serviceName"]: service, t._TOKENS["defaultNamespace"]: ns}
    manifest = t._substitute(t._parse(template), values, "", [0])
    t._check(manifest, service=service, default_namespace=ns)
    manifest["metadata"]["namespace"] = ns
    return manifest


@settings(max_examples=400, deadline=None)
@given(
    extra=_VALUES,
    service=st.sampled_from(["web", "a", "web-2", "x" * 63]),
    ns=st.sampled_from(["prod", "d-1"]),
)
def test_rendering_by_json_text_equals_the_walk(extra: object, service: str, ns: str) -> None:
    """Any value anywhere in a template (variables in strings and keys, odd floats, big
    integers, quotes and backslashes): the same manifest or the same error both ways."""
    import yaml

    template = DEFAULT_TEMPLATE + yaml.safe_dump({"extra": extra}, allow_unicode=True)
    try:
        expected: object = _walked(template, service, ns)
    except TemplateError as e:
        expected = str(e)
    try:
        got: object = render(template, service=service, ns=ns)
    except TemplateError as e:
        got = str(e)
    assert got == expected
