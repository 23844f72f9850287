"""High availability, shutdown, memory and Helm, with the operator as a Pod of its own image
on the real node: what a process on an API server alone cannot show.

1. Two replicas: both Ready (/readyz does not wait for the Lease), one holds the Lease
   and writes, the other stands by; deleting the leader's Pod hands the Lease over (the
   node cordoned meanwhile, so that the Deployment's replacement cannot race the standby).
2. `kubectl rollout restart` under churn: the old Pod's SIGTERM releases the Lease and
   exits 0, the new Pod leads, and the world ends exactly as the config says.
3. The bench's scale M converged by the Pod within its 256Mi limit, the peak read from
   the container's memory cgroup, then a new Pod's restart on it: its peak, no writes
   (`make bench-node SCALES=XL`: the same at XL).
4. The chart: install, `helm test` (its Pod run by the kubelet), upgrade (a config value
   reloaded live, a Pod value rolled out), uninstall (nothing of the release left; what
   the operator made stays, as docs/uninstall.md says).

One manifest install (deployments/) serves tests 1-3; it is scaled to 0 before the Helm
release (another instance, in other namespaces) and at the end.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from bench.core import SCALES, config_text, dev_namespaces_for, service_body, service_names

from tests.conftest import FIGURES
from tests.integration.harness import OPERATOR_NS, Api, sample_sum, wait_for
from tests.node.conftest import cannot_run
from tests.node.world import (
    Diff,
    Sampler,
    Watch,
    config_for,
    container_cgroup,
    create_all,
    differences,
    http_get,
    json_of,
    live,
    memory_files,
    ready,
    scrape,
    shipped_config,
)
from virtualservice_operator.domain.constants import EXCLUDE_LABEL, INSTANCE_LABEL, LEASE_NAME
from virtualservice_operator.domain.instance import DEFAULT_INSTANCE, default_instance
from virtualservice_operator_dev.controlplane import REPO_ROOT
from virtualservice_operator_dev.install import load_image
from virtualservice_operator_dev.node import NODE_NAME, Node

NS = OPERATOR_NS
DEPLOYMENT = "deployment/virtualservice-operator"
PODS = f"/api/v1/namespaces/{NS}/pods?labelSelector=app%3Dvirtualservice-operator"
LEASE_PATH = f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/{LEASE_NAME}"
LIMIT = 256 * 1024 * 1024  # the Deployment's memory limit
CONFIG = config_for(shipped_config(), DEFAULT_INSTANCE)
OURS = {"virtualservice-operator-test": "ha-on-node"}  # on the Services this module makes
PROD = CONFIG.default_namespace
DEVS = list(CONFIG.developer_namespaces)


def _image() -> str:
    doc = next(
        d
        for d in yaml.safe_load_all((REPO_ROOT / "deployments" / "deployment.yaml").read_text())
        if d and d["kind"] == "Deployment"
    )
    return str(doc["spec"]["template"]["spec"]["containers"][0]["image"])


def _ensure_image(node: Node) -> None:
    """The image `make image` built, imported into the node's containerd: always when the
    archive is there, since containerd keeps images across nodes and the same tag may be
    an older build."""
    if not load_image(node):
        cannot_run(f"the operator's image {_image()} is not loaded: run `make image` first")


def _ensure_namespace(node: Node, api: Api, name: str) -> None:
    if api.get(f"/api/v1/namespaces/{name}") is None:
        node.kubectl("create", "namespace", name)


def _pods(api: Api) -> list[dict[str, Any]]:
    return live(api.get(PODS)["items"])


def _holder(api: Api) -> str:
    """The Pod named by the Lease's holder (the operator's identity is POD_NAME_<random>)."""
    lease = api.get(LEASE_PATH)
    holder = str(((lease or {}).get("spec") or {}).get("holderIdentity") or "")
    return holder.rsplit("_", 1)[0]


def _scale(node: Node, api: Api, replicas: int) -> list[dict[str, Any]]:
    """Scale the manifest install and wait until exactly `replicas` Pods are Ready and no
    other Pod of it remains (terminating ones included); with replicas, one leads."""
    # The guide's form, literally.
    node.kubectl(
        "scale", "deployment", "virtualservice-operator", f"--replicas={replicas}", "-n", NS
    )

    def settled() -> list[dict[str, Any]] | bool:
        every = api.get(PODS)["items"]
        pods = live(every)
        if len(every) != replicas or not all(ready(p) for p in pods):
            return False
        if replicas and _holder(api) not in {p["metadata"]["name"] for p in pods}:
            return False
        return pods or True

    got = wait_for(settled, 180, f"{replicas} operator Pod(s) Ready, one leading", interval=0.5)
    return got if isinstance(got, list) else []


def _body(namespace: str, name: str, i: int) -> dict[str, Any]:
    """The bench's Service, with the label that lets the module remove its own at the end."""
    body = service_body(namespace, name, i)
    body["metadata"]["labels"].update(OURS)
    return body


def _metric(pod: dict[str, Any], metric: str, /, **labels: str) -> float:
    return sample_sum(scrape(pod), metric, **labels)


def _leading(pod: dict[str, Any]) -> bool:
    return _metric(pod, "leader_election_master_status", name=LEASE_NAME) == 1


@pytest.fixture(scope="module")
def api(node: Node) -> Api:
    return Api(node)


@pytest.fixture(scope="module")
def manifests(node: Node, api: Api) -> Iterator[Node]:
    """The manifest install (deployments/, as the README applies it), one Pod leading;
    scaled to 0 and its shipped config restored at the end."""
    _ensure_image(node)
    for name in (NS, PROD, *DEVS):
        _ensure_namespace(node, api, name)
    for path in ("config.yaml", "deployment.yaml"):
        node.kubectl("apply", "-f", str(REPO_ROOT / "deployments" / path))
    _scale(node, api, 1)
    try:
        yield node
    finally:
        # The module's Services go, and with the operator running, all it made for them:
        # the namespaces are as the module found them.
        node.kubectl("apply", "-f", str(REPO_ROOT / "deployments" / "config.yaml"))
        for ns in (PROD, *DEVS):
            selector = ",".join(f"{k}={v}" for k, v in OURS.items())
            node.kubectl("delete", "services", "-n", ns, "-l", selector)
        _scale(node, api, 1)
        wait_for(lambda: differences(node, CONFIG).in_line, 120, "the operator's objects gone")
        node.kubectl("scale", DEPLOYMENT, "-n", NS, "--replicas=0")
        wait_for(lambda: not api.get(PODS)["items"], 120, "operator Pods gone", interval=0.5)


def test_two_replicas_one_leads_the_standby_takes_over(manifests: Node, api: Api) -> None:
    node = manifests
    pods = _scale(node, api, 2)
    leader_name = _holder(api)
    leader = next(p for p in pods if p["metadata"]["name"] == leader_name)
    standby = next(p for p in pods if p["metadata"]["name"] != leader_name)
    standby_name = standby["metadata"]["name"]
    table = node.kubectl("get", "lease", "-n", NS).stdout  # the guide's look at the Lease
    assert LEASE_NAME in table and leader_name in table, table
    # The standby is Ready: /readyz asks for a loaded config and synced caches, not the Lease.
    assert http_get(f"http://{standby['status']['podIP']}:8081/readyz")[0] == 200

    api.create_service(PROD, "ha-one", labels=OURS)
    wait_for(lambda: api.vs(PROD, "ha-one-virtual-service"), 60, "VirtualService of ha-one")
    for dev in DEVS:
        wait_for(lambda dev=dev: api.service(dev, "ha-one"), 60, f"placeholder in {dev}")
    assert _leading(leader) and not _leading(standby)
    # The object is on the server a moment before its writer counts the answer.
    wait_for(
        lambda: _metric(leader, "virtualservice_operator_writes_total") >= 1 + len(DEVS),
        30,
        "the leader counts its writes",
    )
    # The standby has read everything (its caches are synced) and written nothing.
    assert _metric(standby, "virtualservice_operator_writes_total") == 0
    assert _metric(standby, "controller_runtime_reconcile_total") == 0
    assert _metric(standby, "rest_client_requests_total", method="POST") == 0
    assert _metric(standby, "rest_client_requests_total", method="DELETE") == 0

    # Cordoned, the node runs no new Pod: the Deployment's replacement for the deleted
    # leader waits (Pending) instead of racing the standby for the Lease.
    node.kubectl("cordon", NODE_NAME)
    try:
        began = time.monotonic()
        node.kubectl("delete", "pod", leader_name, "-n", NS, "--wait=false")
        wait_for(
            lambda: _holder(api) == standby_name, 60, "the standby holds the Lease", interval=0.05
        )
        handover = time.monotonic() - began
    finally:
        node.kubectl("uncordon", NODE_NAME)
    FIGURES["leader hand-over on the node (delete the leader's Pod → standby holds the Lease)"] = (
        f"{handover:.2f} s"
    )
    assert _leading(standby)
    api.create_service(PROD, "ha-two", labels=OURS)
    wait_for(lambda: api.vs(PROD, "ha-two-virtual-service"), 60, "the new leader works")
    wait_for(
        lambda: _metric(standby, "virtualservice_operator_writes_total") >= 1,
        30,
        "the new leader counts its writes",
    )
    # The replacement, started now, stands by: the Lease stays where it is.
    pods = _scale(node, api, 2)
    assert _holder(api) == standby_name
    newcomer = next(p for p in pods if p["metadata"]["name"] != standby_name)
    assert not _leading(newcomer)


class Churn(threading.Thread):
    """Creates, deletes and relabels Services in the default and developer namespaces,
    about ten changes a second, until stopped. Failures (a name changed meanwhile, a
    placeholder not there yet) are fine: the end state is judged from the Services as
    they end up, whatever they are."""

    def __init__(self, api: Api, names: list[str]) -> None:
        super().__init__(daemon=True)
        self.api, self.names = api, list(names)
        self.rng = random.Random(11)
        self.done: list[float] = []  # when each accepted change was acknowledged
        self._halt = threading.Event()
        self._added = 0

    def run(self) -> None:
        while not self._halt.wait(0.05):
            status = self._one()
            if 200 <= status < 300:
                self.done.append(time.monotonic())

    def _one(self) -> int:
        api, rng = self.api, self.rng
        kind = rng.choice(("add", "delete", "exclude", "include", "dev_add", "dev_remove"))
        name = rng.choice(self.names)
        if kind == "add":
            self._added += 1
            new = f"rr-new-{self._added:04d}"
            self.names.append(new)
            status, _ = api.cp.api(
                "POST", f"/api/v1/namespaces/{PROD}/services", _body(PROD, new, 0)
            )
            return int(status)
        if kind == "delete":
            return api.delete_service(PROD, name)
        if kind in ("exclude", "include"):
            value = "true" if kind == "exclude" else None
            status, _ = api.cp.api(
                "PATCH",
                f"/api/v1/namespaces/{PROD}/services/{name}",
                {"metadata": {"labels": {EXCLUDE_LABEL: value}}},
                "application/merge-patch+json",
            )
            return int(status)
        dev = rng.choice(DEVS)
        if kind == "dev_remove":
            current = api.service(dev, name)
            if current is None or current["spec"].get("type") == "ExternalName":
                return 0  # only a team's own Service, never the operator's placeholder
            return api.delete_service(dev, name)
        status, _ = api.cp.api("POST", f"/api/v1/namespaces/{dev}/services", _body(dev, name, 0))
        return int(status)  # 409 where the placeholder (or a Service) is there

    def stop(self) -> None:
        self._halt.set()
        self.join()


def test_rollout_restart_under_churn_loses_nothing(manifests: Node, api: Api) -> None:
    node = manifests
    (old,) = _scale(node, api, 1)
    old_name = old["metadata"]["name"]
    names = [f"rr-{i:03d}" for i in range(40)]
    # The teams' own Services first: else the operator's placeholders would take the names.
    create_all(
        node,
        [(d, _body(d, n, i)) for i, n in enumerate(names) for d in dev_namespaces_for(i, DEVS)],
    )
    create_all(node, [(PROD, _body(PROD, n, i)) for i, n in enumerate(names)])
    wait_for(lambda: differences(node, CONFIG).in_line, 120, "the world in line", interval=1)

    lease_watch = Watch(node, "lease", LEASE_NAME, "-n", NS)
    pod_watch = Watch(node, "pods", "-n", NS, "-l", "app=virtualservice-operator")
    churn = Churn(api, names)
    try:
        churn.start()
        wait_for(lambda: len(churn.done) >= 10, 30, "churn under way")
        restarted = time.monotonic()
        node.kubectl("rollout", "restart", DEPLOYMENT, "-n", NS)
        node.kubectl("rollout", "status", DEPLOYMENT, "-n", NS, "--timeout=180s", timeout=200)
        # The old Pod ends after the rollout says done: keep churning until it is gone.
        wait_for(
            lambda: any(
                t == "DELETED" and o["metadata"]["name"] == old_name for t, o in pod_watch.events
            ),
            120,
            "the old Pod deleted",
            interval=0.2,
        )
        ended = time.monotonic()
    finally:
        churn.stop()
        pod_watch.stop()
    during = [t for t in churn.done if restarted <= t <= ended]
    FIGURES["changes acknowledged during the rollout restart"] = (
        f"{len(during)} of {len(churn.done)} in {ended - restarted:.1f} s"
    )
    assert len(during) >= 20, "the churn did not span the restart"

    def lease_pods() -> list[str]:
        return [
            str(o["spec"].get("holderIdentity") or "").rsplit("_", 1)[0]
            for o in lease_watch.objects()
        ]

    try:
        (new,) = _scale(node, api, 1)
        new_name = new["metadata"]["name"]
        assert new_name != old_name and _holder(api) == new_name
        wait_for(lambda: lease_pods()[-1:] == [new_name], 30, "the new holder on the watch")
    finally:
        lease_watch.stop()

    # The old Pod's container: terminated by the SIGTERM, exit code 0.
    old_states = [
        s["state"]["terminated"]
        for o in pod_watch.objects()
        if o["metadata"]["name"] == old_name
        for s in (o.get("status") or {}).get("containerStatuses") or []
        if "terminated" in (s.get("state") or {})
    ]
    assert old_states, "the old Pod's container was never seen terminated"
    assert old_states[-1]["exitCode"] == 0, old_states[-1]
    # The Lease went old Pod -> released ("") -> new Pod: handed back, not left to expire.
    pods = lease_pods()
    holders = [str(o["spec"].get("holderIdentity") or "") for o in lease_watch.objects()]
    assert old_name in pods, holders
    after_old = pods[len(pods) - 1 - pods[::-1].index(old_name) :]
    assert after_old[1:3] == ["", new_name], f"the old Pod did not release the Lease: {holders}"

    last: list[Diff] = []

    def converged() -> bool:
        last[:] = [differences(node, CONFIG)]
        return last[0].in_line

    try:
        wait_for(converged, 120, "every VirtualService and placeholder as desired", interval=1)
    except AssertionError:
        raise AssertionError(f"not in line after the restart: {last[0]}") from None
    FIGURES["objects in line after the rollout restart under churn"] = str(last[0].expected)
    assert new["status"]["containerStatuses"][0]["restartCount"] == 0


# `make test` converges M; `make bench-node SCALES=XL` the same test at XL (not in the
# suite: about 210,000 Services), its figures also written to VSO_NODE_RESULTS.
NODE_SCALE = SCALES[os.environ.get("VSO_NODE_SCALE", "M")]
SCALE_DEFAULT = f"{NODE_SCALE.name.lower()}-prod"
SCALE_DEVS = [f"{NODE_SCALE.name.lower()}-dev{j}" for j in range(NODE_SCALE.dev_namespaces)]
WRITTEN = ("services", "virtualservices")
# Deadlines grow with the objects (M: 5,500; XL: 210,000) and the Pod's 0.5 CPU.
SCALE_OBJECTS = NODE_SCALE.services * (1 + NODE_SCALE.dev_namespaces)
SCALE_WITHIN = 240 * max(1.0, SCALE_OBJECTS / 5500)


def _started(api: Api, after: set[str]) -> dict[str, Any]:
    """The one live operator Pod not named in `after`, once its container runs ({} before)."""
    pods = [p for p in _pods(api) if p["metadata"]["name"] not in after]
    statuses = (pods[0].get("status") or {}).get("containerStatuses") if pods else None
    return pods[0] if statuses and "running" in statuses[0]["state"] else {}


def _ready_pod(api: Api, name: str) -> dict[str, Any]:
    """The live Pod `name` once Ready ({} before): its IP serves /metrics."""
    return next((p for p in _pods(api) if p["metadata"]["name"] == name and ready(p)), {})


def _peak_until(
    api: Api, after: set[str], idle_within: float, what: str
) -> tuple[dict[str, Any], int, int, str]:
    """Follow the memory cgroup of the next operator container from its start (before it is
    Ready: the cgroup's own peak covers it anyway, the sampling nearly all of it) until it
    has reconciled every name once and is idle. (pod, peak, sampled peak, peak's source)."""
    started = wait_for(lambda: _started(api, after), 120, f"{what}: started")
    peak_file, current, limit = memory_files(container_cgroup(started))
    assert int(limit.read_text()) == LIMIT, f"{limit} is not the container's 256Mi limit"
    sampler = Sampler(current)
    sampler.start()
    try:
        name = started["metadata"]["name"]
        pod = wait_for(lambda: _ready_pod(api, name), idle_within, f"{what}: Ready", interval=1)

        def idle() -> bool:
            return (
                _metric(pod, "controller_runtime_reconcile_total", result="success")
                >= NODE_SCALE.services
                and _metric(pod, "workqueue_depth") == 0
                and _metric(pod, "controller_runtime_active_workers") == 0
            )

        wait_for(idle, idle_within, f"{what}: every name reconciled", interval=1)
    finally:
        sampled = sampler.stop()
    peak = int(peak_file.read_text()) if peak_file is not None else sampled
    source = peak_file.name if peak_file is not None else f"{current.name} sampled every 0.2 s"
    return pod, peak, sampled, source


def _not_restarted(api: Api, pod: dict[str, Any]) -> None:
    status = api.get(f"/api/v1/namespaces/{NS}/pods/{pod['metadata']['name']}")["status"]
    container = status["containerStatuses"][0]
    assert container["restartCount"] == 0 and "terminated" not in container["lastState"], container


@pytest.mark.timeout(max(300.0, 2.5 * SCALE_WITHIN))
def test_memory_converging_and_restarting_in_the_pod(manifests: Node, api: Api) -> None:
    """The bench's scale converged by the Pod within its 256Mi limit, then a new Pod's
    restart on the converged world: its own peak, and not one object written."""
    node, scale = manifests, NODE_SCALE
    figures: dict[str, Any] = {}
    _scale(node, api, 0)
    for ns in (SCALE_DEFAULT, *SCALE_DEVS):
        _ensure_namespace(node, api, ns)
    bodies = []
    for i, name in enumerate(service_names(scale)):
        bodies.append((SCALE_DEFAULT, service_body(SCALE_DEFAULT, name, i)))
        bodies += [(ns, service_body(ns, name, i)) for ns in dev_namespaces_for(i, SCALE_DEVS)]
    seconds = create_all(node, bodies)
    FIGURES[f"scale {scale.name} input Services created on the node"] = (
        f"{len(bodies)} in {seconds:.1f} s"
    )
    text = config_text(SCALE_DEFAULT, SCALE_DEVS)
    api.write_config("virtualservice-operator-config", text)
    within = SCALE_WITHIN
    try:
        began = time.monotonic()
        node.kubectl("scale", DEPLOYMENT, "-n", NS, "--replicas=1")
        pod, peak, sampled, source = _peak_until(api, set(), within, f"scale {scale.name} cold")
        converged = time.monotonic() - began
        diff = differences(node, config_for(text, DEFAULT_INSTANCE))
        load = os.getloadavg()[0]
        FIGURES[f"operator Pod peak memory converging {scale.name}"] = (
            f"{peak / 2**20:.0f} MiB of 256 MiB ({source} of the container's cgroup; "
            f"sampled: {sampled / 2**20:.0f} MiB); {diff.expected} objects "
            f"in line {converged:.0f} s after the scale-up (load {load:.1f})"
        )
        figures.update(
            scale=scale.name,
            input_services=len(bodies),
            input_seconds=round(seconds, 1),
            objects_in_line=diff.expected,
            cold_converge_s=round(converged, 1),
            cold_peak_mib=round(peak / 2**20, 1),
            cold_sampled_peak_mib=round(sampled / 2**20, 1),
            peak_source=source,
            cold_load=round(load, 1),
        )
        assert diff.in_line, str(diff)
        assert peak < LIMIT
        _not_restarted(api, pod)

        # A restart on the converged world: a new Pod lists everything again and writes
        # nothing (the old one hands the Lease over on SIGTERM).
        before = api.write_count(WRITTEN)
        began = time.monotonic()
        old = pod["metadata"]["name"]
        node.kubectl("delete", "pod", old, "-n", NS, "--wait=false")
        pod, peak, sampled, source = _peak_until(api, {old}, within, f"scale {scale.name} restart")
        restarted = time.monotonic() - began
        writes = {verb: n - before.get(verb, 0) for verb, n in api.write_count(WRITTEN).items()}
        writes = {verb: n for verb, n in writes.items() if n}
        load = os.getloadavg()[0]
        FIGURES[f"operator Pod peak memory restarting on {scale.name}"] = (
            f"{peak / 2**20:.0f} MiB of 256 MiB (sampled: {sampled / 2**20:.0f} MiB); "
            f"every name reconciled {restarted:.0f} s after the delete, writes {writes or 0}"
        )
        figures.update(
            restart_idle_s=round(restarted, 1),
            restart_peak_mib=round(peak / 2**20, 1),
            restart_sampled_peak_mib=round(sampled / 2**20, 1),
            restart_writes=writes,
            restart_load=round(load, 1),
        )
        assert writes == {}, writes
        assert peak < LIMIT
        _not_restarted(api, pod)
    finally:
        if (results := os.environ.get("VSO_NODE_RESULTS")) and figures:
            Path(results).write_text(json.dumps(figures, indent=2) + "\n")
        _scale(node, api, 0)
        node.kubectl("apply", "-f", str(REPO_ROOT / "deployments" / "config.yaml"))
        # The namespace controller empties them in the background.
        node.kubectl("delete", "namespace", SCALE_DEFAULT, *SCALE_DEVS, "--wait=false")


RELEASE = "vso-helm"
RELEASE_NS = "vso-helm-system"
FULLNAME = f"{RELEASE}-virtualservice-operator"
HELM_PROD, HELM_DEVS = "helm-prod", ["helm-dev-a", "helm-dev-b"]
HELM_INSTANCE = default_instance(RELEASE_NS, f"{FULLNAME}-config")
# Every namespaced kind the chart renders (its templates, hook included).
RELEASE_KINDS = ",".join(
    (
        "deployments",
        "replicasets",
        "pods",
        "services",
        "configmaps",
        "serviceaccounts",
        "roles",
        "rolebindings",
        "secrets",
        "networkpolicies",
        "poddisruptionbudgets",
    )
)


class Helm:
    def __init__(self, node: Node, home: Path) -> None:
        self.path = node.bin_dir / "helm"
        self.env = {
            **os.environ,
            "KUBECONFIG": str(node.admin_kubeconfig),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_DATA_HOME": str(home / "data"),
        }

    def __call__(self, *args: str, timeout: float = 300) -> str:
        out = subprocess.run(
            [str(self.path), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=self.env,
        )
        assert out.returncode == 0, f"helm {' '.join(args)}: {out.stdout}{out.stderr}"
        return out.stdout


def _deployment(node: Node) -> dict[str, Any]:
    return dict(
        json_of(node.kubectl("get", "deployment", FULLNAME, "-n", RELEASE_NS, "-o", "json"))
    )


def test_helm_install_test_upgrade_uninstall(manifests: Node, api: Api, tmp_path: Path) -> None:
    node = manifests
    _scale(node, api, 0)  # the manifest instance stays out of the release's way
    if not (node.bin_dir / "helm").exists():
        subprocess.run(
            ["bash", str(REPO_ROOT / "hack" / "build-controlplane.sh")],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    helm = Helm(node, tmp_path)
    for ns in (HELM_PROD, *HELM_DEVS):
        _ensure_namespace(node, api, ns)
    chart = str(REPO_ROOT / "charts" / "virtualservice-operator")
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {"config": {"defaultNamespace": HELM_PROD, "developerNamespaces": HELM_DEVS[:1]}}
        )
    )
    helm(
        "install",
        RELEASE,
        chart,
        "-n",
        RELEASE_NS,
        "--create-namespace",
        "-f",
        str(values),
        "--wait",
        "--timeout=3m",
    )
    deployment = _deployment(node)
    assert deployment["status"].get("availableReplicas") == 1
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == _image()

    api.create_service(HELM_PROD, "chart")
    vs = wait_for(lambda: api.vs(HELM_PROD, "chart-virtual-service"), 60, "VirtualService")
    assert vs["metadata"]["labels"][INSTANCE_LABEL] == HELM_INSTANCE
    wait_for(lambda: api.service(HELM_DEVS[0], "chart"), 60, "placeholder")

    # No --logs: the hook's delete policy removes the Pod once it succeeded (and so leaves
    # nothing behind for `helm uninstall`), before helm could read its log.
    out = helm("test", RELEASE, "-n", RELEASE_NS, "--timeout=3m")
    assert "Phase:          Succeeded" in out, out

    # A config value (hot reload: a second developer namespace) and a Pod value (the
    # log level: a new ReplicaSet) in one upgrade.
    old_pods = {
        p["metadata"]["name"] for p in api.get(f"/api/v1/namespaces/{RELEASE_NS}/pods")["items"]
    }
    helm(
        "upgrade",
        RELEASE,
        chart,
        "-n",
        RELEASE_NS,
        "--reuse-values",
        "--set",
        f"config.developerNamespaces={{{','.join(HELM_DEVS)}}}",
        "--set",
        "logging.zapLogLevel=debug",
        "--wait",
        "--timeout=3m",
    )
    node.kubectl(
        "rollout",
        "status",
        f"deployment/{FULLNAME}",
        "-n",
        RELEASE_NS,
        "--timeout=180s",
        timeout=200,
    )
    container = _deployment(node)["spec"]["template"]["spec"]["containers"][0]
    assert "-zap-log-level=debug" in container["args"]
    pods = live(
        api.get(f"/api/v1/namespaces/{RELEASE_NS}/pods?labelSelector=app%3D{FULLNAME}")["items"]
    )
    assert pods and not {p["metadata"]["name"] for p in pods} & old_pods
    wait_for(lambda: api.service(HELM_DEVS[1], "chart"), 60, "placeholder in the added namespace")

    # The release's leader at uninstall: its log says what became of its Lease.
    lease_path = f"/apis/coordination.k8s.io/v1/namespaces/{RELEASE_NS}/leases/{FULLNAME}-leader"
    pods_path = f"/api/v1/namespaces/{RELEASE_NS}/pods?labelSelector=app%3D{FULLNAME}"

    def release_leader() -> str:
        holder = str(((api.get(lease_path) or {}).get("spec") or {}).get("holderIdentity") or "")
        names = {p["metadata"]["name"] for p in live(api.get(pods_path)["items"])}
        return holder if holder.rsplit("_", 1)[0] in names else ""

    leader_id = wait_for(release_leader, 60, "a Pod of the release leads", interval=0.5)
    follow = subprocess.Popen(
        [
            str(node.bin_dir / "kubectl"),
            f"--kubeconfig={node.admin_kubeconfig}",
            "logs",
            "--follow",
            leader_id.rsplit("_", 1)[0],
            "-n",
            RELEASE_NS,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        helm("uninstall", RELEASE, "-n", RELEASE_NS, "--wait", "--timeout=3m")
        log_text, _ = follow.communicate(timeout=60)  # ends with the container
    finally:
        follow.kill()
        follow.wait()
    lines = [json.loads(x) for x in log_text.splitlines() if x.startswith("{")]
    # The chart's pre-delete hook scales the Deployment to 0 and waits for its Pods before
    # helm deletes the ServiceAccount and Roles: the leader stops on SIGTERM (exit 0).
    lost = any(x["msg"] == "lost leadership: stopping at once" for x in lines)
    assert lines and lines[-1]["msg"] == "stopped", lines[-5:]
    assert lines[-1]["exit_code"] == 0 and not lost, lines[-5:]

    def release_objects() -> str:
        selector = f"app.kubernetes.io/instance={RELEASE}"
        namespaced = node.kubectl("get", RELEASE_KINDS, "-A", "-l", selector, "-o", "name").stdout
        cluster = node.kubectl(
            "get", "clusterroles,clusterrolebindings", "-l", selector, "-o", "name"
        ).stdout
        helm_records = node.kubectl(
            "get", "secrets", "-n", RELEASE_NS, "-l", "owner=helm", "-o", "name"
        ).stdout
        return (namespaced + cluster + helm_records).strip()

    wait_for(lambda: not release_objects(), 120, "nothing of the release left", interval=1)
    assert not [
        line
        for line in node.kubectl(
            "get", "clusterroles,clusterrolebindings", "-o", "name"
        ).stdout.split()
        if FULLNAME in line
    ]
    # What the operator made stays (docs/upgrade.md, "From a version without instances"): the
    # VirtualService, the placeholders, and its Lease, released on SIGTERM.
    assert api.vs(HELM_PROD, "chart-virtual-service") is not None
    assert all(api.service(dev, "chart") is not None for dev in HELM_DEVS)
    lease = api.get(lease_path)
    assert lease is not None
    released = any(x["msg"] == "released leader lease" for x in lines)
    refused = [str(x.get("error")) for x in lines if x["msg"] == "failed to release lease"]
    assert released and not refused, lines[-5:]
    assert lease["spec"].get("holderIdentity", "") == "", lease
    ending = "lost its Lease first (exit 1)" if lost else "stopped on SIGTERM (exit 0)"
    lease_state = "released" if released else f"left held ({(refused or ['not released'])[-1]})"
    FIGURES["the release's leader at helm uninstall"] = f"{ending}; its Lease {lease_state}"
    # ...until deleted by the guide's command, which takes nothing else.
    node.kubectl(
        "delete", "virtualservices,services", "-A", "-l", f"{INSTANCE_LABEL}={HELM_INSTANCE}"
    )
    assert api.vs(HELM_PROD, "chart-virtual-service") is None
    assert all(api.service(dev, "chart") is None for dev in HELM_DEVS)
    assert api.service(HELM_PROD, "chart") is not None
