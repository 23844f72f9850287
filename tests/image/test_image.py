"""`make image` end to end: the Dockerfile built with buildah (no daemon, no registry), its
OCI archive imported into a containerd started here (never the node's), and the image run
read-only as uid 65532, the way deployments/deployment.yaml runs it.

Needs root (buildah, containerd and runc). Elsewhere the tests skip with one line saying
why, except under CI=true, where that is a failure: CI must never pass by skipping them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FIGURES
from virtualservice_operator import __version__

ROOT = Path(__file__).resolve().parents[2]
REPOSITORY = "harbor.intent.ai/library/virtualservice-operator"
REFERENCE = f"{REPOSITORY}:v{__version__}"
CACHE = Path(os.environ.get("VSO_CACHE_DIR", ROOT / ".cache"))
ARCHIVE = CACHE / "image" / f"virtualservice-operator-v{__version__}.oci.tar"
# The first build on a fresh machine: the Debian base, then the image (pip, apt).
BUILD_TIMEOUT = 1500

pytestmark = pytest.mark.timeout(BUILD_TIMEOUT + 300)


def _unable_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (buildah, containerd and runc run as root here)"
    if not (shutil.which("buildah") or shutil.which("apt-get")):
        return "needs buildah, or apt-get to install it"
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "needs overlayfs (buildah's storage and containerd's snapshotter)"
    return None


def _require_image_environment() -> None:
    reason = _unable_reason()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"image tests cannot run here under CI=true: {reason}")
    pytest.skip(f"image tests skipped: {reason}")


def _run(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    done = subprocess.run(
        args, capture_output=True, text=True, env=env, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{args} failed ({done.returncode}):\n{done.stderr}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def built() -> str:
    """Runs `hack/image/build.sh` (what `make image` runs); returns its output."""
    _require_image_environment()
    start = time.monotonic()
    out = _run("bash", str(ROOT / "hack/image/build.sh"), timeout=BUILD_TIMEOUT)
    FIGURES["make image (base and layers cached when unchanged)"] = (
        f"{time.monotonic() - start:.0f} s"
    )
    return out


@dataclass
class Containerd:
    address: str

    def ctr(self, *args: str, timeout: float = 120) -> str:
        return _run(
            "ctr", "--address", self.address, "--namespace", "k8s.io", *args, timeout=timeout
        )


@pytest.fixture(scope="module")
def containerd(built: str) -> Iterator[Containerd]:
    """A containerd of our own: root, state and socket in a temporary folder."""
    if not shutil.which("containerd"):
        _run("apt-get", "install", "-y", "-q", "containerd", timeout=600)
    # Short: a unix socket path must fit in 108 bytes.
    work = Path(tempfile.mkdtemp(prefix="vso-ctd-"))
    address = str(work / "c.sock")
    (work / "config.toml").write_text(
        f"""version = 2
root = "{work}/root"
state = "{work}/state"
# Only images, snapshots and tasks: the CRI plugin would look for a CNI and a kubelet.
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{address}"
[ttrpc]
  address = "{address}.ttrpc"
"""
    )
    log = (work / "containerd.log").open("w")
    proc = subprocess.Popen(
        ["containerd", "--config", str(work / "config.toml")], stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            probe = subprocess.run(
                ["ctr", "--address", address, "version"], capture_output=True, check=False
            )
            if probe.returncode == 0:
                break
            assert proc.poll() is None, (work / "containerd.log").read_text()
            assert time.monotonic() < deadline, "containerd did not answer within 30 s"
            time.sleep(0.2)
        yield Containerd(address)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        # Snapshots stay mounted only while a container runs; unmount any a failed test left.
        for line in Path("/proc/self/mounts").read_text().splitlines():
            target = line.split()[1]
            if target.startswith(str(work)):
                subprocess.run(["umount", "-l", target], check=False)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def loaded(containerd: Containerd) -> Containerd:
    env = dict(os.environ, CONTAINERD_ADDRESS=containerd.address)
    _run("bash", str(ROOT / "hack/image/load.sh"), env=env, timeout=300)
    return containerd


def _archive_config() -> dict[str, Any]:
    """The image config inside the OCI archive (index -> manifest -> config)."""
    with tarfile.open(ARCHIVE) as tar:

        def blob(digest: str) -> dict[str, Any]:
            member = tar.extractfile("blobs/sha256/" + digest.removeprefix("sha256:"))
            assert member is not None
            data: dict[str, Any] = json.load(member)
            return data

        index_file = tar.extractfile("index.json")
        assert index_file is not None
        index = json.load(index_file)
        [manifest_ref] = index["manifests"]
        assert manifest_ref["annotations"]["org.opencontainers.image.ref.name"] == REFERENCE
        manifest = blob(manifest_ref["digest"])
        return blob(manifest["config"]["digest"])


def test_archive_is_the_image_the_manifests_run(built: str) -> None:
    assert f"image {REFERENCE} " in built
    assert "unpacked" in built  # the size is printed
    config = _archive_config()["config"]
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"] == ["virtualservice-operator"]
    assert config["Cmd"] == ["run"]
    assert "HOME=/tmp" in config["Env"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == __version__
    assert labels["org.opencontainers.image.title"] == "virtualservice-operator"
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert labels["org.opencontainers.image.revision"] == head
    # Built on the local Debian base: nothing was pulled from a registry.
    assert labels["org.opencontainers.image.base.name"].startswith("localhost/")
    deployment = (ROOT / "deployments/deployment.yaml").read_text()
    assert f"image: {REFERENCE}\n" in deployment


def test_second_build_reuses_the_image_and_the_archive(built: str) -> None:
    before = ARCHIVE.stat().st_mtime_ns
    again = _run("bash", str(ROOT / "hack/image/build.sh"), timeout=600)
    image_id = ARCHIVE.with_name(ARCHIVE.name + ".id").read_text().strip()
    assert f"({image_id})" in built
    assert f"({image_id})" in again
    assert ARCHIVE.stat().st_mtime_ns == before


def test_load_imports_both_tags(loaded: Containerd) -> None:
    names = loaded.ctr("images", "ls", "-q").split()
    assert REFERENCE in names
    assert f"{REPOSITORY}:v1.3.1" in names  # the guide's `kubectl set image ...:v1.3.1`
    check = loaded.ctr("images", "check", f"name=={REPOSITORY}:v1.3.1")
    assert "complete" in check


def _run_in_image(containerd: Containerd, *command: str) -> subprocess.CompletedProcess[str]:
    """Runs COMMAND in the imported image as the Deployment runs it: the image's user,
    a read-only root filesystem, an empty /tmp, no capabilities, the config mounted."""
    return subprocess.run(
        [
            "ctr", "--address", containerd.address, "--namespace", "k8s.io", "run", "--rm",
            "--read-only", "--seccomp",
            "--mount", "type=tmpfs,src=tmpfs,dst=/tmp,options=nosuid:nodev:mode=1777",
            "--mount",
            f"type=bind,src={ROOT}/deployments/config.yaml,dst=/etc/vso/config.yaml,options=rbind:ro",
            f"{REPOSITORY}:v1.3.1", f"vso-image-test-{uuid.uuid4().hex[:8]}", *command,
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_runs_read_only_as_65532(loaded: Containerd) -> None:
    done = _run_in_image(
        loaded,
        "sh", "-c",
        "id -u; id -g; virtualservice-operator --version;"
        " virtualservice-operator check-config /etc/vso/config.yaml && echo config-ok;"
        " touch /probe 2>/dev/null || echo root-read-only;"
        ' touch "$HOME/probe" && echo home-writable;'
        " curl --version >/dev/null && echo curl-ok",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:3] == ["65532", "65532", f"virtualservice-operator {__version__}"]
    for expected in ("config-ok", "root-read-only", "home-writable", "curl-ok"):
        assert expected in lines, done.stdout


def test_entrypoint_checks_config_without_a_shell(loaded: Containerd) -> None:
    done = _run_in_image(loaded, "virtualservice-operator", "check-config", "/etc/vso/config.yaml")
    assert done.returncode == 0, done.stderr
    assert "config OK" in done.stdout


def test_without_root_skips_with_the_reason_but_fails_under_ci(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="image tests skipped: needs root"):
        _require_image_environment()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="cannot run here under CI=true: needs root"):
        _require_image_environment()


# The first scan on a machine builds trivy from its Go module: a big one.
TRIVY_BUILD_TIMEOUT = 3000


@pytest.mark.timeout(TRIVY_BUILD_TIMEOUT + 300)
def test_scan_finds_no_secrets_and_writes_an_sbom(built: str) -> None:
    start = time.monotonic()
    out = _run("bash", str(ROOT / "hack/image/scan.sh"), timeout=TRIVY_BUILD_TIMEOUT)
    FIGURES["make scan (trivy built once, then cached)"] = f"{time.monotonic() - start:.0f} s"
    sbom_path = CACHE / "image" / "scan" / f"virtualservice-operator-v{__version__}.cdx.json"
    sbom = json.loads(sbom_path.read_text())
    assert sbom["bomFormat"] == "CycloneDX"
    packages = {(c["name"], c.get("version")) for c in sbom["components"]}
    # The operator itself, a pinned dependency, and Debian's curl are all in it.
    assert ("virtualservice-operator", __version__) in packages
    assert ("aiohttp", "3.14.5") in packages
    assert any(name == "curl" for name, _ in packages)
    assert f"SBOM {sbom_path}" in out
