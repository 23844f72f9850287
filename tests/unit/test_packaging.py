"""One version everywhere, and a runtime wheel that holds the operator and nothing else.

- `virtualservice_operator.__version__` is the version: the package metadata, the chart's
  `version` and `appVersion`, deployments/deployment.yaml's image tag (`v` + version) and
  its `app.kubernetes.io/version` label follow it.
- The wheel built from this checkout holds no `virtualservice_operator_dev` and no tests,
  and every module in it imports only the standard library, itself, or what its declared
  requirements install (so a dev-only library, such as `cryptography` for the local
  control plane's PKI, cannot creep in unless it becomes a runtime requirement); every
  declared requirement is imported.
"""

from __future__ import annotations

import ast
import contextlib
import email
import importlib.metadata
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

import virtualservice_operator
from virtualservice_operator_dev.controlplane import REPO_ROOT

VERSION = virtualservice_operator.__version__
CHART = REPO_ROOT / "charts" / "virtualservice-operator"
IMAGE = "harbor.intent.ai/library/virtualservice-operator"


def _deployment() -> dict[str, object]:
    docs = yaml.safe_load_all((REPO_ROOT / "deployments" / "deployment.yaml").read_text())
    return next(d for d in docs if d and d["kind"] == "Deployment")


def test_the_version_is_semver() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", VERSION), VERSION


def test_package_metadata_reads_the_version() -> None:
    assert importlib.metadata.version("virtualservice-operator") == VERSION


def test_chart_version_and_app_version_are_the_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert (chart["version"], chart["appVersion"]) == (VERSION, VERSION)


def test_deployment_yaml_image_and_version_label_follow_the_version() -> None:
    deployment = _deployment()
    assert deployment["metadata"]["labels"]["app.kubernetes.io/version"] == VERSION  # type: ignore[index]
    container = deployment["spec"]["template"]["spec"]["containers"][0]  # type: ignore[index]
    assert container["image"] == f"{IMAGE}:v{VERSION}"


def test_license_is_the_apache_2_0_text() -> None:
    text = (REPO_ROOT / "LICENSE").read_text()
    assert "Apache License\n                           Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


def test_changelog_describes_this_version() -> None:
    assert f"## {VERSION}" in (REPO_ROOT / "CHANGELOG.md").read_text()


# -- the wheel ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # No build isolation: the pinned setuptools is a dev dependency, so no network is needed.
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run(
        [*pip, "-w", str(out), str(REPO_ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (path,) = out.glob("virtualservice_operator-*.whl")
    return path


def _declared(wheel: zipfile.ZipFile) -> set[str]:
    """Distribution names the wheel requires unconditionally (no extras)."""
    meta_name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    meta = email.message_from_bytes(wheel.read(meta_name))
    return _requirement_names(meta.get_all("Requires-Dist") or [])


def _requirement_names(requirements: list[str]) -> set[str]:
    return {
        _normalise(re.split(r"[\s\[<>=!~;(]", req, maxsplit=1)[0])
        for req in requirements
        if "extra ==" not in req
    }


def _closure(names: set[str]) -> set[str]:
    """The distributions installing `names` brings (their requirements, recursively):
    pydantic_core comes with pydantic, for example."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        # A requirement with a marker that does not apply here is not installed: skip it.
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            todo.extend(_requirement_names(importlib.metadata.requires(name) or []))
    return seen


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imports(source: str) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_wheel_is_named_for_the_version_and_ships_the_license(wheel: Path) -> None:
    assert wheel.name.startswith(f"virtualservice_operator-{VERSION}-")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), names


def test_wheel_holds_the_operator_only(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"virtualservice_operator", f"virtualservice_operator-{VERSION}.dist-info"}
    assert "virtualservice_operator/py.typed" in names
    assert "virtualservice_operator/cli.py" in names


def test_wheel_imports_only_stdlib_itself_and_declared_dependencies(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        declared = _declared(zf)
        imported: dict[str, set[str]] = {}
        for name in zf.namelist():
            if name.endswith(".py"):
                for module in _imports(zf.read(name).decode()):
                    imported.setdefault(module, set()).add(name)
    assert "lightkube" not in declared, declared  # our own kubeconfig loader replaced it
    installed = _closure(declared)
    providers = importlib.metadata.packages_distributions()
    undeclared = {}
    for module, files in imported.items():
        if module in sys.stdlib_module_names or module == "virtualservice_operator":
            continue
        dists = {_normalise(d) for d in providers.get(module, [])}
        if not dists & installed:
            undeclared[module] = sorted(files)
    assert not undeclared, f"imported but not installed with the wheel: {undeclared}"
    # Every declared dependency is imported somewhere: no unused pins.
    used = {_normalise(d) for m in imported for d in providers.get(m, [])}
    assert declared <= used, f"declared but never imported: {sorted(declared - used)}"
