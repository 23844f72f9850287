"""A slow API server on purpose: kube-apiserver and etcd held to a CPU quota.

Both processes are moved into a cgroup of their own with a CFS quota (cgroup v2's
`cpu.max`, or v1's `cpu.cfs_quota_us`), so that every request they serve gets at most
`cpus` CPUs between them, whatever else runs on the machine: the benchmark's own Python
and the operator are left out. Needs write access to the cgroup file system (root).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

PERIOD_US = 100_000
ROOT = Path("/sys/fs/cgroup")


def _cgroup_dir(name: str) -> tuple[Path, bool]:
    """(the new cgroup's folder, whether it is cgroup v2)."""
    if (ROOT / "cgroup.controllers").exists():  # v2, unified
        return ROOT / name, True
    if (ROOT / "cpu" / "cgroup.procs").exists():  # v1, cpu controller
        return ROOT / "cpu" / name, False
    raise RuntimeError(f"no writable cpu cgroup controller under {ROOT}")


@contextlib.contextmanager
def cpu_quota(pids: list[int], cpus: float) -> Iterator[Path]:
    """Hold `pids` to `cpus` CPUs together until the block ends; then move them back."""
    if cpus <= 0:
        raise ValueError(f"cpus must be positive, got {cpus}")
    path, v2 = _cgroup_dir(f"vso-bench-{os.getpid()}")
    parent = path.parent
    path.mkdir()
    try:
        quota = int(cpus * PERIOD_US)
        if v2:
            (path / "cpu.max").write_text(f"{quota} {PERIOD_US}\n")
        else:
            (path / "cpu.cfs_period_us").write_text(f"{PERIOD_US}\n")
            (path / "cpu.cfs_quota_us").write_text(f"{quota}\n")
        for pid in pids:
            (path / "cgroup.procs").write_text(f"{pid}\n")
        yield path
    finally:
        for pid in (path / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):  # gone already
                (parent / "cgroup.procs").write_text(f"{pid}\n")
        path.rmdir()
