"""A release installed from dist/ only, on the node.

`hack/release.sh` (make release) writes dist/; here without the SBOM and scan
(RELEASE_SCAN=0: trivy's first build is long; `make release` has them). Then, with
nothing from the repository but dist/:

- SHA256SUMS checks every file;
- the image archive is imported into the node's containerd, and install.yaml names it
  by the digest the archive holds; install.yaml passes a server-side dry run (its
  namespace, which the manifests share, created for real);
- `helm install` of the packaged chart, pinned to that digest, runs the operator, which
  makes a VirtualService and a placeholder;
- an upgrade from the previous chart (tests/node/previous/) to dist/'s with `helm
  upgrade`, another `helm upgrade` (a Pod value: rolled out) and `helm rollback` leave the
  operator's objects untouched (same resourceVersions), and it keeps working throughout.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.harness import Api, wait_for
from tests.node.test_ha_on_node import Helm, _ensure_namespace
from virtualservice_operator_dev.controlplane import REPO_ROOT
from virtualservice_operator_dev.node import Node

RELEASE = "vso-dist"
NS = "vso-dist-system"
FULLNAME = f"{RELEASE}-virtualservice-operator"
PROD, DEV = "dist-prod", "dist-dev"
PREVIOUS_CHART = Path(__file__).parent / "previous" / "virtualservice-operator-1.3.0-e6c1975.tgz"


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("dist")
    subprocess.run(
        ["bash", str(REPO_ROOT / "hack" / "release.sh")],
        env={**os.environ, "DIST_DIR": str(directory), "RELEASE_SCAN": "0"},
        check=True,
        capture_output=True,
        timeout=1800,
    )
    return directory


@pytest.fixture(scope="module")
def installed(node: Node, dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    helm = Helm(node, tmp_path_factory.mktemp("helm"))
    api = Api(node)
    for ns in (NS, PROD, DEV):
        _ensure_namespace(node, api, ns)
    yield helm, api
    if RELEASE in helm("list", "-n", NS, "-q").split():
        helm("uninstall", RELEASE, "-n", NS, "--wait", "--timeout=3m")
    node.kubectl("delete", "namespace", NS, PROD, DEV, "--wait=false", check=False)


def _digest_image(dist: Path) -> str:
    docs = yaml.safe_load_all((dist / "install.yaml").read_text())
    deployment = next(d for d in docs if d and d["kind"] == "Deployment")
    return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])


def _rollout(node: Node) -> None:
    node.kubectl(
        "rollout", "status", f"deployment/{FULLNAME}", "-n", NS, "--timeout=180s", timeout=190
    )


def test_dist_is_complete_and_checked(dist: Path) -> None:
    names = sorted(p.name for p in dist.iterdir())
    assert names == sorted(
        [
            "SHA256SUMS",
            "install.yaml",
            "virtualservice-operator-1.3.0.tgz",
            "virtualservice-operator-v1.3.0.oci.tar",
            "virtualservice_operator-1.3.0-py3-none-any.whl",
            "virtualservice_operator-1.3.0.tar.gz",
        ]
    ), names
    out = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"], cwd=dist, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0 and out.stdout.count(": OK") == len(names) - 1, out.stdout
    # install.yaml names the image by the digest the archive's index holds.
    with subprocess.Popen(
        ["tar", "-xOf", str(dist / "virtualservice-operator-v1.3.0.oci.tar"), "index.json"],
        stdout=subprocess.PIPE,
    ) as tar:
        index = json.load(tar.stdout)  # type: ignore[arg-type]
    digest = index["manifests"][0]["digest"]
    assert _digest_image(dist) == f"harbor.intent.ai/library/virtualservice-operator@{digest}"


def test_upgrade_from_the_previous_chart_and_rollback_leave_the_objects_untouched(
    node: Node, dist: Path, installed: Any
) -> None:
    helm, api = installed
    node.import_image(dist / "virtualservice-operator-v1.3.0.oci.tar")
    image = _digest_image(dist)
    # Pulled from a registry, containerd records the image under repository@digest too;
    # imported from an archive, only under its tag: add the digest name, as a pull would.
    node.ctr(
        "images", "tag", "--force", "harbor.intent.ai/library/virtualservice-operator:v1.3.0", image
    )
    # A dry run cannot create the namespace the other objects go into: that one for real
    # (it is the manifests' own namespace too), then every object as a dry run.
    docs = [d for d in yaml.safe_load_all((dist / "install.yaml").read_text()) if d]
    namespace = next(d for d in docs if d["kind"] == "Namespace")
    node.kubectl("apply", "-f", "-", input=yaml.safe_dump(namespace))
    out = node.kubectl(
        "apply", "--dry-run=server", "-f", str(dist / "install.yaml"), check=False, timeout=120
    )
    assert out.returncode == 0, out.stderr
    chart = str(dist / "virtualservice-operator-1.3.0.tgz")
    values = [
        "--set", f"config.defaultNamespace={PROD}",
        "--set", f"config.developerNamespaces={{{DEV}}}",
    ]  # fmt: skip
    # Revision 1: the previous chart (the image by tag: it had no image.digest).
    try:
        helm("install", RELEASE, str(PREVIOUS_CHART), "-n", NS, *values, "--wait", "--timeout=2m")
    except AssertionError as e:
        pods = node.kubectl("get", "pods", "-n", NS, "-o", "wide", check=False).stdout
        events = node.kubectl("get", "events", "-n", NS, check=False).stdout
        raise AssertionError(f"{e}\n{pods}\n{events[-3000:]}") from None

    api.create_service(PROD, "dist")
    vs_path = f"/apis/networking.istio.io/v1/namespaces/{PROD}/virtualservices/dist-virtual-service"
    placeholder_path = f"/api/v1/namespaces/{DEV}/services/dist"
    vs = wait_for(lambda: api.get(vs_path), 90, "the VirtualService", 0.5)
    placeholder = wait_for(lambda: api.get(placeholder_path), 90, "the placeholder", 0.5)
    versions = (vs["metadata"]["resourceVersion"], placeholder["metadata"]["resourceVersion"])

    def untouched() -> None:
        now = (
            api.get(vs_path)["metadata"]["resourceVersion"],
            api.get(placeholder_path)["metadata"]["resourceVersion"],
        )
        assert now == versions

    def container() -> dict[str, Any]:
        deployment = json.loads(
            node.kubectl("get", "deployment", FULLNAME, "-n", NS, "-o", "json").stdout
        )
        return dict(deployment["spec"]["template"]["spec"]["containers"][0])

    # Revision 2: this chart, from dist/, as docs/upgrade.md says (the new chart's defaults
    # under the values installed with), pinned to the digest.
    helm("upgrade", RELEASE, chart, "-n", NS, "--reset-then-reuse-values",
         "--set", f"image.digest={image.split('@')[1]}", "--wait", "--timeout=3m")  # fmt: skip
    _rollout(node)
    assert container()["image"] == image
    untouched()
    # Revision 3: a Pod value changed; then back to revision 2.
    helm("upgrade", RELEASE, chart, "-n", NS, "--reuse-values",
         "--set", "logging.zapLogLevel=debug", "--wait", "--timeout=3m")  # fmt: skip
    _rollout(node)
    assert "-zap-log-level=debug" in container()["args"]
    untouched()
    helm("rollback", RELEASE, "2", "-n", NS, "--wait", "--timeout=3m")
    _rollout(node)
    untouched()
    history = json.loads(helm("history", RELEASE, "-n", NS, "-o", "json"))
    assert [h["revision"] for h in history] == [1, 2, 3, 4], history
    # Revision 1 is the previous chart (no pre-delete hook yet), 2 to 4 are dist/'s.
    hooks = [helm("get", "hooks", RELEASE, "-n", NS, f"--revision={r}") for r in (1, 2, 4)]
    assert ["helm.sh/hook: pre-delete" in h for h in hooks] == [False, True, True], hooks[0]
    assert "-zap-log-level=info" in container()["args"]  # revision 2's value is back
    assert container()["image"] == image
    # Still working after both: a new Service gets its VirtualService.
    api.create_service(PROD, "dist-two")
    wait_for(
        lambda: api.get(vs_path.replace("dist-virtual", "dist-two-virtual")),
        90,
        "the second VirtualService",
        0.5,
    )
