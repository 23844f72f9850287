"""The Go tools built from hack/tools/*/ (hack/build-tools.sh): their pinned versions."""

from __future__ import annotations

import subprocess
from pathlib import Path

from virtualservice_operator_dev.controlplane import REPO_ROOT

TOOLS = REPO_ROOT / "hack" / "tools"
ISTIO_MODULE = TOOLS / "istio"  # istio, helm, metrics-server, trivy
PROMETHEUS_MODULE = TOOLS / "prometheus"  # prometheus, promtool, coredns


def module_version(module: str) -> str:
    """The version the tools' modules require of `module` (a `require` line or a line of
    a `require (...)` block)."""
    for go_mod in (ISTIO_MODULE / "go.mod", PROMETHEUS_MODULE / "go.mod"):
        for line in go_mod.read_text().splitlines():
            words = line.split()
            if words[:1] == ["require"]:
                words = words[1:]
            if len(words) >= 2 and words[0] == module:
                return words[1]
    raise RuntimeError(f"{TOOLS}/*/go.mod: no requirement of {module}")


def built(binary: str) -> Path | None:
    """`binary` (istioctl, promtool...) if hack/build-tools.sh has built it for the
    pinned versions; None otherwise (nothing is built here)."""
    out = subprocess.run(
        ["bash", str(REPO_ROOT / "hack" / "build-tools.sh"), "--dir"],
        check=True,
        capture_output=True,
        text=True,
    )
    path = Path(out.stdout.strip()) / binary
    return path if path.exists() else None
