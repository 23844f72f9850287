"""`make demo` (python -m virtualservice_operator_dev.demo) runs to its end: its own
control plane, the operator converging the sample, a developer's Service routed."""

from __future__ import annotations

import subprocess
import sys

from virtualservice_operator_dev.controlplane import REPO_ROOT


def test_demo_runs_to_the_end() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "virtualservice_operator_dev.demo"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = out.stdout + out.stderr
    assert out.returncode == 0, output[-4000:]
    assert "== Done: control plane stopped, nothing left running" in output, output[-4000:]
    # The two-port Service's routes, port by port; the developer's checkout routed.
    assert "cart.production.svc.cluster.local:9090" in output, output[-4000:]
    assert "checkout.dev-team-b.svc.cluster.local" in output, output[-4000:]
