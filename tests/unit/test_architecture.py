"""The package's layers, held by reading every module's imports (lazy ones included).

- `kube` (the client) imports only itself; `runtime` (plumbing) only `kube` and itself;
  `serving` (the HTTP side) only `kube`, `runtime` and itself: plumbing never imports the
  domain or the operator, as controller-runtime's packages never import an operator's.
- `domain` is pure: it imports nothing else from the package.
- `operator` never imports `commands` or `cli`; `commands` never imports `cli`.
- No import cycle between modules anywhere.
- Every subpackage says in its docstring what it owns.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import virtualservice_operator

PACKAGE = "virtualservice_operator"
ROOT = Path(virtualservice_operator.__file__).parent

# layer -> the layers it may import (itself always). "" is the package's top level:
# `__init__` (the version) and `cli`.
ALLOWED: dict[str, set[str]] = {
    "kube": {"__init__"},
    "runtime": {"__init__", "kube"},
    "serving": {"__init__", "kube", "runtime"},
    "domain": set(),
    "operator": {"__init__", "kube", "runtime", "serving", "domain"},
    "commands": {"__init__", "kube", "runtime", "serving", "domain", "operator"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imports_of(path: Path, name: str) -> set[str]:
    """Every module of the package this one imports, at any depth of its code."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    known = modules()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith(PACKAGE))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if not base.startswith(PACKAGE):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    found.discard(name)
    return found


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__"
    return parts[1] if len(parts) > 2 or (ROOT / parts[1]).is_dir() else ""


def graph() -> dict[str, set[str]]:
    return {name: imports_of(path, name) for name, path in modules().items()}


def test_every_module_belongs_to_a_layer() -> None:
    """A new module at the top level has to say which layer it is (only cli stays there)."""
    top = {m for m in modules() if layer(m) == ""}
    assert top == {f"{PACKAGE}.cli"}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_layer_imports_only_what_it_may(package: str) -> None:
    wrong = []
    for module, imported in graph().items():
        if layer(module) != package:
            continue
        for target in sorted(imported):
            target_layer = layer(target)
            if target_layer not in ALLOWED[package] | {package}:
                wrong.append(f"{module} imports {target} ({target_layer or 'top level'})")
    assert not wrong, "\n".join(wrong)


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle() -> None:
    # A package's own __init__ is imported before its modules: an edge to it is no cycle.
    edges = {m: {t for t in ts if not m.startswith(f"{t}.")} for m, ts in graph().items()}
    cycle = find_cycle(edges)
    assert cycle is None, " -> ".join(cycle or [])


def test_the_checks_see_a_cycle_and_a_wrong_import() -> None:
    """The rules above would fail on the faults they are for."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    client = ROOT / "kube" / "client.py"
    assert f"{PACKAGE}.kube.transport" in imports_of(client, f"{PACKAGE}.kube.client")
    assert layer(f"{PACKAGE}.domain.model") == "domain"
    assert "domain" not in ALLOWED["runtime"]


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_subpackage_says_what_it_owns(package: str) -> None:
    doc = ast.get_docstring(ast.parse((ROOT / package / "__init__.py").read_text()))
    assert doc and len(doc) > 60, f"{package}/__init__.py needs a docstring saying what it owns"
