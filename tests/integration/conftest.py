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
import yaml

from tests.conftest import FIGURES
from tests.integration.harness import warm_up_crd
from virtualservice_operator_dev.controlplane import ControlPlane, ensure_binaries

_counter = itertools.count()


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    cp = ControlPlane(bin_dir=ensure_binaries())
    cp.start()
    # The warm-start figure the foundation issue asks to see in the test output.
    print(f"\ncontrol plane started in {cp.start_seconds:.2f}s at {cp.url}")
    FIGURES["control plane start (etcd + kube-apiserver + CRD, binaries cached)"] = (
        f"{cp.start_seconds:.2f} s"
    )
    warm_up_crd(cp)
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


# -- the operator under test ------------------------------------------------------------

from tests.integration.harness import OPERATOR_NS, Api, OperatorProcess  # noqa: E402
from virtualservice_operator_dev.controlplane import REPO_ROOT  # noqa: E402


@pytest.fixture(scope="session")
def operator_kubeconfig(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Install deployments/deployment.yaml (RBAC included) and return a kubeconfig holding
    only the operator ServiceAccount's token: the operator runs with exactly that RBAC."""
    control_plane.kubectl("apply", "-f", str(REPO_ROOT / "deployments" / "deployment.yaml"))
    path = tmp_path_factory.mktemp("operator") / "operator.kubeconfig"
    return control_plane.service_account_kubeconfig(
        "virtualservice-operator-system", "virtualservice-operator", path
    )


@pytest.fixture
def api(control_plane: ControlPlane) -> Api:
    return Api(control_plane)


@dataclass
class OperatorFactory:
    cp: ControlPlane
    api: Api
    kubeconfig: Path
    tmp: Path
    namespaces: Namespaces
    started: list[OperatorProcess] = field(default_factory=list)

    def config(self, placeholders: bool = False, **extra: object) -> dict[str, object]:
        cfg: dict[str, object] = {
            "defaultNamespace": self.namespaces.default,
            "developerNamespaces": list(self.namespaces.developers),
            "enablePlaceholderServices": placeholders,
        }
        cfg.update(extra)
        return cfg

    @property
    def config_map(self) -> str:
        return f"vso-config-{self.namespaces.suffix}"

    @property
    def instance(self) -> str:
        """The operator's identity: by default its ConfigMap's namespace.name."""
        return f"{OPERATOR_NS}.{self.config_map}"

    def ours(self, **labels: str) -> dict[str, str]:
        """Labels of an object this test's operator made (with `labels` besides)."""
        return {"virtualservice-operator/instance": self.instance, **labels}

    def start(
        self,
        config: dict[str, object] | str | None = None,
        *,
        extra_args: list[str] | None = None,
        wait_ready: bool = True,
        write_config: bool = True,
    ) -> OperatorProcess:
        if write_config:
            self.api.write_config(self.config_map, config if config is not None else self.config())
        proc = OperatorProcess(
            self.cp,
            self.kubeconfig,
            self.config_map,
            self.tmp / f"operator-{len(self.started)}.log",
            extra_args,
        )
        self.started.append(proc)
        return proc.start(wait_ready=wait_ready)

    def stop_all(self, request: pytest.FixtureRequest, log_tail: int = 6000) -> None:
        """Stop every operator started; if the test failed, print the end of each log."""
        for proc in self.started:
            proc.stop()
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            for proc in self.started:
                print(f"\n--- operator log {proc.log_path} ---\n{proc.logs()[-log_tail:]}")


@pytest.fixture
def operator(
    control_plane: ControlPlane,
    api: Api,
    operator_kubeconfig: Path,
    namespaces: Namespaces,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[OperatorFactory]:
    factory = OperatorFactory(control_plane, api, operator_kubeconfig, tmp_path, namespaces)
    yield factory
    factory.stop_all(request)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


# -- the Prometheus Operator's kinds ----------------------------------------------------


@pytest.fixture(scope="session")
def monitoring_crds(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Stand-ins for the Prometheus Operator's ServiceMonitor and PrometheusRule CRDs."""
    directory = tmp_path_factory.mktemp("monitoring-crds")
    for kind, plural in (
        ("ServiceMonitor", "servicemonitors"),
        ("PrometheusRule", "prometheusrules"),
    ):
        crd = {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.monitoring.coreos.com"},
            "spec": {
                "group": "monitoring.coreos.com",
                "names": {
                    "kind": kind,
                    "listKind": f"{kind}List",
                    "plural": plural,
                    "singular": kind.lower(),
                },
                "scope": "Namespaced",
                "versions": [
                    {
                        "name": "v1",
                        "served": True,
                        "storage": True,
                        "schema": {
                            "openAPIV3Schema": {
                                "type": "object",
                                "properties": {
                                    "spec": {
                                        "type": "object",
                                        "x-kubernetes-preserve-unknown-fields": True,
                                    }
                                },
                            }
                        },
                    }
                ],
            },
        }
        (directory / f"{plural}.yaml").write_text(yaml.safe_dump(crd))
    control_plane.install_crds(directory)
