"""The operations guide's commands that need a running Pod, run as written on the real
node: logs, port-forward, exec, profiles, rollouts, resource figures, scale, events.

One install (the README's "Install on a cluster" lines) is shared by the tests below, in
this file's order. Each command is the guide's own line (checked against the guide when
it is beside the repository), run by bash with the node's admin kubeconfig, pipes
included (`grep` and `jq` are this machine's). The few lines that are not the guide's
say where they come from (docs/operations.md's profiling patch and `explain`). At the end
the Deployment is scaled to 0 and what the module made is deleted.
"""

from __future__ import annotations

import json
import os
import queue
import shlex
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest
import yaml

from tests.conftest import FIGURES
from tests.integration.harness import Api, wait_for
from tests.integration.test_guide_commands import (
    GUIDE,
    GUIDE_METRICS,
    GUIDE_PLACEHOLDER_PATCH,
    guide_commands,
)
from tests.node.conftest import cannot_run
from tests.node.test_node import _top, run_readme_install, user_env
from virtualservice_operator_dev.controlplane import REPO_ROOT
from virtualservice_operator_dev.node import Node

NS = "virtualservice-operator-system"
LOGS = f"kubectl logs -n {NS} deployment/virtualservice-operator"
ROLLOUT_STATUS = f"kubectl rollout status deployment/virtualservice-operator -n {NS}"
REPOSITORY = "harbor.intent.ai/library/virtualservice-operator"
# The config's namespaces (deployments/config.yaml): production and three developer ones.
DEFAULT_NS = "production"
DEVELOPER_NS = ("staging", "dev-team-a", "dev-team-b")
# Not a Go process: no go_goroutines; its stand-ins (docs/monitoring.md, "What to watch").
GOROUTINE_STAND_INS = ("python_asyncio_tasks", "python_threads")
# docs/operations.md, "Turning profiling on" (its two lines joined).
PROFILING_PATCH = (
    f"kubectl patch deployment virtualservice-operator -n {NS} --type=json "
    """-p '[{"op":"add","path":"/spec/template/spec/containers/0/command/-","""
    """"value":"-enable-profiling=true"}]'"""
)


def _guide_lines() -> set[str] | None:
    return set(guide_commands(GUIDE.read_text())) if GUIDE.exists() else None


@dataclass
class Cluster:
    """The installed operator and a shell that runs the guide's lines against it."""

    node: Node
    api: Api
    work: Path
    env: dict[str, str]
    guide: set[str] | None
    created: list[str] = field(default_factory=list)  # Services made here, in DEFAULT_NS

    def create_service(self, name: str) -> None:
        self.api.create_service(DEFAULT_NS, name)
        self.created.append(name)

    def literal(self, line: str) -> str:
        if self.guide is not None:
            assert line in self.guide, f"not a line of the guide: {line}"
        return line

    def sh(
        self,
        line: str,
        *,
        guide: bool = True,
        ok: tuple[int, ...] = (0,),
        timeout: float = 120,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> str:
        """Run `line` with bash (a guide line unless guide=False); its stdout."""
        if guide:
            self.literal(line)
        result = subprocess.run(
            ["bash", "-c", line],
            cwd=cwd or self.work,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert result.returncode in ok, f"{line}: exit {result.returncode}: {result.stderr}"
        return result.stdout

    def start(self, line: str) -> subprocess.Popen[str]:
        """A long-running guide line (`logs -f`, `port-forward`) in its own process group."""
        return subprocess.Popen(
            shlex.split(self.literal(line)),
            cwd=self.work,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    def pods(self) -> list[dict[str, Any]]:
        out = self.node.kubectl(
            "get", "pods", "-n", NS, "-l", "app=virtualservice-operator", "-o", "json"
        ).stdout
        return list(json.loads(out)["items"])

    def one_ready_pod(self, timeout: float = 180) -> dict[str, Any]:
        """Wait until the Deployment has exactly one Pod, Ready, and none terminating."""

        def ready() -> dict[str, Any] | None:
            pods = self.pods()
            if len(pods) != 1 or pods[0]["metadata"].get("deletionTimestamp"):
                return None
            conditions = pods[0].get("status", {}).get("conditions", [])
            is_ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
            return pods[0] if is_ready else None

        return wait_for(ready, timeout, "one Ready operator Pod, no other", interval=1)

    def rollout(self) -> dict[str, Any]:
        """The guide's `rollout status` (no timeout of its own: bounded here), then the Pod."""
        out = self.sh(ROLLOUT_STATUS, timeout=240)
        assert "successfully rolled out" in out, out
        return self.one_ready_pod()

    def works(self, name: str) -> None:
        """The operator in the Pod does its work: a new Service gets its VirtualService."""
        self.create_service(name)
        wait_for(
            lambda: self.api.vs(DEFAULT_NS, f"{name}-virtual-service"),
            90,
            f"VirtualService of {name}",
            interval=0.5,
        )


def _manager(pod: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in pod["spec"]["containers"] if c["name"] == "manager")


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        # As kubectl's own listener does: a port left in TIME_WAIT counts as free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _reader(stream: IO[str]) -> queue.Queue[str]:
    """Lines of a long-running command, read in a thread so a test can wait with a deadline."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
    proc.wait(timeout=10)


def _load_image(node: Node) -> None:
    """`make image-load`: the archive `make image` built, as :v1.3.0 and :v1.3.1."""
    archive = next((REPO_ROOT / ".cache" / "image").glob("virtualservice-operator-*.oci.tar"), None)
    if archive is None:
        cannot_run("the operator's image is not built: run `make image` first")
    load = subprocess.run(
        ["bash", str(REPO_ROOT / "hack" / "image" / "load.sh")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert load.returncode == 0, load.stderr
    images = node.ctr("images", "ls", "-q").stdout.split()
    assert {f"{REPOSITORY}:v1.3.0", f"{REPOSITORY}:v1.3.1"} <= set(images), images


@pytest.fixture(scope="module")
def cluster(node: Node, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The README's install on the node, with a fresh Deployment (so that its revisions
    count from 1 here, whatever ran before); scaled to 0 at the end."""
    work = tmp_path_factory.mktemp("guide")
    env = user_env(node)
    c = Cluster(node, Api(node), work, env, _guide_lines())
    _load_image(node)
    node.kubectl(
        "delete",
        "deployment",
        "virtualservice-operator",
        "-n",
        NS,
        "--ignore-not-found",
        "--wait=true",
        timeout=120,
    )
    wait_for(lambda: not c.pods(), 120, "no operator Pod left from before", interval=1)
    run_readme_install(env, installed_before=True)
    for name in (DEFAULT_NS, *DEVELOPER_NS):
        if c.api.get(f"/api/v1/namespaces/{name}") is None:
            node.kubectl("create", "namespace", name)
    try:
        c.rollout()
        yield c
    finally:
        # What this module made goes (the VirtualServices with their Services, by their
        # ownerReferences), the shipped config comes back, and the Deployment is at 0.
        for name in c.created:
            c.api.delete_service(DEFAULT_NS, name)
        node.kubectl(
            "delete",
            "services",
            "-A",
            "-l",
            "virtualservice-operator/placeholder-service=true",
            check=False,
        )
        node.kubectl("replace", "-f", str(REPO_ROOT / "deployments" / "config.yaml"), check=False)
        node.kubectl(
            "scale", "deployment/virtualservice-operator", "-n", NS, "--replicas=0", check=False
        )
        wait_for(lambda: not c.pods(), 120, "operator Pods gone", interval=1)


def test_logs_as_the_guide_reads_them(cluster: Cluster) -> None:
    c = cluster
    pods = c.sh(f"kubectl get pods -n {NS}")
    assert "1/1" in pods and "Running" in pods, pods
    # Applied by the install lines; stored, not enforced (the bridge CNI enforces none).
    policies = c.node.kubectl("get", "networkpolicy", "-n", NS, "-o", "name").stdout
    assert "networkpolicy.networking.k8s.io/virtualservice-operator-netpol" in policies
    c.works("my-service")
    for dev in DEVELOPER_NS:
        wait_for(lambda dev=dev: c.api.service(dev, "my-service"), 60, f"placeholder in {dev}")

    lines = _json_lines(c.sh(LOGS))
    assert lines and all({"timestamp", "level", "msg"} <= line.keys() for line in lines)
    assert "config loaded" in c.sh(f"{LOGS} | grep -i config")
    tail = c.sh(f"{LOGS} --tail=100").splitlines()
    assert 0 < len(tail) <= 100, tail
    # Both spellings of the guide's filter: lines about my-service, and its VirtualService.
    for line in (f'{LOGS} | grep "my-service"', f"{LOGS} | grep my-service"):
        about = _json_lines(c.sh(line))
        assert any(
            e.get("msg") == "VirtualService created"
            and e.get("virtualservice") == "my-service-virtual-service"
            for e in about
        ), about
    # Nothing to find in a healthy run: grep's exit status 1, no line.
    assert c.sh(f'{LOGS} | grep -i "out of memory\\|oom"', ok=(1,)) == ""

    follow = c.start(f"{LOGS} -f")
    try:
        lines_q = _reader(follow.stdout)  # type: ignore[arg-type]
        seen: list[str] = []

        def saw(word: str) -> bool:
            while not lines_q.empty():
                seen.append(lines_q.get())
            return any(word in line for line in seen)

        wait_for(lambda: saw('"msg"'), 30, "logs -f prints the log so far")
        # A line written after `-f` started reaches it: the log is followed.
        c.create_service("follow-me")
        wait_for(lambda: saw("follow-me-virtual-service"), 60, "logs -f shows a new line")
        assert follow.poll() is None, "logs -f ended by itself"
    finally:
        _stop(follow)


def test_health_and_metrics_through_port_forward(cluster: Cluster) -> None:
    c = cluster
    for port in (8081, 8080):
        if not _port_free(port):
            pytest.fail(
                f"local port {port} is in use on this machine: the guide's "
                f"port-forward {port}:{port} cannot run as written",
                pytrace=False,
            )

    def forwarded(port: int) -> subprocess.Popen[str]:
        proc = c.start(
            f"kubectl port-forward -n {NS} deployment/virtualservice-operator {port}:{port}"
        )
        assert proc.stdout is not None
        lines = _reader(proc.stdout)
        try:
            first = wait_for(lambda: not lines.empty() and lines.get(), 30, "port-forward")
            assert first.startswith(f"Forwarding from 127.0.0.1:{port}"), first
        except BaseException:
            _stop(proc)
            raise
        return proc

    forward = forwarded(8081)
    try:
        assert c.sh("curl http://localhost:8081/healthz") == "ok"
        assert c.sh("curl http://localhost:8081/readyz") == "ok"
    finally:
        _stop(forward)

    forward = forwarded(8080)
    try:
        metrics = c.sh("curl http://localhost:8080/metrics")
        names = {
            line.split("{")[0].split()[0]
            for line in metrics.splitlines()
            if line and not line.startswith("#")
        }
        for name in GUIDE_METRICS:
            assert any(n == name or n.startswith(f"{name}_") for n in names), name
        assert "go_goroutines" not in names and set(GOROUTINE_STAND_INS) <= names, names
        reconcile = c.sh("curl http://localhost:8080/metrics | grep reconcile_time").splitlines()
        assert reconcile and all("reconcile_time" in line for line in reconcile)
        assert any(
            line.startswith("controller_runtime_reconcile_time_seconds_count") for line in reconcile
        ), reconcile
        depth = c.sh("curl http://localhost:8080/metrics | grep workqueue_depth").splitlines()
        assert any(line.startswith("workqueue_depth{") for line in depth), depth
    finally:
        _stop(forward)


def test_explain_runs_in_the_pod(cluster: Cluster) -> None:
    """docs/operations.md's `kubectl exec ... -- virtualservice-operator explain NAME`: the
    command in the operator's own image, with the Pod's in-cluster credentials."""
    out = cluster.sh(
        f"kubectl exec -n {NS} deployment/virtualservice-operator -- "
        "virtualservice-operator explain my-service",
        guide=False,
    )
    assert "my-service-virtual-service" in out, out
    for dev in DEVELOPER_NS:
        assert dev in out, out
    # The Pod's ServiceAccount may create Events, not list them (docs/operations.md).
    assert "cannot list Events: forbidden" in out, out


def test_invalid_config_error_events_then_edit_and_reload(cluster: Cluster) -> None:
    c = cluster
    assert "config rejected" not in c.sh(f"{LOGS} | grep -i error", ok=(0, 1))
    # The guide's "Enable placeholder services" patch, ellipsis and all: refused.
    c.sh(
        f"kubectl patch configmap virtualservice-operator-config -n {NS} --patch "
        f"'{GUIDE_PLACEHOLDER_PATCH}'"
    )
    errors = wait_for(
        lambda: "config rejected" in (out := c.sh(f"{LOGS} | grep -i error", ok=(0, 1))) and out,
        60,
        "the refusal in the log",
        interval=1,
    )
    assert any(e["level"] == "error" for e in _json_lines(errors)), errors
    events = c.sh(f"kubectl get events -n {NS} --sort-by='.lastTimestamp'")
    assert "InvalidConfig" in events, events

    # "Fix ConfigMap syntax": `kubectl edit`, the editor a script that writes the shipped
    # config back with one change (placeholder labels), so the reload has something to do.
    shipped = yaml.safe_load((REPO_ROOT / "deployments" / "config.yaml").read_text())
    fixed = shipped["data"]["config.yaml"] + "placeholder:\n  labels:\n    team: platform\n"
    editor = c.work / "editor.py"
    editor.write_text(
        "import sys, yaml\n"
        "path = sys.argv[1]\n"
        "obj = yaml.safe_load(open(path))\n"
        f"obj['data']['config.yaml'] = {fixed!r}\n"
        "yaml.safe_dump(obj, open(path, 'w'))\n"
    )
    c.sh(
        f"kubectl edit configmap virtualservice-operator-config -n {NS}",
        env={"KUBE_EDITOR": f"{sys.executable} {editor}"},
    )
    reloaded = wait_for(
        lambda: c.sh(f'{LOGS} | grep -i "config reloaded"', ok=(0, 1)),
        60,
        "config reloaded in the log",
        interval=1,
    )
    assert any(e["msg"] == "config reloaded" for e in _json_lines(reloaded)), reloaded
    wait_for(
        lambda: (
            (s := c.api.service("staging", "my-service"))
            and s["metadata"]["labels"].get("team") == "platform"
        ),
        60,
        "the reloaded config applied (placeholder labelled)",
        interval=0.5,
    )


def test_conflicts_are_logged_and_resolved(cluster: Cluster) -> None:
    """Two writers race the operator over my-service's VirtualService (bounded: at most
    400 patches each); the guide's grep finds the conflict, and the state ends right."""
    c = cluster
    path = (
        f"/apis/networking.istio.io/v1/namespaces/{DEFAULT_NS}/virtualservices/"
        "my-service-virtual-service"
    )
    stop = threading.Event()

    def meddle() -> None:
        for i in range(400):
            if stop.is_set():
                return
            c.node.api(
                "PATCH", path, {"spec": {"hosts": [f"meddler-{i}"]}}, "application/merge-patch+json"
            )

    threads = [threading.Thread(target=meddle) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        found = wait_for(
            lambda: c.sh(f"{LOGS} | grep -i conflict", ok=(0, 1)),
            60,
            "a conflict in the log",
            interval=1,
        )
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert any("conflict" in e["msg"] for e in _json_lines(found)), found
    wait_for(
        lambda: (
            (v := c.api.vs(DEFAULT_NS, "my-service-virtual-service"))
            and v["spec"]["hosts"] == ["my-service"]
        ),
        60,
        "hosts restored",
        interval=0.5,
    )


def test_resource_figures(cluster: Cluster) -> None:
    c = cluster
    pod = c.one_ready_pod()["metadata"]["name"]
    cpu, memory = _top(c.node, NS, pod)  # `kubectl top pod -n NS`, once figures exist
    FIGURES["operator Pod, guide module (kubectl top pod)"] = f"{cpu} CPU, {memory}"
    top = c.sh(f"kubectl top pod -n {NS}")
    assert pod in top, top

    allocated = c.sh('kubectl describe node | grep -A 5 "Allocated resources"')
    assert allocated.startswith("Allocated resources:"), allocated
    assert "cpu" in allocated and "memory" in allocated, allocated

    usage = c.sh(
        f"kubectl get --raw /apis/metrics.k8s.io/v1beta1/namespaces/{NS}/pods "
        "| jq '.items[].containers[].usage'"
    )
    figures = json.loads(usage)  # one Pod, one container: one object
    assert set(figures) == {"cpu", "memory"}, usage

    limits = c.sh(
        f"kubectl describe deployment virtualservice-operator -n {NS} "
        '| grep -A 10 "Limits\\|Requests"'
    )
    flat = " ".join(limits.split())
    assert "Limits: cpu: 500m memory: 256Mi Requests: cpu: 50m memory: 128Mi" in flat, limits


def _profile(c: Cluster, line: str, name: str) -> None:
    """The guide's `kubectl exec ... -- curl ... > FILE` as written: a 30 s window each
    (`seconds=30` for the CPU profile; the heap profile traces 30 s by default)."""
    c.sh(line, timeout=120)
    data = (c.work / name).read_bytes()
    assert data[:2] == b"\x1f\x8b", data[:200]  # gzip: a pprof profile, not an error page


def _pprof(c: Cluster, line: str, kind: str) -> None:
    """`go tool pprof FILE` as written is interactive: its prompt is given `top`. The
    header (the profile's type) goes to stderr, the prompt and `top`'s table to stdout."""
    result = subprocess.run(
        ["bash", "-c", line],
        cwd=c.work,
        env={**c.env, "HOME": os.environ.get("HOME") or str(Path.home())},
        input="top\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result
    assert f"Type: {kind}" in result.stderr, result
    assert "Showing nodes accounting" in result.stdout, result


def test_profiles_after_turning_profiling_on(cluster: Cluster) -> None:
    c = cluster
    operations = (REPO_ROOT / "docs" / "operations.md").read_text()
    assert PROFILING_PATCH.replace("--type=json -p", "--type=json \\\n  -p") in operations
    c.sh(PROFILING_PATCH, guide=False)
    pod = c.rollout()
    assert "-enable-profiling=true" in _manager(pod)["command"]

    exec_curl = f"kubectl exec -n {NS} deployment/virtualservice-operator -- curl "
    _profile(
        c, exec_curl + "http://localhost:8080/debug/pprof/profile?seconds=30 > cpu.prof", "cpu.prof"
    )
    _profile(c, exec_curl + "http://localhost:8080/debug/pprof/heap > heap.prof", "heap.prof")
    _pprof(c, c.literal("go tool pprof cpu.prof"), "cpu")
    _pprof(c, "go tool pprof heap.prof", "inuse_space")  # the guide analyses only cpu.prof
    c.works("after-profiling")


def test_debug_logging_patch(cluster: Cluster) -> None:
    c = cluster
    c.sh(
        f"kubectl patch deployment virtualservice-operator -n {NS} --patch "
        """'{"spec":{"template":{"spec":{"containers":[{"name":"manager","""
        """"args":["-zap-log-level=debug"]}]}}}}'"""
    )
    pod = c.rollout()
    manager = _manager(pod)
    assert manager["args"] == ["-zap-log-level=debug"]
    assert "-enable-profiling=true" in manager["command"]  # command survives the patch
    # my-service's placeholders are noted at debug level each time it is reconciled.
    wait_for(
        lambda: any(e["level"] == "debug" for e in _json_lines(c.sh(LOGS))),
        60,
        "debug lines in the new Pod's log",
        interval=1,
    )
    c.works("after-debug")


def test_restart_history_set_image_and_undo(cluster: Cluster) -> None:
    """Revisions here: 1 install, 2 profiling, 3 debug logging, 4 restart, 5 v1.3.1;
    `undo` brings 4 back (as 6), `--to-revision=2` brings 2 back (as 7)."""
    c = cluster
    image = f"kubectl get deployment virtualservice-operator -n {NS} -o jsonpath='{{.spec.template.spec.containers[0].image}}'"
    before = c.one_ready_pod()["metadata"]["name"]
    c.sh(f"kubectl rollout restart deployment/virtualservice-operator -n {NS}")
    pod = c.rollout()
    assert pod["metadata"]["name"] != before
    c.works("after-restart")

    c.sh(
        f"kubectl set image deployment/virtualservice-operator manager={REPOSITORY}:v1.3.1 -n {NS}"
    )
    pod = c.rollout()
    assert c.sh(image) == f"{REPOSITORY}:v1.3.1"
    assert _manager(pod)["image"] == f"{REPOSITORY}:v1.3.1"
    assert pod["status"]["containerStatuses"][0]["ready"]
    c.works("after-set-image")

    history = c.sh(f"kubectl rollout history deployment/virtualservice-operator -n {NS}")
    revisions = {line.split()[0] for line in history.splitlines()[2:] if line.strip()}
    assert {"1", "2", "3", "4", "5"} <= revisions, history

    c.sh(f"kubectl rollout undo deployment/virtualservice-operator -n {NS}")
    pod = c.rollout()
    assert c.sh(image) == f"{REPOSITORY}:v1.3.0"
    assert _manager(pod)["args"] == ["-zap-log-level=debug"]  # revision 4's template
    c.works("after-undo")

    c.sh(f"kubectl rollout undo deployment/virtualservice-operator --to-revision=2 -n {NS}")
    pod = c.rollout()
    manager = _manager(pod)
    assert manager["args"] == ["-zap-log-level=info", "-zap-development=false"]
    assert "-enable-profiling=true" in manager["command"]
    assert manager["image"] == f"{REPOSITORY}:v1.3.0"
    c.works("after-undo-to-2")


def test_scale_to_one_then_to_zero(cluster: Cluster) -> None:
    c = cluster
    c.sh(f"kubectl scale deployment virtualservice-operator --replicas=1 -n {NS}")
    c.one_ready_pod()
    c.sh(f"kubectl scale deployment virtualservice-operator --replicas=0 -n {NS}")
    wait_for(lambda: not c.pods(), 120, "the operator's Pod gone", interval=1)
    # "Verify shutdown": no Pod listed (kubectl says "No resources found" on stderr).
    assert c.sh(f"kubectl get pods -n {NS}") == ""
    events = c.sh(f"kubectl get events -n {NS} --sort-by='.lastTimestamp'")
    assert "ScalingReplicaSet" in events and "Killing" in events, events
