"""One real node (make node's launcher, in-process) for the node tests.

Where this machine cannot run a node (not root, no cgroups, ...) the tests are skipped
with one line saying why, except under CI=true: there that is a failure, so CI cannot
pass by skipping them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import FIGURES
from tests.integration.harness import warm_up_crd
from virtualservice_operator_dev.controlplane import REPO_ROOT, ensure_binaries
from virtualservice_operator_dev.node import (
    Node,
    install_runtime,
    node_running,
    unavailable_reason,
)


def cannot_run(reason: str) -> None:
    message = f"node tests cannot run here: {reason}"
    FIGURES["node tests"] = f"SKIPPED: {reason}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true: a skipped node test is a failure)", pytrace=False)
    pytest.skip(message)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks the node tests, and orders them on their one shared node: test_node.py first
    (its literal install wants a fresh node), then the other modules, and last the tests
    marked `node_last` (`make cluster-down`, which stops the node)."""

    def place(item: pytest.Item) -> int:
        if "tests/node/" not in str(item.path):
            return 0
        if item.get_closest_marker("node_last"):
            return 3
        return 1 if item.path.name == "test_node.py" else 2

    for item in items:
        if "tests/node/" in str(item.path):
            item.add_marker(pytest.mark.node)
    items.sort(key=place)  # stable: within a group, the collection order stays


def node_command(
    directory: Path,
    command: str,
    module: str = "virtualservice_operator_dev.node",
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """`python -m MODULE COMMAND --dir DIRECTORY`: what `make node`, `make mesh` and
    `make cluster-down` run."""
    return subprocess.run(
        [sys.executable, "-m", module, command, "--dir", str(directory)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session")
def node_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A node started as `make node` starts it (in the background), stopped at the end
    (test_node.py's last test stops it itself, as `make cluster-down` does)."""
    reason = unavailable_reason()
    if reason is None and node_running():
        reason = "a node is already running on this machine (stop it with `make cluster-down`)"
    if reason is not None:
        cannot_run(reason)
    began = time.monotonic()
    # Installs the runtime packages if missing; prints "built X in Ns" for each binary it
    # has to build (nothing when cached).
    install_runtime()
    subprocess.run(
        ["bash", str(REPO_ROOT / "hack" / "build-controlplane.sh"), "node"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    FIGURES["node runtime and binaries (install/build, or cached)"] = (
        f"{time.monotonic() - began:.1f} s"
    )
    directory = tmp_path_factory.mktemp("node")
    up = node_command(directory, "up")
    if up.returncode != 0:
        log = directory / "node.log"
        tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
        pytest.fail(f"make node failed: {up.stdout}{up.stderr}\n{tail}", pytrace=False)
    try:
        yield directory
    finally:
        node_command(directory, "down")


@pytest.fixture(scope="session")
def node(node_dir: Path) -> Node:
    state = json.loads((node_dir / "state.json").read_text())
    FIGURES["node start (every component, node Ready)"] = f"{state['start_seconds']:.1f} s"
    n = Node.attach(node_dir / "data", state["url"], bin_dir=ensure_binaries())
    n.install_crds(REPO_ROOT / "deployments" / "crd")
    warm_up_crd(n)
    return n


# The integration tests' fixtures (namespaces, the operator as a process with its
# ServiceAccount's RBAC, the admin API client), here on top of the node.
from tests.integration.conftest import (  # noqa: E402
    api,
    kubectl,
    namespaces,
    operator,
    pytest_runtest_makereport,
)

__all__ = ["api", "kubectl", "namespaces", "operator", "pytest_runtest_makereport"]


@pytest.fixture(scope="session")
def operator_kubeconfig(node: Node, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """As in the integration tests (the RBAC of deployments/deployment.yaml, a token of its
    ServiceAccount), without the Deployment: on a node it would run, and its operator would
    sweep the placeholders of the tests' operators. test_node.py installs it later."""
    manifest = (REPO_ROOT / "deployments" / "deployment.yaml").read_text()
    docs = [d for d in yaml.safe_load_all(manifest) if d and d["kind"] != "Deployment"]
    node.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    path = tmp_path_factory.mktemp("operator") / "operator.kubeconfig"
    return node.service_account_kubeconfig(
        "virtualservice-operator-system", "virtualservice-operator", path
    )


@pytest.fixture(scope="session")
def control_plane(node: Node) -> Node:
    return node
