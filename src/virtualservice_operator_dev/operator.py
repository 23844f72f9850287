"""Running `virtualservice-operator run` as a child process on loopback ports: the one
command line the demo, the tests and the benchmark all start the operator with."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from virtualservice_operator_dev.controlplane import REPO_ROOT, die_with_parent


def run_command(
    kubeconfig: Path | str, metrics_port: int, health_port: int, *flags: str
) -> list[str]:
    """The operator with `kubeconfig`'s credentials, serving on 127.0.0.1, plus `flags`."""
    return [
        sys.executable,
        "-m",
        "virtualservice_operator.cli",
        "run",
        f"-kubeconfig={kubeconfig}",
        f"-metrics-bind-address=127.0.0.1:{metrics_port}",
        f"-health-probe-bind-address=127.0.0.1:{health_port}",
        *flags,
    ]


def run_environment() -> dict[str, str]:
    """This process's environment, unbuffered, without a KUBECONFIG that could override
    the explicit -kubeconfig."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("KUBECONFIG", None)
    return env


def spawn_operator(
    kubeconfig: Path | str,
    metrics_port: int,
    health_port: int,
    log_path: Path,
    *flags: str,
) -> subprocess.Popen[bytes]:
    """Start the operator with `run_command`, its output appended to `log_path`; it dies
    with this process (no stray operator after an interrupted test or benchmark)."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            run_command(kubeconfig, metrics_port, health_port, *flags),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            env=run_environment(),
            preexec_fn=die_with_parent,  # noqa: PLW1509 - the child only execs
        )
