"""One real node (make node's launcher, in-process) for the node tests.

Where this machine cannot run a node (not root, no cgroups, ...) the tests are skipped
with one line saying why, except under CI=true: there that is a failure, so CI cannot
pass by skipping them.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.conftest import FIGURES
from tests.integration.harness import warm_up_crd
from virtualservice_operator_dev.controlplane import REPO_ROOT, ensure_binaries
from virtualservice_operator_dev.node import (
    Node,
    NodeUnavailable,
    install_runtime,
    node_running,
    unavailable_reason,
)


def _cannot_run(reason: str) -> None:
    message = f"node tests cannot run here: {reason}"
    FIGURES["node tests"] = f"SKIPPED: {reason}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true: a skipped node test is a failure)", pytrace=False)
    pytest.skip(message)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/node/" in str(item.path):
            item.add_marker(pytest.mark.node)


@pytest.fixture(scope="session")
def node() -> Iterator[Node]:
    reason = unavailable_reason()
    if reason is None and node_running():
        reason = "a node is already running on this machine (stop it with `make cluster-down`)"
    if reason is not None:
        _cannot_run(reason)
    install_runtime()
    began = time.monotonic()
    # Prints "built X in Ns" for each binary it has to build; a no-op when cached.
    subprocess.run(
        ["bash", str(REPO_ROOT / "hack" / "build-controlplane.sh"), "node"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    FIGURES["node binaries (build or cache)"] = f"{time.monotonic() - began:.1f} s"
    n = Node(bin_dir=ensure_binaries(), crd_dir=REPO_ROOT / "deployments" / "crd")
    try:
        n.start()
    except NodeUnavailable as e:
        _cannot_run(str(e))
    FIGURES["node start (all components, node Ready)"] = f"{n.start_seconds:.1f} s"
    warm_up_crd(n)
    try:
        yield n
    finally:
        n.stop()


# The integration tests' fixtures (namespaces, the operator as a process with its
# ServiceAccount's RBAC, the admin API client), here on top of the node.
from tests.integration.conftest import (  # noqa: E402
    api,
    kubectl,
    namespaces,
    operator,
    operator_kubeconfig,
    pytest_runtest_makereport,
)

__all__ = [
    "api",
    "kubectl",
    "namespaces",
    "operator",
    "operator_kubeconfig",
    "pytest_runtest_makereport",
]


@pytest.fixture(scope="session")
def control_plane(node: Node) -> Node:
    return node
