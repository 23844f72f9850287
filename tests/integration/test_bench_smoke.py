"""The benchmark end to end at scale XS (20 Services x 2 developer namespaces), quickly.

`make bench` itself is not part of `make test`; this keeps its code working. It runs on
its own control plane: the operator's caches are cluster-wide (managed VirtualServices,
placeholders), so sharing the session's would mix other tests' objects into its counts.
Only what must hold at any speed is asserted; times are reported, not judged.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from bench import report
from bench.core import SCALES, Options, run_scale

pytestmark = pytest.mark.integration


def test_bench_smoke_xs(tmp_path: Path) -> None:
    began = time.monotonic()
    options = Options(
        wide_concurrency=0,
        churn_rate=20.0,
        churn_seconds=2.0,
        churn_drain_timeout=15.0,
        out_dir=tmp_path,
        log=print,
    )
    res = run_scale(SCALES["XS"], options)
    elapsed = time.monotonic() - began

    for key in (
        "services",
        "dev_namespaces",
        "converge_s",
        "floor_s",
        "ratio_to_floor",
        "writes",
        "needed_writes",
        "steady_state_writes",
        "peak_rss_mib",
        "cpu_s",
        "churn_p50_ms",
        "churn_p99_ms",
        "churn_ack_p99_ms",  # the API server's own answer time in the same seconds
        "status_s",
        "explain_s",
        "status_peak_rss_mib",
    ):
        assert res.get(key) is not None, key
    assert (res["services"], res["dev_namespaces"]) == (20, 2)
    # 20 VirtualServices; 4 names hold a real Service in one developer namespace each.
    assert res["needed_writes"] == 20 + 20 * 2 - res["dev_services"]
    assert res["verify"] == {"wrong_or_missing": 0, "extra": 0}
    assert res["steady_state_writes"] == 0  # the design's contract: converged = no request
    assert res["churn_changes"] > 0 and res["churn_failed"] == 0
    assert res["status_rows"] == 20  # status --check exited 0: every name in sync

    results = {"machine": {}, "date": "", "scales": {"XS": res}}
    report.write_all(results, tmp_path)
    text = (tmp_path / "latest.md").read_text()
    assert "| XS |" in text
    assert "the API server answered the benchmark's own writes in p99" in text
    print(f"\nXS bench took {elapsed:.1f}s")  # reported, not judged: timing is the benchmark's job


def test_bench_commands_only_xs(tmp_path: Path) -> None:
    """`--commands-only`: the end state created directly, then only status and explain."""
    options = Options(out_dir=tmp_path, log=print, commands_only=True, command_runs=1)
    res = run_scale(SCALES["XS"], options)
    assert res["status_rows"] == 20  # status --check exited 0: what was made is in sync
    assert res["needed_writes"] == 20 + 20 * 2 - res["dev_services"]
    assert res["status_s"] > 0 and res["explain_s"] > 0 and res["status_peak_rss_mib"] > 0
    assert "converge_s" not in res
    results = {"machine": {}, "date": "", "scales": {"XS": res}}
    report.write_all(results, tmp_path)
    assert "| XS | 20 |" in (tmp_path / "latest.md").read_text()
