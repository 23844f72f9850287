"""Two operator instances in one cluster: neither ever writes to the other's objects.

Two Helm releases of charts/virtualservice-operator (with `rbac.scope=namespaced`), each
in its own namespace: release a drives default namespace prod-a, release b prod-b; both
list the shared developer namespace `shared` (and one of their own). Each operator runs
as its release's Deployment says (its command line, its ServiceAccount, so its RBAC; as a
process here: this control plane has no kubelet). Many Service names exist in both
default namespaces, so both want a placeholder of the same name in `shared`: the one that
made it keeps it, the other reports the clash. The API server's audit log says who wrote
what: every successful write of an instance must target an object that instance created
(same uid), for the whole churn run. Then release b is uninstalled and a, restarted (a
full resync and orphan sweep), leaves b's leftovers and its own objects untouched.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import Api, OperatorProcess, wait_for, warm_up_crd
from tests.integration.test_chart import CHART, Helm
from virtualservice_operator_dev.controlplane import ControlPlane, ensure_binaries

pytestmark = pytest.mark.integration

INSTANCE = "virtualservice-operator/instance"
PLACEHOLDER = "virtualservice-operator/placeholder-service"
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: RequestResponse
  verbs: ["create", "update", "patch", "delete"]
  resources:
  - group: ""
    resources: ["services"]
  - group: "networking.istio.io"
    resources: ["virtualservices"]
- level: None
"""


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ControlPlane, Path]]:
    """A private control plane whose audit log records every write to Services and
    VirtualServices, with its body (a shared one would mix in other tests' writes)."""
    work = tmp_path_factory.mktemp("audited")
    policy, log = work / "audit-policy.yaml", work / "audit.log"
    policy.write_text(AUDIT_POLICY)
    cp = ControlPlane(
        bin_dir=ensure_binaries(),
        extra_apiserver_args=(
            f"--audit-policy-file={policy}",
            f"--audit-log-path={log}",
            "--audit-log-mode=blocking",
        ),
    )
    cp.start()
    warm_up_crd(cp)
    try:
        yield cp, log
    finally:
        cp.stop()


def install(helm: Helm, release: str, config: dict[str, Any]) -> None:
    """`helm install` of the chart into namespace `release`, as a platform team would."""
    values = {
        "config": {**config, "enablePlaceholderServices": True},
        "rbac": {"scope": "namespaced"},
    }
    helm.run(
        "install", release, str(CHART), "-n", release, "--create-namespace",
        "-f", str(helm.values_file(values)),
    )  # fmt: skip


def release_operator(cp: ControlPlane, release: str, work: Path) -> tuple[OperatorProcess, str]:
    """The release's operator, run as its Deployment says (its flags, its ServiceAccount),
    on ports of its own; and the user the API server knows it as."""
    name = f"{release}-virtualservice-operator"
    deployment = json.loads(
        cp.kubectl("get", "deployment", name, "-n", release, "-o", "json").stdout
    )
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    flags = [
        f
        for f in [*container["command"][2:], *container.get("args", [])]
        if not f.startswith(("-metrics-bind-address", "-health-probe-bind-address", "-zap-"))
    ]
    config_map = next(f.split("=", 1)[1] for f in flags if f.startswith("-config-map-name="))
    account = pod["serviceAccountName"]
    kubeconfig = cp.service_account_kubeconfig(release, account, work / f"{release}.kubeconfig")
    proc = OperatorProcess(cp, kubeconfig, config_map, work / f"{release}.log", flags)
    return proc, f"system:serviceaccount:{release}:{account}"


def audit_writes(log: Path) -> list[dict[str, Any]]:
    """Successful writes to Services and VirtualServices, in order."""
    events = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [
        e
        for e in events
        if e.get("stage") == "ResponseComplete"
        and e["verb"] in ("create", "update", "patch", "delete")
        and int(e.get("responseStatus", {}).get("code", 0)) < 300
    ]


def target_uid(event: dict[str, Any]) -> str:
    """The uid of the object a write changed (a delete names it as its precondition)."""
    if event["verb"] == "delete":
        return str(((event.get("requestObject") or {}).get("preconditions") or {}).get("uid", ""))
    return str((event.get("responseObject") or {}).get("metadata", {}).get("uid", ""))


def ownership_violations(log: Path, users: dict[str, str]) -> list[str]:
    """Writes of an instance's user to an object it did not create."""
    created: dict[str, set[str]] = {user: set() for user in users.values()}
    bad = []
    for e in audit_writes(log):
        user = e["user"]["username"]
        if user not in created:
            continue  # the test's own (admin) writes
        ref = e["objectRef"]
        what = f"{e['verb']} {ref['resource']} {ref.get('namespace')}/{ref.get('name')}"
        uid = target_uid(e)
        if e["verb"] == "create":
            created[user].add(uid)
        elif not uid:
            bad.append(f"{user}: {what} without a uid precondition")
        elif uid not in created[user]:
            bad.append(f"{user}: {what} (uid {uid}) is not its own")
    return bad


def make_real(api: Api, ns: str, name: str) -> None:
    """A team's real Service `name` in `ns`: created, or, over a placeholder, applied as
    `kubectl apply` would (same object, labels kept, spec replaced): the operator then
    routes to it and removes its own marking."""
    path = f"/api/v1/namespaces/{ns}/services/{name}"
    spec = {"type": "ClusterIP", "ports": [{"name": "http", "port": 80}], "selector": {"app": name}}
    for _ in range(20):
        existing = api.get(path)
        if existing is None:
            status, _ = api.cp.api(
                "POST",
                f"/api/v1/namespaces/{ns}/services",
                {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec},
            )
        else:
            existing["spec"] = spec
            status, _ = api.put(path, existing)
        if status in (200, 201):
            return
        assert status == 409, status  # an operator wrote it meanwhile: read it again
    raise AssertionError(f"could not make {ns}/{name} real")


def owned(api: Api, kind_path: str, instance: str) -> dict[str, tuple[str, str]]:
    """namespace/name -> (uid, resourceVersion) of everything labelled with `instance`."""
    items = api.get(f"{kind_path}?labelSelector={INSTANCE}%3D{instance}")["items"]
    return {
        f"{o['metadata']['namespace']}/{o['metadata']['name']}": (
            o["metadata"]["uid"],
            o["metadata"]["resourceVersion"],
        )
        for o in items
    }


def test_two_helm_releases_share_a_cluster_without_touching_each_others_objects(
    audited: tuple[ControlPlane, Path], tmp_path: Path
) -> None:
    cp, log = audited
    api = Api(cp)
    (tmp_path / "helm").mkdir()
    helm = Helm(cp.bin_dir / "helm", cp, tmp_path / "helm")
    for ns in ("prod-a", "prod-b", "shared", "dev-a", "dev-b"):
        cp.kubectl("create", "namespace", ns)
    configs = {
        "a": {"defaultNamespace": "prod-a", "developerNamespaces": ["shared", "dev-a"]},
        "b": {"defaultNamespace": "prod-b", "developerNamespaces": ["shared", "dev-b"]},
    }
    users, operators, instance = {}, {}, {}
    for key, config in configs.items():
        install(helm, key, config)
        operators[key], users[key] = release_operator(cp, key, tmp_path)
        operators[key].start()
        # Each release's identity: its ConfigMap's namespace and name.
        instance[key] = f"{key}.{operators[key].config_map}"

    # The churn run: names in both default namespaces (clashing placeholders in `shared`),
    # real Services appearing over placeholders and going again, names removed.
    rng = random.Random(7)
    names = [f"svc-{i}" for i in range(12)]
    present: dict[str, set[str]] = {ns: set() for ns in ("prod-a", "prod-b", "shared")}
    for name in names:
        for ns in ("prod-a", "prod-b"):
            if rng.random() < 0.8:
                api.create_service(ns, name)
                present[ns].add(name)
    for _ in range(40):
        ns = rng.choice(["prod-a", "prod-b", "shared", "shared"])
        name = rng.choice(names)
        if name in present[ns]:
            assert api.delete_service(ns, name) == 200
            present[ns].discard(name)
        elif ns == "shared":
            make_real(api, ns, name)
            present[ns].add(name)
        else:
            api.create_service(ns, name)
            present[ns].add(name)

    def converged(key: str) -> bool:
        d = configs[key]["defaultNamespace"]
        own_dev = "dev-a" if key == "a" else "dev-b"
        for name in names:
            vs = api.vs(d, f"{name}-virtual-service")
            if (vs is not None) != (name in present[d]):
                return False
            if vs is None:
                if api.service(own_dev, name) is not None:
                    return False  # its placeholder not yet removed
                continue
            if vs["metadata"]["labels"].get(INSTANCE) != instance[key]:
                return False
            routed = {r["name"] for r in vs["spec"]["http"] if r.get("name", "").startswith("dev-")}
            if routed != ({"dev-shared"} if name in present["shared"] else set()):
                return False
            ph = api.service(own_dev, name)
            if ph is None or ph["metadata"]["labels"].get(INSTANCE) != instance[key]:
                return False
            shared = api.service("shared", name)
            if name not in present["shared"] and (
                shared is None or PLACEHOLDER not in shared["metadata"]["labels"]
            ):
                return False  # a placeholder there: ours or the other's (first come keeps it)
        return operators[key].idle() and operators[key].swept()

    for key in configs:
        wait_for(lambda key=key: converged(key), 120, f"instance {key} converged")

    # Clashing names: each placeholder in `shared` has one owner, pointing to its own D.
    for name in names:
        svc = api.service("shared", name)
        if svc is not None and name not in present["shared"]:
            owner = svc["metadata"]["labels"][INSTANCE]
            d = "prod-a" if owner == instance["a"] else "prod-b"
            assert svc["spec"]["externalName"] == f"{name}.{d}.svc.cluster.local"

    assert ownership_violations(log, {k: users[k] for k in configs}) == []

    # Uninstall b (its Deployment's operator stops, then helm uninstall), then restart a:
    # a full resync and an orphan sweep, with b's leftovers in the cluster.
    vss = "/apis/networking.istio.io/v1/virtualservices"
    services = "/api/v1/services"
    before_a = {**owned(api, vss, instance["a"]), **owned(api, services, instance["a"])}
    before_b = {**owned(api, vss, instance["b"]), **owned(api, services, instance["b"])}
    assert before_a and before_b
    assert operators["b"].stop() == 0
    # --no-hooks: the chart's pre-delete hook is a Job that stops the Deployment, and no
    # kubelet runs Jobs here; b's operator, a process, is stopped above instead.
    helm.run("uninstall", "b", "-n", "b", "--no-hooks")
    assert operators["a"].stop() == 0
    restarted = OperatorProcess(
        cp,
        operators["a"].kubeconfig,
        operators["a"].config_map,
        tmp_path / "a-restarted.log",
        operators["a"].extra_args,
    ).start()
    wait_for(lambda: restarted.idle() and restarted.swept(), 120, "restarted A settled")
    after_a = {**owned(api, vss, instance["a"]), **owned(api, services, instance["a"])}
    after_b = {**owned(api, vss, instance["b"]), **owned(api, services, instance["b"])}
    assert after_a == before_a  # nothing rewritten: A was converged
    assert after_b == before_b  # B's leftovers: not A's to touch
    assert ownership_violations(log, {k: users[k] for k in configs}) == []
    restarted.stop()
