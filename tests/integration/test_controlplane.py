"""The local control plane is real: RBAC on, CRDs installed, schemas enforced."""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import Namespaces
from virtualservice_operator_dev.controlplane import ControlPlane

pytestmark = pytest.mark.integration


def _vs(name: str, ns: str, api_version: str, host: str) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": f"networking.istio.io/{api_version}",
            "kind": "VirtualService",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "hosts": [host],
                "http": [
                    {
                        "name": "dev",
                        "match": [{"headers": {"x-developer": {"exact": "dev"}}, "port": 8080}],
                        "route": [
                            {
                                "destination": {
                                    "host": f"{host}.dev.svc.cluster.local",
                                    "port": {"number": 8080},
                                }
                            }
                        ],
                    },
                    {
                        "route": [
                            {
                                "destination": {"host": f"{host}.{ns}.svc.cluster.local"},
                                "weight": 100,
                            }
                        ]
                    },
                ],
            },
        }
    )


def test_service_round_trip(namespaces: Namespaces, control_plane: ControlPlane) -> None:
    ns = namespaces.default
    control_plane.kubectl("create", "service", "clusterip", "web", "--tcp=80:8080", "-n", ns)
    out = control_plane.kubectl("get", "service", "web", "-n", ns, "-o", "yaml").stdout
    svc = yaml.safe_load(out)
    assert svc["spec"]["ports"][0]["port"] == 80
    assert ipaddress.ip_address(svc["spec"]["clusterIP"]) in ipaddress.ip_network("10.0.0.0/16")


@pytest.mark.parametrize("api_version", ["v1beta1", "v1", "v1alpha3"])
def test_virtual_service_each_served_version(
    namespaces: Namespaces, control_plane: ControlPlane, api_version: str
) -> None:
    ns = namespaces.default
    name = f"web-{api_version}"
    control_plane.kubectl("apply", "-f", "-", input=_vs(name, ns, api_version, "web"))
    got = yaml.safe_load(
        control_plane.kubectl(
            "get",
            f"virtualservices.{api_version}.networking.istio.io",
            name,
            "-n",
            ns,
            "-o",
            "yaml",
        ).stdout
    )
    assert got["spec"]["http"][0]["match"][0]["headers"]["x-developer"] == {"exact": "dev"}
    # The short name from the CRD works, as the guide's `kubectl get virtualservice` does.
    assert name in control_plane.kubectl("get", "vs", "-n", ns).stdout


@pytest.mark.parametrize(
    ("patch", "complaint"),
    [
        ({"hosts": "not-a-list"}, "spec.hosts"),
        ({"hosts": ["a"], "http": [{"route": [{"destination": {"subset": "v1"}}]}]}, "host"),
        (
            {
                "hosts": ["a"],
                "http": [{"route": [{"destination": {"host": "a", "port": {"number": "x"}}}]}],
            },
            "number",
        ),
    ],
)
def test_schema_violation_is_rejected(
    namespaces: Namespaces, control_plane: ControlPlane, patch: dict, complaint: str
) -> None:
    body = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "bad", "namespace": namespaces.default},
        "spec": patch,
    }
    result = control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(body), check=False)
    assert result.returncode != 0
    assert complaint in result.stderr


def test_rbac_is_enforced_and_service_account_kubeconfig_works(
    namespaces: Namespaces, control_plane: ControlPlane, tmp_path: Path
) -> None:
    ns = namespaces.default
    control_plane.kubectl("create", "serviceaccount", "nobody", "-n", ns)
    kubeconfig = control_plane.service_account_kubeconfig(ns, "nobody", tmp_path / "sa.kubeconfig")
    denied = control_plane.kubectl("get", "services", "-n", ns, kubeconfig=kubeconfig, check=False)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower()
    assert f"system:serviceaccount:{ns}:nobody" in denied.stderr

    control_plane.kubectl(
        "create", "role", "reader", "--verb=get,list", "--resource=services", "-n", ns
    )
    control_plane.kubectl(
        "create",
        "rolebinding",
        "reader",
        "--role=reader",
        f"--serviceaccount={ns}:nobody",
        "-n",
        ns,
    )
    allowed = control_plane.kubectl("get", "services", "-n", ns, kubeconfig=kubeconfig)
    assert allowed.returncode == 0
    # Still nothing beyond what the Role grants.
    assert (
        control_plane.kubectl(
            "get", "configmaps", "-n", ns, kubeconfig=kubeconfig, check=False
        ).returncode
        != 0
    )


def test_warm_start_is_fast_and_stop_leaves_nothing(control_plane: ControlPlane) -> None:
    # A second, private control plane: started and stopped here, timed.
    with ControlPlane(bin_dir=control_plane.bin_dir) as cp:
        pids = cp.pids()
        assert cp.start_seconds < 30, f"warm start took {cp.start_seconds:.1f}s"
        print(f"\nwarm control-plane start: {cp.start_seconds:.2f}s")
        work_dir = cp.work_dir
    for pid in pids:
        assert not _alive(pid), f"process {pid} still running after stop()"
    assert not work_dir.exists()


def test_extra_etcd_args_reach_etcd(control_plane: ControlPlane) -> None:
    """The benchmark's --server-profile-seconds reads etcd's /debug/pprof, which only
    `--enable-pprof=true` serves: the shared control plane has none."""
    index = "/debug/pprof/"
    assert _etcd_status(control_plane, index) == 404
    with ControlPlane(
        bin_dir=control_plane.bin_dir, istio_crds=(), extra_etcd_args=("--enable-pprof=true",)
    ) as cp:
        assert _etcd_status(cp, index) == 200


def _etcd_status(cp: ControlPlane, path: str) -> int:
    try:
        with urllib.request.urlopen(cp.etcd_url + path, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as e:
        return e.code


def test_children_die_when_owner_is_killed(control_plane: ControlPlane, tmp_path: Path) -> None:
    """SIGKILL the process that started a control plane: etcd and kube-apiserver must go too."""
    pid_file = tmp_path / "pids"
    # Its work folder here: the killed owner never removes one of its own (etcd's data).
    work = tmp_path / "cp"
    work.mkdir()
    script = textwrap.dedent(
        f"""
        import pathlib, time
        from virtualservice_operator_dev.controlplane import ControlPlane
        cp = ControlPlane(
            bin_dir=pathlib.Path({str(control_plane.bin_dir)!r}),
            work_dir=pathlib.Path({str(work)!r}),
            istio_crds=(),
        )
        cp.start()
        pathlib.Path({str(pid_file)!r}).write_text(",".join(map(str, cp.pids())))
        time.sleep(600)
        """
    )
    owner = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists() or not pid_file.read_text():
            assert owner.poll() is None, "owner exited early"
            assert time.monotonic() < deadline, "control plane did not start"
            time.sleep(0.1)
        pids = [int(p) for p in pid_file.read_text().split(",")]
        assert all(_alive(p) for p in pids)
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    deadline = time.monotonic() + 20
    while any(_alive(p) for p in pids):
        assert time.monotonic() < deadline, f"orphans left: {[p for p in pids if _alive(p)]}"
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    # A zombie (exited, not yet reaped by its parent) is not running.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False
