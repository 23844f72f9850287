"""A node with Istio (`make mesh`, started as a user starts it) for the mesh tests, with the
operator installed by the README's lines and Istio's echo app as the workloads.

The mesh is started once for this package and stopped after its last test (the node
tests need the machine's one node next). Where this machine cannot run a node, the tests
are skipped with one line saying why, except under CI=true, where that is a failure.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FIGURES
from tests.integration.harness import wait_for
from tests.node.conftest import node_command
from virtualservice_operator_dev.controlplane import ensure_binaries
from virtualservice_operator_dev.echo import Answer, call
from virtualservice_operator_dev.install import install_with_istio, load_image, operator_image
from virtualservice_operator_dev.mesh import ECHO_GRPC_PORT
from virtualservice_operator_dev.node import Node, node_running, unavailable_reason

# deployments/config.yaml, the config the README's install applies.
DEFAULT_NS = "production"
DEVELOPER_NS = ("staging", "dev-team-a", "dev-team-b")


def cannot_run(reason: str) -> None:
    FIGURES["mesh tests"] = f"SKIPPED: {reason}"
    message = f"mesh tests cannot run here: {reason}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true: a skipped mesh test is a failure)", pytrace=False)
    pytest.skip(message)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/mesh/" in str(item.path):
            item.add_marker(pytest.mark.mesh)


@pytest.fixture(scope="package")
def mesh_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    reason = unavailable_reason()
    if reason is None and node_running():
        reason = "a node is already running on this machine (stop it with `make cluster-down`)"
    if reason is not None:
        cannot_run(reason)
    directory = tmp_path_factory.mktemp("mesh")
    began = time.monotonic()
    # `make mesh`: builds what is missing (each build's time on stderr), then starts it.
    up = node_command(directory, "up", "virtualservice_operator_dev.mesh", timeout=3600)
    sys.stderr.write(up.stderr)
    if up.returncode != 0:
        log = directory / "mesh.log"
        tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
        pytest.fail(f"make mesh failed: {up.stdout}{up.stderr}\n{tail}", pytrace=False)
    FIGURES["mesh builds and start (make mesh)"] = f"{time.monotonic() - began:.1f} s"
    try:
        yield directory
    finally:
        down = node_command(directory, "down")
        assert down.returncode == 0, down.stderr


@pytest.fixture(scope="package")
def mesh(mesh_dir: Path) -> Node:
    state = json.loads((mesh_dir / "state.json").read_text())
    FIGURES["mesh start (node, CoreDNS, Istio, webhook in force)"] = (
        f"{state['start_seconds']:.1f} s"
    )
    return Node.attach(mesh_dir / "data", state["url"], bin_dir=ensure_binaries())


@pytest.fixture(scope="package")
def installed(mesh: Node) -> Node:
    """The operator as a Pod from its image, by the README's install lines as written, the
    CRD line skipped (Istio's chart owns that CRD on a cluster with Istio)."""
    if not load_image(mesh):
        cannot_run(f"the operator's image {operator_image()} is not built: run `make image`")
    for name in (DEFAULT_NS, *DEVELOPER_NS):
        mesh.kubectl("create", "namespace", name)
    install_with_istio(mesh)
    return mesh


def routed_to(
    node: Node,
    client: tuple[str, str],
    host: str,
    want: str,
    *,
    port: int = ECHO_GRPC_PORT,
    headers: tuple[str, ...] = (),
    timeout: float = 60,
) -> list[Answer]:
    """Wait until 3 requests in a row are all answered by Pod `want` (istiod pushes a
    change a moment after the operator writes it); the answers."""

    def answered() -> list[Answer] | None:
        got = call(node, client, host, port=port, headers=headers, count=3)
        if isinstance(got, list) and got and all(a.pod == want for a in got):
            return got
        last[0] = got
        return None

    last: list[Any] = [None]
    try:
        return wait_for(answered, timeout, f"{host}:{port} {headers} -> {want}", interval=0.5)
    except AssertionError as e:
        raise AssertionError(f"{e}; last answer: {last[0]!r}") from None
