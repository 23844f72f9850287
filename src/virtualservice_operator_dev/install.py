"""The operator on a node as a user installs it: its image loaded into the node's
containerd (no registry), then the README's "Install on a cluster" lines run as written."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from virtualservice_operator_dev.controlplane import REPO_ROOT
from virtualservice_operator_dev.node import Node

OPERATOR_NS = "virtualservice-operator-system"
CRD_LINE = "deployments/crd"  # the README's line for a cluster without Istio


def readme_install_lines() -> list[str]:
    """The commands of the README's "Install on a cluster" block, comments dropped."""
    text = (REPO_ROOT / "README.md").read_text()
    block = text.split("## Install on a cluster", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.strip().splitlines()]


def operator_image() -> str:
    """The image deployments/deployment.yaml runs."""
    deployment = (REPO_ROOT / "deployments" / "deployment.yaml").read_text()
    return next(
        line.split()[1] for line in deployment.splitlines() if line.strip().startswith("image:")
    )


def image_archive() -> Path | None:
    """The archive `make image` writes (hack/image/build.sh), if it has been built."""
    cache = Path(os.environ.get("VSO_CACHE_DIR", REPO_ROOT / ".cache"))
    return next((cache / "image").glob("virtualservice-operator-v*.oci.tar"), None)


def load_image(node: Node) -> bool:
    """The operator's image in the node's containerd; False when it was never built.

    Imported whenever the archive is there: containerd keeps its images across nodes
    (under the node's VAR_DIR), and an image by the same reference may be an older build."""
    archive = image_archive()
    if archive is not None:
        node.import_image(archive)
        return True
    return operator_image() in node.ctr("images", "ls", "-q").stdout.split()


def user_env(node: Node) -> dict[str, str]:
    """A user's shell on the node: its admin kubeconfig, and its kubectl and helm first."""
    return {
        **os.environ,
        "KUBECONFIG": str(node.admin_kubeconfig),
        "PATH": f"{node.bin_dir}:{os.environ['PATH']}",
    }


def run_readme_install(
    env: dict[str, str], *, skip_crds: bool = False, installed_before: bool = False
) -> None:
    """Runs the README's install lines as written, each through bash in the repository.
    `skip_crds`: on a cluster with Istio (it owns the CRD). `installed_before`: the
    namespace may already exist (another install came first)."""
    for line in readme_install_lines():
        if skip_crds and CRD_LINE in line:
            continue
        result = subprocess.run(
            ["bash", "-c", line],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        existed = installed_before and "AlreadyExists" in result.stderr
        if result.returncode != 0 and not existed:
            raise RuntimeError(f"{line}: {result.stderr.strip()}")


def install_with_istio(node: Node, timeout: float = 180) -> None:
    """The README's lines on a cluster with Istio (the CRD line skipped: Istio owns that
    CRD), then wait for the Deployment to be rolled out."""
    run_readme_install(user_env(node), skip_crds=True)
    node.kubectl(
        "rollout", "status", "deployment/virtualservice-operator", "-n", OPERATOR_NS,
        f"--timeout={int(timeout)}s", timeout=timeout + 20,
    )  # fmt: skip
