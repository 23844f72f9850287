"""The docs' procedures, run as written through bash against a real kube-apiserver of
their own, with the operator running with its ServiceAccount's rights.

- docs/quickstart.md: install, a first Service, a developer's Service over the
  placeholder, clean-up;
- docs/uninstall.md: stop, delete what the operator made, remove it, check;
- docs/security.md: its examples applied with Istio's CRDs and strict field validation
  (an unknown field is refused, not dropped), and its `kubectl auth can-i` lines against
  the developer Role it ships.

There is no kubelet here: the operator runs as a process (it stops where the docs scale
its Deployment to 0), and the lines that need a Pod (`rollout status`, `kubectl logs`,
Helm's) are left to the node tests (tests/node/), which run the README's install, the
same lines as the quickstart's (tests/unit/test_docs.py holds them equal).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.harness import OPERATOR_NS, OperatorProcess, wait_for, warm_up_crd
from virtualservice_operator_dev.controlplane import REPO_ROOT, ControlPlane
from virtualservice_operator_dev.istio import write_crds

pytestmark = pytest.mark.integration

DOCS = REPO_ROOT / "docs"
CONFIG = "virtualservice-operator-config"
LEADER_ARGS = ["-leader-elect=true", "-lease-duration=4s", "-renew-deadline=3s", "-retry-period=1s"]
_FENCE = re.compile(r"^```bash\n(.*?)^```", re.S | re.M)


def blocks(page: str, section: str) -> list[list[str]]:
    """The bash blocks of `section` (a `## ` heading) of docs/`page`, each as a list of
    commands: continuation lines and here-documents joined into their command."""
    text = (DOCS / page).read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    out = []
    for block in _FENCE.findall(body):
        commands: list[str] = []
        lines = iter(block.splitlines())
        for line in lines:
            command = line
            while command.endswith("\\"):
                command += "\n" + next(lines)
            heredoc = re.search(r"<<'?(\w+)'?", command)
            if heredoc:
                end = heredoc.group(1)
                for body_line in lines:
                    command += "\n" + body_line
                    if body_line == end:
                        break
            commands.append(command)
        out.append(commands)
    return out


class Shell:
    """A user's shell on this control plane: its admin kubeconfig, kubectl, and the
    operator's command-line tool on PATH, in the repository."""

    def __init__(self, cp: ControlPlane) -> None:
        bin_dirs = f"{cp.bin_dir}:{Path(sys.executable).parent}"
        self.env = {
            **os.environ,
            "KUBECONFIG": str(cp.admin_kubeconfig),
            "PATH": f"{bin_dirs}:{os.environ['PATH']}",
            "NO_COLOR": "1",
        }

    def run(self, command: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["bash", "-o", "pipefail", "-c", command],
            cwd=REPO_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if ok:
            assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        return result

    def until(
        self, command: str, check: Callable[[subprocess.CompletedProcess[str]], bool], what: str
    ) -> subprocess.CompletedProcess[str]:
        """Run `command` again until `check` holds (the operator acts in its own time)."""

        def attempt() -> subprocess.CompletedProcess[str] | None:
            result = self.run(command, ok=False)
            return result if check(result) else None

        try:
            return wait_for(attempt, 30, what, interval=0.2)
        except AssertionError as e:
            last = self.run(command, ok=False)
            output = f"{command}: exit {last.returncode}\n{last.stdout}\n{last.stderr}"
            raise AssertionError(f"{e}\n{output}") from None


@pytest.fixture(scope="module")
def cp(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A control plane of its own, without Istio's CRD: the docs install it."""
    plane = ControlPlane(
        bin_dir=control_plane.bin_dir,
        work_dir=tmp_path_factory.mktemp("docs-cp"),
        istio_crds=(),
    )
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()


def _operator(cp: ControlPlane, work: Path) -> OperatorProcess:
    kubeconfig = cp.service_account_kubeconfig(
        OPERATOR_NS, "virtualservice-operator", work / "sa.kubeconfig"
    )
    return OperatorProcess(cp, kubeconfig, CONFIG, work / "operator.log", LEADER_ARGS).start()


def test_quickstart_then_uninstall(cp: ControlPlane, tmp_path: Path) -> None:
    sh = Shell(cp)
    tool, check, install, _helm, running = blocks("quickstart.md", "2. Install on a cluster")
    assert tool[0].startswith("python3.11 -m pip install .")  # this test runs in that venv
    assert sh.run(tool[1]).stdout.startswith("virtualservice-operator ")
    assert "config OK" in sh.run(check[0]).stdout
    for command in install:
        sh.run(command)
    warm_up_crd(cp)
    proc = _operator(cp, tmp_path)
    # `kubectl rollout status` and `kubectl logs` need a Pod (tests/node); here the log is
    # the process's.
    assert running[0].startswith("kubectl rollout status")
    assert '"config loaded"' in running[1] and "config loaded" in proc.logs()
    sh.run(running[2])  # status: no managed name yet, exit 0

    first, developer = blocks("quickstart.md", "3. A first Service")
    for command in first[:2]:
        sh.run(command)
    vs = sh.until(first[2], lambda r: r.returncode == 0, "cart-virtual-service")
    assert "host: cart.production.svc.cluster.local" in vs.stdout
    sh.until(first[3], lambda r: "cart" in r.stdout, "a placeholder cart in staging")
    sh.run(developer[0])  # the developer's Service, over the placeholder
    explained = sh.until(
        developer[1],
        lambda r: (
            r.returncode == 0
            and re.search(r"staging\s+developer\s+real .*routed", r.stdout) is not None
        ),
        "explain: staging routed, in sync",
    )
    assert "x-developer=staging" in explained.stdout
    routes = json.loads(
        sh.run("kubectl get virtualservice cart-virtual-service -n production -o json").stdout
    )["spec"]["http"]
    assert routes[0]["match"] == [{"headers": {"x-developer": {"exact": "staging"}}}]
    assert routes[0]["route"][0]["destination"]["host"] == "cart.staging.svc.cluster.local"

    (clean,) = blocks("quickstart.md", "4. Clean up")
    for command in clean[:2]:
        sh.run(command)
    sh.until(clean[2], lambda r: "No resources found" in r.stderr, "cart's VirtualService gone")

    # docs/operations.md: a whole new config.yaml by `kubectl patch` (staging only).
    patch, placeholders = blocks("operations.md", "Change the configuration")[-1]
    sh.run(patch)
    wait_for(lambda: "config reloaded" in proc.logs(), 30, "config reloaded")
    # Something for the uninstall to remove, and something it must not.
    sh.run("kubectl create service clusterip web --tcp=80 -n dev-team-a")
    sh.run("kubectl create service clusterip web --tcp=80 -n production")
    listed = sh.until(placeholders, lambda r: "web" in r.stdout, "placeholder web in staging")
    assert [line.split()[:2] for line in listed.stdout.splitlines()[1:]] == [["staging", "web"]]
    sh.until(
        "kubectl get virtualservice web-virtual-service -n production",
        lambda r: r.returncode == 0,
        "web-virtual-service",
    )

    stop, delete, remove, _helm_remove, checks, _crd = blocks(
        "uninstall.md", "1. Stop the operator"
    )[:1] + [
        b
        for section in (
            "2. Delete what it made (optional)",
            "3. Remove the operator",
            "4. Check",
            "5. Istio's CRD (only if you applied `deployments/crd/`)",
        )
        for b in blocks("uninstall.md", section)
    ]
    sh.run(stop[0])
    assert proc.stop() == 0  # the Pod's SIGTERM: it releases its Lease
    lease = json.loads(
        sh.run(f"kubectl get lease virtualservice-operator-leader -n {OPERATOR_NS} -o json").stdout
    )
    assert not lease["spec"].get("holderIdentity"), lease["spec"]
    sh.run(stop[1])
    assert "web" in sh.run(stop[2]).stdout  # status still answers, and lists web

    out = sh.run("\n".join(delete)).stdout
    assert 'virtualservice.networking.istio.io "web-virtual-service" deleted' in out, out
    # staging's placeholder, not dev-team-a's real Service
    assert out.count('service "web" deleted') == 1, out
    sh.run("kubectl get service web -n dev-team-a")  # the real one stays
    sh.run("kubectl get service web -n production")

    assert remove[2] == "kubectl delete -f deployments/deployment.yaml --ignore-not-found"
    for command in remove[:2]:
        sh.run(command)
    # kubectl waits for the namespace to go; the namespace controller (not running here)
    # would empty and finalize it: the test does its last step.
    deleting = subprocess.Popen(
        ["bash", "-c", remove[2]],
        cwd=REPO_ROOT,
        env=sh.env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    namespace = f"/api/v1/namespaces/{OPERATOR_NS}"
    wait_for(
        lambda: (cp.api("GET", namespace)[1].get("status") or {}).get("phase") == "Terminating",
        30,
        "the namespace Terminating",
    )
    _, body = cp.api("GET", namespace)
    body["spec"]["finalizers"] = []
    assert cp.api("PUT", f"{namespace}/finalize", body)[0] == 200
    out, err = deleting.communicate(timeout=60)
    assert deleting.returncode == 0, err
    assert 'clusterrole.rbac.authorization.k8s.io "virtualservice-operator-role" deleted' in out
    names = sh.run(checks[0], ok=False)
    assert names.returncode == 1 and names.stdout == "", names  # grep found nothing
    left = sh.run(checks[1])
    assert left.stdout == "" and "No resources found" in left.stderr, left
    gone = sh.run(checks[2], ok=False)
    assert gone.returncode == 1 and "NotFound" in gone.stderr, gone


def test_security_examples_are_accepted_and_the_role_denies(cp: ControlPlane) -> None:
    sh = Shell(cp)
    directory = write_crds(
        Path(cp.work_dir) / "istio-crds",
        ("virtualservices.networking.istio.io", "gateways.networking.istio.io"),
    )
    cp.install_crds(directory)
    for ns in ("production", "dev-team-a"):
        sh.run(f"kubectl create namespace {ns} --dry-run=client -o yaml | kubectl apply -f -")

    # The ingress example, with strict field validation: every field is Istio's.
    ingress = DOCS / "examples" / "ingress-strip-routing-header.yaml"
    (apply,) = [
        c
        for block in blocks("security.md", "The routing header is a trust boundary")
        for c in block
        if c.startswith("kubectl apply")
    ]
    sh.run(apply.replace("kubectl apply", "kubectl apply --dry-run=server"))
    sh.run(apply)
    stored = json.loads(sh.run("kubectl get virtualservice shop-edge -n production -o json").stdout)
    written = next(
        d for d in yaml.safe_load_all(ingress.read_text()) if d["kind"] == "VirtualService"
    )
    assert stored["spec"] == written["spec"]  # nothing pruned
    for route in stored["spec"]["http"]:
        assert route["headers"]["request"]["remove"] == ["x-developer", "baggage"]
    sh.run("kubectl get gateway public-gateway -n production")
    # The same check refuses a misspelt field (it would otherwise be dropped silently).
    misspelt = ingress.read_text().replace("          remove:", "          remov:", 1)
    refused = sh.run(f"kubectl apply --validate=strict -f - <<'EOF'\n{misspelt}EOF", ok=False)
    assert refused.returncode != 0 and 'unknown field "spec.http[0].headers.request.remov"' in (
        refused.stderr
    ), refused.stderr

    # The developer Role: what the page says it denies, it denies.
    rbac = DOCS / "examples" / "developer-namespace-rbac.yaml"
    sh.run(f"kubectl apply --validate=strict -f {rbac}")
    denied = [
        c
        for block in blocks("security.md", "The routing header is a trust boundary")
        for c in block
        if c.startswith("kubectl auth can-i")
    ]
    assert len(denied) == 3, denied
    for command in denied:
        assert sh.run(command, ok=False).stdout.strip() == "no", command
    jane = "--as=jane --as-group=dev-team-a"
    for allowed in (
        "create services -n dev-team-a",
        "patch services -n dev-team-a",
        "create deployments.apps -n dev-team-a",
        "create pods/portforward -n dev-team-a",
    ):
        assert sh.run(f"kubectl auth can-i {allowed} {jane}").stdout.strip() == "yes", allowed
    for refused_right in (
        "create destinationrules.networking.istio.io -n dev-team-a",
        "create rolebindings.rbac.authorization.k8s.io -n dev-team-a",
        "patch virtualservices.networking.istio.io -n production",
        "list services -n production",
    ):
        answer = sh.run(f"kubectl auth can-i {refused_right} {jane}", ok=False).stdout.strip()
        assert answer == "no", refused_right


# kubectl's answers to a command it cannot parse (as opposed to one about a missing object).
_USAGE = re.compile(
    r"unknown (shorthand )?flag|unknown command|invalid argument|required flag|"
    r"you must specify|See 'kubectl .*(-h|--help)'|error: (unable to|cannot) parse"
)


def test_every_kubectl_read_in_the_docs_parses(cp: ControlPlane) -> None:
    """Each `kubectl` line of the user pages that only reads (get, describe, auth can-i,
    top, logs; or any `--dry-run`) is run against the API server: whatever the cluster's
    state, kubectl must understand it (flags, resource names, selectors)."""
    from tests.unit.test_docs import USER_PAGES, _code

    sh = Shell(cp)
    lines = {
        re.split(r" \| | > |\s+#", line.strip())[0]
        for page in USER_PAGES
        for line in _code(page.read_text())
        if line.strip().startswith("kubectl ") and not line.rstrip().endswith("\\")
    }
    reads = sorted(
        line
        for line in lines
        if ("--dry-run" in line or line.split()[1] in ("get", "describe", "auth", "top", "logs"))
        and not re.search(r"\s-f(\s|$)", line)  # neither a followed log nor a file
        and "<<" not in line
        and "..." not in line  # prose shorthand in tables, not a command
        and len(line.split()) > 3
    )
    assert len(reads) >= 30, reads
    wrong = []
    for line in reads:
        result = sh.run(line, ok=False)
        if _USAGE.search(result.stderr):
            wrong.append(f"{line}: {result.stderr.strip()}")
    assert not wrong, wrong
