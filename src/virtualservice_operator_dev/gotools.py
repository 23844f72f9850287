"""The Go tools built from hack/tools/*/ (hack/build-tools.sh): their pinned versions."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS = REPO_ROOT / "hack" / "tools"
ISTIO_MODULE = TOOLS / "istio"  # istio, helm, metrics-server, trivy
PROMETHEUS_MODULE = TOOLS / "prometheus"  # prometheus, promtool, coredns


def module_version(
    module: str, go_mods: tuple[Path, ...] = (ISTIO_MODULE / "go.mod", PROMETHEUS_MODULE / "go.mod")
) -> str:
    """The version `go_mods` (the tools' modules unless given) require of `module`: a
    `require` line or a line of a `require (...)` block."""
    for go_mod in go_mods:
        for line in go_mod.read_text().splitlines():
            words = line.split()
            if words[:1] == ["require"]:
                words = words[1:]
            if len(words) >= 2 and words[0] == module:
                return words[1]
    raise RuntimeError(f"{', '.join(map(str, go_mods))}: no requirement of {module}")


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
