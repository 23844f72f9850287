"""The docs hold to the code: links between them resolve, every command and flag they
name exists in the CLI, the configuration reference is what the generator writes from
the config model, and the examples they point to are valid."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from virtualservice_operator.cli import build_parser
from virtualservice_operator.domain.config import ConfigError, parse_config, parse_config_file
from virtualservice_operator.domain.constants import DEFAULT_ROUTING_HEADER
from virtualservice_operator.domain.desired import compute_desired
from virtualservice_operator.domain.model import ServiceInfo, ServicePort
from virtualservice_operator.domain.schema import validate_virtual_service
from virtualservice_operator_dev import configref
from virtualservice_operator_dev.controlplane import REPO_ROOT

DOCS = REPO_ROOT / "docs"
EXAMPLES = DOCS / "examples"
PAGES = sorted(
    [
        REPO_ROOT / "README.md",
        REPO_ROOT / "CONTRIBUTING.md",
        REPO_ROOT / "charts" / "virtualservice-operator" / "README.md",
        *DOCS.glob("*.md"),
    ]
)
# Pages for users: they stand alone, without the operations guide the project was
# specified by (docs/guide-commands.md maps that guide's commands to their tests).
USER_PAGES = [p for p in PAGES if p.parent == DOCS and p.name not in ("guide-commands.md",)] + [
    REPO_ROOT / "README.md"
]

_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_SPAN = re.compile(r"`([^`\n]+)`")


def _prose(text: str) -> str:
    return _FENCE.sub("", _COMMENT.sub("", text))


def _code(text: str) -> Iterator[str]:
    """Every piece of code a page shows: fenced blocks' lines and inline spans."""
    text = _COMMENT.sub("", text)
    for block in _FENCE.findall(text):
        yield from block.splitlines()
    yield from _SPAN.findall(_FENCE.sub("", text))


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to '-'."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for heading in re.findall(r"^#+ (.+)$", _prose(page.read_text()), re.M):
        slug = _slug(heading)
        n = seen.get(slug, 0)
        anchors.add(slug if n == 0 else f"{slug}-{n}")
        seen[slug] = n + 1
    return anchors


def test_the_pages_exist() -> None:
    names = {p.name for p in DOCS.glob("*.md")}
    for page in (
        "quickstart.md",
        "concepts.md",
        "configuration-reference.md",
        "commands.md",
        "operations.md",
        "monitoring.md",
        "security.md",
        "upgrade.md",
        "uninstall.md",
        "troubleshooting.md",
        "faq.md",
        "guide-commands.md",
    ):
        assert page in names, page
    assert (REPO_ROOT / "CONTRIBUTING.md").exists()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_link_resolves(page: Path) -> None:
    broken = []
    for target in _LINK.findall(_prose(page.read_text())):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor}")
    assert not broken, broken


def test_slugs_are_githubs() -> None:
    assert _slug("Take a VirtualService out of the operator's hands") == (
        "take-a-virtualservice-out-of-the-operators-hands"
    )
    assert _slug("Limit who honours the routes: `exportTo`") == (
        "limit-who-honours-the-routes-exportto"
    )
    assert _slug("2. Install on a cluster") == "2-install-on-a-cluster"


@pytest.mark.parametrize("page", USER_PAGES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_user_pages_stand_alone(page: Path) -> None:
    """Users have this repository, not the operations guide it was specified by: no page
    of theirs sends them to "the guide"."""
    text = _COMMENT.sub("", page.read_text()).lower()
    found = re.findall(r"[^.\n]*\bthe guide\b[^.\n]*", text)
    assert not found, found


# -- commands and flags --------------------------------------------------------------------


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


_INVOCATION = re.compile(r"(?<![\w/.:=-])virtualservice-operator ([a-z][a-z-]*)(?=\s|$)(.*)")
# The operator's flag style: one dash, several words, a value (`-zap-log-level=debug`), as
# in the Deployment's command and in patches that add to it. kubectl's flags take two.
_RUN_FLAG = re.compile(r"(?<![\w-])-([a-z]+(?:-[a-z]+)+)=")


def invocations(lines: list[str]) -> Iterator[tuple[str, list[str]]]:
    """(subcommand, flags) of every `virtualservice-operator SUBCOMMAND ...` in `lines`."""
    for line in lines:
        for match in _INVOCATION.finditer(line):
            rest = re.split(r" \| | > |;|&&| #", match.group(2))[0]
            flags = [
                token.strip("[]'\"").split("=")[0]
                for token in rest.split()
                if token.strip("[]'\"").startswith("-") and token.strip("[]'\"") != "-"
            ]
            yield match.group(1), flags


def test_invocations_are_found() -> None:
    lines = [
        "kubectl exec -n x deployment/virtualservice-operator -- virtualservice-operator explain cart",
        "virtualservice-operator render --config f --service cart -o json | less",
        "helm install virtualservice-operator charts/virtualservice-operator -n ns",
        "kubectl get deployment virtualservice-operator -n virtualservice-operator-system",
        "virtualservice-operator status [--check] [-o json\\|yaml]",
    ]
    assert list(invocations(lines)) == [
        ("explain", []),
        ("render", ["--config", "--service", "-o"]),
        ("status", ["--check", "-o"]),
    ]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_command_and_flag_named_exists(page: Path) -> None:
    commands = _subparsers()
    run_flags = set(commands["run"]._option_string_actions)
    code = list(_code(page.read_text()))
    wrong = []
    for command, flags in invocations(code):
        if command not in commands:
            wrong.append(f"virtualservice-operator {command}: no such command")
            continue
        known = commands[command]._option_string_actions
        wrong += [f"{command} {flag}: no such flag" for flag in flags if flag not in known]
    for line in code:
        wrong += [
            f"-{flag}: not a flag of run"
            for flag in _RUN_FLAG.findall(line)
            if f"-{flag}" not in run_flags
        ]
    assert not wrong, wrong


def test_every_flag_of_run_is_documented() -> None:
    text = (DOCS / "commands.md").read_text()
    run = _subparsers()["run"]
    missing = [
        action.option_strings[0]
        for action in run._actions
        if action.option_strings and action.dest != "help"
        if f"`{action.option_strings[0]}`" not in text
    ]
    assert not missing, f"docs/commands.md, 'Flags of run', lacks {missing}"


def _install_lines(page: Path, heading: str) -> list[str]:
    section = page.read_text().split(heading, 1)[1]
    block = section.split("```bash\nkubectl create namespace", 1)[1].split("```", 1)[0]
    lines = ("kubectl create namespace" + block).strip().splitlines()
    return [line.split("#", 1)[0].strip() for line in lines]


def test_quickstart_installs_as_the_readme_does() -> None:
    """The README's install lines run on a real node (tests/node/test_node.py); the
    quickstart's must be the same commands."""
    readme = _install_lines(REPO_ROOT / "README.md", "## Install on a cluster")
    quickstart = _install_lines(DOCS / "quickstart.md", "## 2. Install on a cluster")
    assert readme == quickstart
    assert len(readme) == 5, readme


# -- the configuration reference -------------------------------------------------------------


def test_configuration_reference_is_current() -> None:
    assert configref.OUTPUT.read_text() == configref.render(), (
        f"docs/configuration-reference.md is stale: run {configref.COMMAND}"
    )
    assert configref.main(["--check"]) == 0


def test_every_key_is_in_the_reference() -> None:
    text = configref.OUTPUT.read_text()
    keys = [key for key, _ in configref.fields()]
    assert {"defaultNamespace", "developerNamespaces", "routing.header"} <= set(keys)
    for key in keys:
        assert f"\n## {key}\n" in text, key


def test_the_reference_example_is_accepted_and_sets_every_key() -> None:
    loaded = parse_config(configref.example_config())
    assert loaded.warnings == ()
    example = yaml.safe_load(configref.example_config())
    for key, _ in configref.fields():
        node: Any = example
        for part in key.split("."):
            node = node[part]
    assert loaded.config.developer_namespaces == ("staging", "dev-team-a")


def test_a_field_without_description_or_example_stops_the_generator() -> None:
    schema = configref._schema()
    del schema["properties"]["developerNamespaces"]["description"]
    with pytest.raises(configref.UndocumentedField, match="developerNamespaces"):
        list(configref.fields(schema))
    schema = configref._schema()
    del schema["$defs"]["RoutingConfig"]["properties"]["header"]["examples"]
    with pytest.raises(configref.UndocumentedField, match=r"routing\.header"):
        list(configref.fields(schema))


# -- the security examples -------------------------------------------------------------------


def _documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_ingress_example_strips_the_routing_headers_on_every_route() -> None:
    objects = _documents(EXAMPLES / "ingress-strip-routing-header.yaml")
    services = [o for o in objects if o["kind"] == "VirtualService"]
    assert services and any(o["kind"] == "Gateway" for o in objects)
    for vs in services:
        assert validate_virtual_service(vs) == [], vs["metadata"]["name"]
        assert vs["spec"]["gateways"]
        for route in vs["spec"]["http"]:
            removed = set(route["headers"]["request"]["remove"])
            assert {DEFAULT_ROUTING_HEADER, "baggage"} <= removed, route.get("name")


def test_ingress_example_breaks_the_schema_when_misspelt() -> None:
    """The offline check can fail: a misspelt `remove` is an unknown field."""
    vs = next(
        o
        for o in _documents(EXAMPLES / "ingress-strip-routing-header.yaml")
        if o["kind"] == "VirtualService"
    )
    vs["spec"]["http"][0]["headers"]["request"]["remov"] = ["x-developer"]
    assert any("remov" in v.path for v in validate_virtual_service(vs))


def test_security_page_quotes_the_examples() -> None:
    page = (DOCS / "security.md").read_text()
    ingress = (EXAMPLES / "ingress-strip-routing-header.yaml").read_text()
    exportto = (EXAMPLES / "exportto-config.yaml").read_text()
    blocks = _FENCE.findall(page)
    quoted = [b for b in blocks if "remove:" in b or "exportTo:" in b]
    assert len(quoted) == 2
    for block in quoted:
        source = ingress if "remove:" in block else exportto
        assert block.strip("\n") in source, block


def test_exportto_example_keeps_export_to_and_passes_the_schema() -> None:
    config = parse_config_file((EXAMPLES / "exportto-config.yaml").read_text()).config
    ports = (ServicePort(port=80, name="http"),)
    services = {ns: ServiceInfo(ns, "cart", ports=ports) for ns in ("production", "staging")}
    vs = compute_desired(config, "cart", services).virtual_service
    assert vs is not None
    assert vs["spec"]["exportTo"] == [".", "staging", "dev-team-a"]
    assert [r.get("name") for r in vs["spec"]["http"]] == ["dev-staging", None]
    assert validate_virtual_service(vs) == []


def test_developer_role_grants_nothing_that_moves_other_traffic() -> None:
    objects = _documents(EXAMPLES / "developer-namespace-rbac.yaml")
    role = next(o for o in objects if o["kind"] == "Role")
    assert (
        next(o for o in objects if o["kind"] == "RoleBinding")["roleRef"]["name"]
        == (role["metadata"]["name"])
    )
    for rule in role["rules"]:
        groups, resources, verbs = rule["apiGroups"], rule["resources"], rule["verbs"]
        assert "*" not in groups + resources + verbs, rule
        assert not {"networking.istio.io", "security.istio.io"} & set(groups), rule
        assert "rbac.authorization.k8s.io" not in groups, rule
        assert not {"bind", "escalate", "impersonate"} & set(verbs), rule


# -- what the code tells users to read ------------------------------------------------------


def test_files_the_code_points_users_to_exist() -> None:
    """Messages and help text name docs and manifests: each must be in the repository."""
    source = "\n".join(
        p.read_text() for p in (REPO_ROOT / "src" / "virtualservice_operator").rglob("*.py")
    )
    named = set(re.findall(r"\b((?:docs|deployments)/[\w./-]*\w)", source))
    assert "docs/configuration-reference.md" in named
    missing = sorted(n for n in named if not (REPO_ROOT / n).exists())
    assert not missing, missing


def test_a_missing_key_points_to_the_reference() -> None:
    with pytest.raises(ConfigError, match=r"see docs/configuration-reference\.md"):
        parse_config("developerNamespaces: [staging]\n")


def test_every_event_reason_is_documented() -> None:
    from typing import get_args

    from virtualservice_operator.domain.plan import WarningReason
    from virtualservice_operator.operator import reconciler

    source = "\n".join(
        p.read_text() for p in (REPO_ROOT / "src" / "virtualservice_operator").rglob("*.py")
    )
    literal = re.findall(r"\.(?:warning|normal)\(\s*\w+,\s*\"(\w+)\"", source)
    assert {"InvalidConfig", "ConfigReloaded", "MissingPermission", "TemplateError"} <= set(literal)
    written = {
        f"{prefix}{past.capitalize()}"
        for prefix in ("VirtualService", "Placeholder")
        for past in reconciler._PAST.values()
        if (prefix, past) != ("VirtualService", "released")  # only placeholders are released
    }
    text = (DOCS / "monitoring.md").read_text()
    missing = [r for r in {*literal, *get_args(WarningReason), *written} if f"`{r}`" not in text]
    assert not missing, f"docs/monitoring.md, 'Events', lacks {missing}"
