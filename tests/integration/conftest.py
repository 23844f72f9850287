"""One real control plane (etcd + kube-apiserver) for the whole session.

Each test gets fresh, uniquely named namespaces: without a namespace controller a deleted
namespace never goes away, so isolation is by name, not by deletion.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from virtualservice_operator.dev.controlplane import ControlPlane, ensure_binaries

_counter = itertools.count()


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    cp = ControlPlane(bin_dir=ensure_binaries())
    cp.start()
    # The warm-start figure the foundation issue asks to see in the test output.
    print(f"\ncontrol plane started in {cp.start_seconds:.2f}s at {cp.url}")
    os.environ["VSO_TEST_CONTROL_PLANE_PIDS"] = ",".join(str(p) for p in cp.pids())
    try:
        yield cp
    finally:
        cp.stop()


@dataclass
class Namespaces:
    """A fresh set of namespaces for one test: a default one and developer ones."""

    cp: ControlPlane
    suffix: str
    default: str
    developers: list[str] = field(default_factory=list)

    def create(self, *names: str) -> None:
        for name in names:
            self.cp.kubectl("create", "namespace", name)


@pytest.fixture
def namespaces(control_plane: ControlPlane) -> Namespaces:
    suffix = f"{next(_counter)}-{uuid.uuid4().hex[:5]}"
    ns = Namespaces(
        cp=control_plane,
        suffix=suffix,
        default=f"prod-{suffix}",
        developers=[f"staging-{suffix}", f"dev-a-{suffix}", f"dev-b-{suffix}"],
    )
    ns.create(ns.default, *ns.developers)
    return ns


@pytest.fixture
def kubectl(control_plane: ControlPlane):  # type: ignore[no-untyped-def]
    return control_plane.kubectl


@pytest.fixture
def tmp_kubeconfig_dir(tmp_path: Path) -> Path:
    return tmp_path
