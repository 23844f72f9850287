"""Faults survived, with nothing lost: each test breaks something real and checks that the
operator converges without a restart. docs/reliability.md lists every test here (a test
checks that the two agree)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import Namespaces, OperatorFactory
from tests.integration.faultproxy import FaultProxy
from tests.integration.harness import Api, wait_for, warm_up_crd
from virtualservice_operator_dev.controlplane import REPO_ROOT, ControlPlane, ensure_binaries

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fault_cp() -> Iterator[ControlPlane]:
    """A private control plane: these tests restart and compact it. No watch cache, so a
    watch from a compacted resourceVersion really gets 410 Gone from etcd."""
    cp = ControlPlane(bin_dir=ensure_binaries(), extra_apiserver_args=("--watch-cache=false",))
    cp.start()
    cp.kubectl("apply", "-f", str(REPO_ROOT / "deployments" / "deployment.yaml"))
    warm_up_crd(cp)
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture
def proxy(fault_cp: ControlPlane) -> Iterator[FaultProxy]:
    p = FaultProxy(fault_cp).start()
    try:
        yield p
    finally:
        p.stop()


_count = iter(range(10_000))


@pytest.fixture
def rig(
    fault_cp: ControlPlane, proxy: FaultProxy, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[OperatorFactory]:
    """The operator factory of test_core, on the private control plane, through the proxy."""
    suffix = f"r{next(_count)}"
    ns = Namespaces(
        cp=fault_cp,
        suffix=suffix,
        default=f"prod-{suffix}",
        developers=[f"dev-a-{suffix}", f"dev-b-{suffix}"],
    )
    ns.create(ns.default, *ns.developers)
    direct = fault_cp.service_account_kubeconfig(
        "virtualservice-operator-system", "virtualservice-operator", tmp_path / "sa.kubeconfig"
    )
    via_proxy = tmp_path / "sa-proxy.kubeconfig"
    via_proxy.write_text(proxy.kubeconfig(direct.read_text()))
    factory = OperatorFactory(fault_cp, Api(fault_cp), via_proxy, tmp_path, ns)
    yield factory
    factory.stop_all(request, log_tail=8000)


def _routes(api: Api, ns: str, name: str) -> int:
    vs = api.vs(ns, f"{name}-virtual-service")
    return len(vs["spec"].get("http") or []) if vs else -1


FAST = ["-watch-idle-timeout=3s"]


def test_apiserver_killed_and_restarted_mid_convergence(
    rig: OperatorFactory, fault_cp: ControlPlane
) -> None:
    api, ns = rig.api, rig.namespaces
    for i in range(30):
        api.create_service(ns.default, f"k{i}")
    proc = rig.start(rig.config(placeholders=True), extra_args=FAST)
    wait_for(lambda: api.vs(ns.default, "k0-virtual-service"), what="convergence under way")
    fault_cp.stop_apiserver(kill=True)
    fault_cp.start_apiserver()
    api.create_service(ns.default, "after")  # a change after the restart
    for i in range(30):
        wait_for(lambda i=i: api.vs(ns.default, f"k{i}-virtual-service"), timeout=60, what=f"k{i}")
        wait_for(
            lambda i=i: api.service(ns.developers[1], f"k{i}"), timeout=60, what=f"placeholder k{i}"
        )
    wait_for(
        lambda: api.vs(ns.default, "after-virtual-service"),
        timeout=60,
        what="change after restart seen",
    )
    assert proc.proc is not None and proc.proc.poll() is None


def test_watch_gone_after_compaction_relists_and_misses_nothing(
    rig: OperatorFactory, fault_cp: ControlPlane, proxy: FaultProxy
) -> None:
    import json
    import urllib.request

    api, ns = rig.api, rig.namespaces
    api.create_service(ns.default, "g1")
    api.create_service(ns.default, "g2")
    proc = rig.start(rig.config(placeholders=True), extra_args=FAST)
    wait_for(lambda: api.vs(ns.default, "g2-virtual-service"), what="converged")
    # Disconnect the operator's watches (connections frozen), change things meanwhile,
    # then compact etcd past the versions the operator knows: its re-watch gets 410.
    proxy.freeze()
    api.delete_service(ns.default, "g1")  # a delete the operator must not miss
    api.create_service(ns.default, "g3")
    api.create_service(ns.developers[0], "g3")
    with urllib.request.urlopen(
        f"{fault_cp.etcd_url}/v3/kv/range", data=json.dumps({"key": "Lw=="}).encode(), timeout=10
    ) as r:
        revision = int(json.loads(r.read())["header"]["revision"])
    with urllib.request.urlopen(
        f"{fault_cp.etcd_url}/v3/kv/compaction",
        data=json.dumps({"revision": revision, "physical": True}).encode(),
        timeout=10,
    ) as r:
        assert r.status == 200
    wait_for(
        lambda: api.vs(ns.default, "g1-virtual-service") is None,
        timeout=30,
        what="g1 VirtualService removed",
    )
    wait_for(
        lambda: all(api.service(d, "g1") is None for d in ns.developers[1:]),
        timeout=30,
        what="g1 placeholder removed",
    )
    wait_for(lambda: api.vs(ns.default, "g3-virtual-service"), timeout=30, what="g3 created")
    wait_for(lambda: _routes(api, ns.default, "g3") == 2, timeout=30, what="g3 route")
    assert "relisting" in proc.logs()


def test_silent_watch_is_detected_and_reestablished(
    rig: OperatorFactory, proxy: FaultProxy
) -> None:
    api, ns = rig.api, rig.namespaces
    api.create_service(ns.default, "s1")
    rig.start(rig.config(), extra_args=FAST)
    wait_for(lambda: api.vs(ns.default, "s1-virtual-service"), what="converged")
    proxy.freeze()  # every open stream goes silent; nothing is closed
    frozen_at = time.monotonic()
    api.create_service(ns.default, "s2")
    wait_for(
        lambda: api.vs(ns.default, "s2-virtual-service"),
        timeout=40,
        what="change seen through a new watch",
    )
    took = time.monotonic() - frozen_at
    print(f"\nchange delivered {took:.1f}s after the watches went silent (idle timeout 3s)")
    assert took < 35


def test_sigkill_mid_convergence_then_restart_converges_without_duplicates(
    rig: OperatorFactory,
) -> None:
    api, ns = rig.api, rig.namespaces
    for i in range(40):
        api.create_service(ns.default, f"p{i}")
    proc = rig.start(rig.config(placeholders=True), extra_args=FAST)
    wait_for(lambda: api.vs(ns.default, "p3-virtual-service"), what="convergence under way")
    proc.kill()
    api.delete_service(ns.default, "p0")
    rig.start(write_config=False, extra_args=FAST)
    for i in range(1, 40):
        wait_for(
            lambda i=i: (
                api.vs(ns.default, f"p{i}-virtual-service")
                and all(api.service(d, f"p{i}") for d in ns.developers)
            ),
            timeout=60,
            what=f"p{i} converged",
        )
    wait_for(
        lambda: (
            api.vs(ns.default, "p0-virtual-service") is None
            and all(api.service(d, "p0") is None for d in ns.developers)
        ),
        what="p0 gone",
    )
    vss = api.get(f"/apis/networking.istio.io/v1/namespaces/{ns.default}/virtualservices")["items"]
    assert len(vss) == 39, [v["metadata"]["name"] for v in vss]


@pytest.mark.parametrize("status", [429, 500])
def test_api_errors_back_off_and_converge(
    rig: OperatorFactory, proxy: FaultProxy, status: int
) -> None:
    api, ns = rig.api, rig.namespaces
    proc = rig.start(rig.config(placeholders=True), extra_args=FAST)
    proxy.fail(status, count=25, methods=("POST", "PUT", "PATCH", "DELETE"))
    for i in range(5):
        api.create_service(ns.default, f"e{i}")
    for i in range(5):
        wait_for(
            lambda i=i: (
                api.vs(ns.default, f"e{i}-virtual-service")
                and all(api.service(d, f"e{i}") for d in ns.developers)
            ),
            timeout=60,
            what=f"e{i}",
        )
    assert proxy.injected == 25
    assert proc.metric("controller_runtime_reconcile_errors_total") >= 1
    assert proc.metric("rest_client_requests_total", code=str(status)) >= 1
    assert proc.proc is not None and proc.proc.poll() is None


def test_burst_of_changes_is_deduplicated(rig: OperatorFactory) -> None:
    api, ns = rig.api, rig.namespaces
    api.create_service(ns.default, "hot")
    proc = rig.start(rig.config(), extra_args=FAST)
    wait_for(lambda: api.vs(ns.default, "hot-virtual-service"), what="converged")
    rss_before = proc.metric("process_resident_memory_bytes")
    path = f"/api/v1/namespaces/{ns.default}/services/hot"

    def churn(worker: int) -> None:
        for i in range(250):  # 4 threads x 250 = 1,000 changes
            api.cp.api(
                "PATCH",
                path,
                {"metadata": {"labels": {f"w{worker}": str(i)}}},
                "application/merge-patch+json",
            )

    started = time.monotonic()
    threads = [threading.Thread(target=churn, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"\n1,000 changes sent in {time.monotonic() - started:.1f}s")
    api.create_service(ns.developers[0], "hot")
    wait_for(lambda: _routes(api, ns.default, "hot") == 2, timeout=30, what="end state right")
    reconciles = proc.metric("controller_runtime_reconcile_total")
    adds = proc.metric("workqueue_adds_total")
    print(f"reconciles: {reconciles:.0f} for ~1,000 events; queue adds: {adds:.0f}")
    assert reconciles < 1000
    rss_after = proc.metric("process_resident_memory_bytes")
    assert rss_after < rss_before + 50 * 2**20, (rss_before, rss_after)


def test_reliability_doc_lists_every_test() -> None:
    doc = (REPO_ROOT / "docs" / "reliability.md").read_text()
    names = [
        n
        for n in globals()
        if n.startswith("test_") and n != "test_reliability_doc_lists_every_test"
    ]
    missing = [n for n in names if f"`{n}`" not in doc]
    assert not missing, f"docs/reliability.md does not mention: {missing}"
