"""One gate for every write: only the executor calls the client's write methods.

Read from the source (AST) of the operator package, so that a new module that writes
on its own fails here. Two writers of their own records are allowed, each for one kind
only: the leader elector (its Lease) and the event recorder (Events). Two kinds of
create are questions, which the API server answers and never stores: the access reviews
(TokenReview, SubjectAccessReview) of secure metrics, and a call with `dry_run=True`
(check-config --server).
And the parts
that handle conflicts never sleep in a worker: the queue's back-off retries.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import virtualservice_operator

PACKAGE = Path(virtualservice_operator.__file__).parent
WRITES = {"create", "replace", "merge_patch", "delete"}
EXECUTOR = "operator/executor.py"
OWN_RECORDS = {"runtime/leader.py": "LEASES", "runtime/events.py": "EVENTS"}
REVIEWS = "serving/authz.py"  # its one create sends TokenReviews and SubjectAccessReviews


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _write_calls(tree: ast.AST) -> list[ast.Call]:
    """Calls of a client write method: `<...client...>.create(...)` and the like, and any
    awaited call of one of those names (the client's methods are the async ones)."""
    awaited = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Await)}
    calls = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr not in WRITES:
            continue
        receiver = ast.unparse(node.func.value).lower()
        if "client" in receiver or id(node) in awaited:
            calls.append(node)
    return calls


def test_only_the_executor_writes_services_and_virtual_services() -> None:
    offenders = []
    for path in _modules():
        name = str(path.relative_to(PACKAGE))
        if name == EXECUTOR:
            continue
        for call in _write_calls(ast.parse(path.read_text(), name)):
            kind = ast.unparse(call.args[0]) if call.args else ""
            if OWN_RECORDS.get(name) == kind or _dry_run(call):
                continue
            if name == REVIEWS and call.func.attr == "create":  # type: ignore[attr-defined]
                continue
            offenders.append(f"{name}:{call.lineno}: {ast.unparse(call)[:80]}")
    assert offenders == [], "writes outside the executor:\n" + "\n".join(offenders)


def _dry_run(call: ast.Call) -> bool:
    return any(
        k.arg == "dry_run" and isinstance(k.value, ast.Constant) and k.value.value is True
        for k in call.keywords
    )


def test_the_executor_does_write() -> None:
    # Else the test above would pass on a package that found another way to write.
    tree = ast.parse((PACKAGE / EXECUTOR).read_text())
    assert {call.func.attr for call in _write_calls(tree)} == WRITES  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "module", ["operator/reconciler.py", "runtime/controller.py", "operator/executor.py"]
)
def test_no_worker_sleeps(module: str) -> None:
    tree = ast.parse((PACKAGE / module).read_text())
    sleeps = [
        ast.unparse(n)
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and "sleep" in ast.unparse(n.func)
    ]
    assert sleeps == []


def test_the_check_finds_a_write_elsewhere() -> None:
    source = "async def f(client):\n    await client.delete(SERVICES, 'ns', 'x')\n"
    [call] = _write_calls(ast.parse(source))
    assert ast.unparse(call.args[0]) == "SERVICES"
