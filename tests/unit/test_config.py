"""Loading and validating the operator configuration."""

from __future__ import annotations

import textwrap

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from virtualservice_operator.domain.config import (
    DEFAULT_TEMPLATE,
    ConfigError,
    OperatorConfig,
    Problem,
    config_from_configmap,
    diff_configs,
    parse_config,
    parse_config_file,
)

GUIDE = """\
defaultNamespace: "production"
developerNamespaces:
  - "staging"
  - "dev-team-a"
  - "dev-team-b"
enablePlaceholderServices: true
virtualServiceTemplate: |
  apiVersion: networking.istio.io/v1beta1
  kind: VirtualService
  metadata:
    name: "${serviceName}-virtual-service"
    namespace: "${defaultNamespace}"
    labels:
      managed-by: virtualservice-operator
  spec:
    hosts:
    - ${serviceName}
    http:
    - route:
      - destination:
          host: ${serviceName}.${defaultNamespace}.svc.cluster.local
"""


def problems(text: str) -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    return info.value.problems


def test_guide_config_loads() -> None:
    loaded = parse_config(GUIDE)
    cfg = loaded.config
    assert loaded.warnings == ()
    assert cfg.default_namespace == "production"
    assert cfg.watched_namespaces == ("production", "staging", "dev-team-a", "dev-team-b")
    assert cfg.enable_placeholder_services is True
    assert cfg.virtual_service_template == DEFAULT_TEMPLATE
    assert cfg.routing.header == "x-developer"
    assert cfg.routing.match == "header"
    assert cfg.routing.baggage_key == "x-developer"


def test_defaults() -> None:
    cfg = parse_config("defaultNamespace: staging").config
    assert cfg.developer_namespaces == ()
    assert cfg.enable_placeholder_services is False
    assert cfg.virtual_service_template == DEFAULT_TEMPLATE
    assert dict(cfg.placeholder.labels) == {}


def test_extensions() -> None:
    text = textwrap.dedent("""\
        defaultNamespace: prod
        routing: {header: X-Dev, match: baggage, baggageKey: dev}
        placeholder:
          labels: {team: platform, example.com/tier: "1"}
          annotations: {example.com/owner: "platform team"}
        """)
    cfg = parse_config(text).config
    assert cfg.routing.header == "x-dev"  # lower-cased: Istio matches lower-case names
    assert (cfg.routing.match, cfg.routing.baggage_key) == ("baggage", "dev")
    assert dict(cfg.placeholder.labels) == {"team": "platform", "example.com/tier": "1"}


def test_problem_text_has_line_path_and_fix() -> None:
    text = "defaultNamespace: prod\ndeveloperNamespaces:\n  - qa\n  - Dev_Team\n"
    [problem] = problems(text)
    assert str(problem) == (
        "config.yaml line 4: developerNamespaces[1]: 'Dev_Team' is not a valid namespace "
        "name. Fix: use lower-case letters, digits and '-' (max 63)."
    )


def test_all_problems_reported_at_once() -> None:
    text = textwrap.dedent("""\
        defaultNamespace: 123
        developerNamespaces: [qa, kube-system, "x" , 7]
        enablePlaceholderServices: "yes"
        routing: {header: "bad header", match: cookie, baggageKey: "a b"}
        placeholder:
          labels: {"bad key!": x, ok: "not ok!", n: 1}
          annotations: {x: 2}
        """)
    found = {p.path: p for p in problems(text)}
    assert set(found) == {
        "defaultNamespace",
        "developerNamespaces[1]",
        "developerNamespaces[3]",
        "enablePlaceholderServices",
        "routing.header",
        "routing.match",
        "routing.baggageKey",
        "placeholder.labels",
        "placeholder.labels.ok",
        "placeholder.labels.n",
        "placeholder.annotations.x",
    }
    assert "quotes" in found["defaultNamespace"].fix
    assert "system namespace" in found["developerNamespaces[1]"].message
    assert found["enablePlaceholderServices"].line == 3
    assert "without quotes" in found["enablePlaceholderServices"].fix
    assert "'header' or 'baggage'" in found["routing.match"].fix
    assert "'bad key!' is not a valid label" in found["placeholder.labels"].message
    assert found["placeholder.labels.n"].line == 6


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        ("defaultNamespace: qa\ndeveloperNamespaces: [a, qa]", "developerNamespaces[1]", "default"),
        (
            "defaultNamespace: qa\ndeveloperNamespaces: [a, b, a]",
            "developerNamespaces[2]",
            "item 0",
        ),
        ("defaultNamespace: " + "a" * 64, "defaultNamespace", "not a valid namespace"),
        ("defaultNamespace: istio-system", "defaultNamespace", "system namespace"),
        ("developerNamespaces: [a]", "defaultNamespace", "required"),
        ("defaultNamespace: [a]", "defaultNamespace", "must be a string, got a list"),
        ("defaultNamespace: a\ndeveloperNamespaces: a", "developerNamespaces", "must be a list"),
        ("defaultNamespace: a\nrouting: x", "routing", "must be a mapping"),
        (
            "defaultNamespace: a\nplaceholder: {labels: {virtualservice-operator/exclude: 'true'}}",
            "placeholder.labels.virtualservice-operator/exclude",
            "operator's own",
        ),
        (
            "defaultNamespace: a\nplaceholder: {annotations: {virtualservice-operator/source: x}}",
            "placeholder.annotations.virtualservice-operator/source",
            "operator's own",
        ),
    ],
)
def test_each_rule(text: str, path: str, message: str) -> None:
    found = problems(text)
    assert [p.path for p in found] == [path]
    assert message in found[0].message


def test_bad_template_refused_at_load() -> None:
    text = GUIDE.replace("-virtual-service", "-vs")
    [problem] = problems(text)
    assert problem.path == "virtualServiceTemplate"
    assert problem.line == 7
    assert "metadata.name" in problem.message
    assert "${serviceName}-virtual-service" in problem.fix
    [problem] = problems(GUIDE.replace("${defaultNamespace}", "${namespace}", 1))
    assert "unknown variable ${namespace}" in problem.message


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("", "is empty", None),
        ("# nothing\n", "is empty", None),
        ("- a\n- b", "must be a mapping, got a list", 1),
        ("just text", "must be a mapping, got a string", 1),
        ("defaultNamespace: a\n  bad: [", "not valid YAML", 2),
        ("a: 1\n---\nb: 2\n", "not valid YAML", 2),
        ("defaultNamespace: 2001-02-30", "cannot be read", None),
        ("defaultNamespace: !!python/name:os.system", "not valid YAML", 1),
    ],
)
def test_unreadable_documents(text: str, message: str, line: int | None) -> None:
    [problem] = problems(text)
    assert message in problem.message
    assert problem.line == line


def test_unknown_keys_are_warnings_with_suggestions() -> None:
    text = "defaultNamespace: a\ndevelopperNamespaces: [b]\nrouting: {headr: x}\nzzz: 1\n"
    loaded = parse_config(text)
    assert loaded.config.developer_namespaces == ()
    assert loaded.warnings == (
        "config.yaml line 2: unknown key 'developperNamespaces' ignored; "
        "did you mean 'developerNamespaces'?",
        "config.yaml line 3: unknown key 'routing.headr' ignored; did you mean 'routing.header'?",
        "config.yaml line 4: unknown key 'zzz' ignored",
    )


def test_snake_case_keys_are_not_accepted_from_yaml() -> None:
    with pytest.raises(ConfigError, match="defaultNamespace: is required"):
        parse_config("default_namespace: prod")


def test_line_of_a_dotted_key() -> None:
    [problem] = problems("defaultNamespace: a\nplaceholder:\n  labels:\n    example.com/x: 1\n")
    assert (problem.path, problem.line) == ("placeholder.labels.example.com/x", 4)


def test_config_map_manifest_is_unwrapped() -> None:
    manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "virtualservice-operator-config"},
        "data": {"config.yaml": GUIDE},
    }
    loaded = parse_config_file(yaml.safe_dump(manifest))
    assert loaded.config == parse_config(GUIDE).config
    assert parse_config_file(GUIDE).config == loaded.config
    with pytest.raises(ConfigError, match=r"data\.config\.yaml: is missing"):
        parse_config_file("kind: ConfigMap\ndata: {other: x}\n")
    with pytest.raises(ConfigError, match="not a valid namespace"):
        parse_config_file(
            yaml.safe_dump({**manifest, "data": {"config.yaml": "defaultNamespace: A"}})
        )


def test_config_from_configmap() -> None:
    where = "ConfigMap ops/vso-config"
    loaded = config_from_configmap({"data": {"config.yaml": GUIDE}}, where)
    assert loaded.config == parse_config(GUIDE).config
    with pytest.raises(ConfigError) as info:
        config_from_configmap(None, where)
    assert str(info.value) == (
        "config.yaml: ConfigMap ops/vso-config not found. "
        "Fix: create it (see deployments/config.yaml)."
    )
    for obj in ({}, {"data": None}, {"data": {"other": "x"}}, {"data": {"config.yaml": 1}}):
        with pytest.raises(ConfigError) as info:
            config_from_configmap(obj, where)
        [problem] = info.value.problems
        assert (problem.path, problem.message) == (
            "data.config.yaml",
            "is missing from ConfigMap ops/vso-config",
        )
    with pytest.raises(ConfigError) as info:
        config_from_configmap({"data": {"config.yaml": "defaultNamespace: A\n"}}, where)
    assert [(p.path, p.line) for p in info.value.problems] == [("defaultNamespace", 1)]


class _CountingLoader(yaml.SafeLoader):
    made = 0

    def __init__(self, stream: str) -> None:
        type(self).made += 1
        super().__init__(stream)


@pytest.mark.parametrize("as_manifest", [False, True])
def test_a_file_is_parsed_once(monkeypatch: pytest.MonkeyPatch, as_manifest: bool) -> None:
    # Each text is parsed once (values and line numbers from the same node tree): a
    # bare config.yaml once, a ConfigMap manifest once and its config.yaml body once.
    monkeypatch.setattr(yaml, "SafeLoader", _CountingLoader)
    monkeypatch.setattr(_CountingLoader, "made", 0)
    for name in ("safe_load", "compose", "load"):
        monkeypatch.setattr(yaml, name, lambda *a, **k: pytest.fail("a second parse"))
    text = "defaultNamespace: Prod\ndeveloperNamespaces: [dev]\nzzz: 1\n"
    if as_manifest:
        text = yaml.dump({"kind": "ConfigMap", "data": {"config.yaml": text}})
    with pytest.raises(ConfigError) as info:
        parse_config_file(text)
    assert [p.line for p in info.value.problems] == [1]
    assert _CountingLoader.made == (2 if as_manifest else 1)


def test_problem_format() -> None:
    problem = Problem("routing.match", "is 'cookie'", "use one of 'header', 'baggage'", 7)
    assert (
        problem.format("")
        == "line 7: routing.match: is 'cookie'. Fix: use one of 'header', 'baggage'."
    )
    assert str(problem) == "config.yaml " + problem.format("")
    assert Problem("", "is empty", "set it").format("") == "is empty. Fix: set it."


def test_config_error_lists_every_problem_one_per_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("defaultNamespace: A\ndeveloperNamespaces: [B]")
    assert str(info.value).splitlines() == [str(p) for p in info.value.problems]
    assert len(info.value.problems) == 2


def test_direct_construction_is_validated_too() -> None:
    with pytest.raises(ValueError, match="system namespace"):
        OperatorConfig(default_namespace="kube-system")
    with pytest.raises(ValueError, match="default namespace"):
        OperatorConfig(default_namespace="a", developer_namespaces=("a",))


def test_diff_configs() -> None:
    old = parse_config(GUIDE).config
    new = OperatorConfig(
        default_namespace="production",
        developer_namespaces=("dev-team-b", "dev-team-a", "qa"),
        enable_placeholder_services=False,
        virtual_service_template=DEFAULT_TEMPLATE.replace("v1beta1", "v1"),
        routing={"header": "x-team"},
        placeholder={"labels": {"team": "a"}},
    )
    assert diff_configs(old, new) == [
        "developerNamespaces: added qa, removed staging, changed order",
        "enablePlaceholderServices: True -> False",
        "virtualServiceTemplate: changed",
        "routing.header: x-developer -> x-team",
        "placeholder.labels: added team",
    ]
    assert diff_configs(old, old) == []


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)
keys = st.sampled_from(
    [
        "defaultNamespace",
        "developerNamespaces",
        "enablePlaceholderServices",
        "virtualServiceTemplate",
        "routing",
        "placeholder",
        "other",
    ]
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.text(),
        st.dictionaries(keys, yaml_values).map(yaml.safe_dump),
        st.fixed_dictionaries(
            {"defaultNamespace": st.sampled_from(["prod", "Prod", "kube-system"])},
            optional={
                "developerNamespaces": st.lists(st.sampled_from(["prod", "qa", "q_a", "x"])),
                "routing": st.dictionaries(st.sampled_from(["header", "match", "x"]), yaml_values),
                "placeholder": st.dictionaries(
                    st.sampled_from(["labels", "annotations"]), yaml_values
                ),
                "virtualServiceTemplate": st.text(alphabet="${}:\n -abcx[]"),
            },
        ).map(yaml.safe_dump),
    )
)
def test_only_config_error_escapes(text: str) -> None:
    for parse in (parse_config, parse_config_file):
        try:
            loaded = parse(text)
        except ConfigError as e:
            assert e.problems and all(isinstance(p, Problem) for p in e.problems)
        else:
            assert loaded.config.default_namespace in loaded.config.watched_namespaces


# -- serviceSelector and allowHostConflicts --------------------------------------------


def test_service_selector_becomes_the_apis_label_selector() -> None:
    loaded = parse_config(
        textwrap.dedent(
            """\
            defaultNamespace: prod
            serviceSelector:
              matchLabels: {team: a, mesh: "on"}
              matchExpressions:
              - {key: tier, operator: In, values: [web, api]}
              - {key: example.com/legacy, operator: DoesNotExist}
              - {key: canary, operator: Exists}
              - {key: zone, operator: NotIn, values: [x]}
            allowHostConflicts: true
            """
        )
    )
    selector = loaded.config.service_selector
    assert selector is not None
    assert selector.query() == (
        "mesh=on,team=a,tier in (web,api),!example.com/legacy,canary,zone notin (x)"
    )
    assert loaded.config.allow_host_conflicts is True
    assert parse_config("defaultNamespace: prod").config.service_selector is None
    empty = parse_config("defaultNamespace: prod\nserviceSelector: {}").config.service_selector
    assert empty is not None and empty.query() == ""


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (
            "serviceSelector:\n  matchExpressions:\n  - {key: tier, operator: In}",
            "line 4: serviceSelector.matchExpressions[0]: In needs values. Fix: list at least "
            "one under values.",
        ),
        (
            "serviceSelector:\n  matchExpressions:\n  - {key: t, operator: Exists, values: [a]}",
            "serviceSelector.matchExpressions[0]: Exists takes no values. Fix: remove values.",
        ),
        (
            "serviceSelector:\n  matchExpressions:\n  - {key: t, operator: in, values: [a]}",
            "serviceSelector.matchExpressions[0].operator: is 'in'. Fix: use one of 'In', "
            "'NotIn', 'Exists' or 'DoesNotExist'.",
        ),
        (
            "serviceSelector:\n  matchLabels: {team: 'a b'}",
            "serviceSelector.matchLabels.team: 'a b' is not a valid label value.",
        ),
        ("serviceSelector: app=x", "serviceSelector: must be a mapping, got a string."),
        ('allowHostConflicts: "yes"', "allowHostConflicts: must be true or false"),
    ],
)
def test_service_selector_and_allow_host_conflicts_are_validated(body: str, problem: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(f"defaultNamespace: prod\n{body}\n")
    assert problem in str(e.value), str(e.value)


def test_a_misspelt_selector_key_is_a_warning_and_reloads_are_diffed() -> None:
    loaded = parse_config("defaultNamespace: prod\nserviceSelector:\n  matchLabel: {a: b}\n")
    assert loaded.warnings == (
        "config.yaml line 3: unknown key 'serviceSelector.matchLabel' ignored; "
        "did you mean 'serviceSelector.matchLabels'?",
    )
    old = parse_config("defaultNamespace: prod").config
    new = parse_config(
        "defaultNamespace: prod\nserviceSelector: {matchLabels: {a: b}}\nallowHostConflicts: true"
    ).config
    assert diff_configs(old, new) == [
        "serviceSelector: (none) -> 'a=b'",
        "allowHostConflicts: False -> True",
    ]
