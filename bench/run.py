"""Command line of the benchmark: runs the chosen scales and writes the results.

    python -m bench --scales "S M" [--churn-seconds 20] [--profile-seconds 10]
    python -m bench --scales L --commands-only   # time status and explain at L only

Writes <out>/latest.json (figures per scale, machine and date), latest.md (the table)
and latest.png (the plot). Scales not run this time keep their last figures in
latest.json (each scale carries its own date), unless --fresh.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
import traceback
from pathlib import Path
from typing import Any

from bench import report
from bench.core import SCALES, Options, run_scale
from virtualservice_operator.runtime.defaults import DEFAULT_WORKERS
from virtualservice_operator_dev.controlplane import REPO_ROOT, default_bin_dir

ORDER = ["XS", "S", "M", "L", "XL"]


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) // 1024
    except OSError:
        pass

    def version(binary: str, flag: str = "--version") -> str:
        try:
            out = subprocess.run(
                [str(default_bin_dir() / binary), flag],
                check=False,
                capture_output=True,
                text=True,
                timeout=20,
            ).stdout
            return out.strip().splitlines()[0] if out.strip() else ""
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_mib": mem,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "kube_apiserver": version("kube-apiserver"),
        "etcd": version("etcd"),
    }


def parse_scales(values: list[str]) -> list[str]:
    names = [s.strip().upper() for v in values for s in v.replace(",", " ").split() if s.strip()]
    unknown = [s for s in names if s not in SCALES]
    if unknown:
        raise SystemExit(f"unknown scale(s) {unknown}: choose from {list(SCALES)}")
    return sorted(set(names), key=ORDER.index)


def parse_go_concurrency(value: str) -> tuple[int, ...] | None:
    if value == "none":
        return None
    if value == "sweep":
        return ()
    try:
        levels = tuple(int(v) for v in value.replace(",", " ").split())
    except ValueError:
        levels = ()
    if not levels or min(levels) < 1:
        raise SystemExit(f"--go-concurrency {value!r}: 'sweep', 'none' or numbers such as 16,32")
    return levels


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--scales", nargs="+", default=["S", "M"], help="XS, S, M, L, XL (default S M)")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results")
    p.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_WORKERS,
        help="operator -max-concurrent-reconciles (default: its default)",
    )
    p.add_argument("--wide-concurrency", type=int, default=16, help="second floor; 0: skip")
    p.add_argument(
        "--go-concurrency",
        default="sweep",
        help="the Go writer (client-go): 'sweep' (doubling from 2 until throughput stops "
        "rising), a list such as '16,32,64', or 'none'",
    )
    p.add_argument(
        "--apiserver-cpus",
        type=float,
        default=0.0,
        help="hold kube-apiserver and etcd to this many CPUs (a slow API server; root)",
    )
    p.add_argument(
        "--no-floor",
        action="store_true",
        help="skip the Python floor at the operator's concurrency",
    )
    p.add_argument("--churn-rate", type=float, default=50.0)
    p.add_argument("--churn-seconds", type=float, default=20.0, help="0: skip churn")
    p.add_argument("--profile-seconds", type=int, default=0, help="CPU profile during convergence")
    p.add_argument(
        "--server-profile-seconds",
        type=int,
        default=0,
        help="kube-apiserver's and etcd's CPU profiles over each Go writer run and the cold "
        "convergence, in windows of N s until converged, split into parts (bench.pprofsplit); "
        "then the operator's Events posted again by themselves",
    )
    p.add_argument("--fresh", action="store_true", help="forget scales not run this time")
    p.add_argument(
        "--commands-only",
        action="store_true",
        help="create the converged objects directly and time status/explain only "
        "(a scale's other figures are kept)",
    )
    p.add_argument("--command-runs", type=int, default=3, help="runs per command (median kept)")
    p.add_argument(
        "--hold",
        type=Path,
        metavar="FILE",
        help="keep the last scale's cluster: describe it in FILE (JSON: kubeconfig, "
        "namespaces, ConfigMap, API server pid) and wait until FILE is deleted",
    )
    args = p.parse_args(argv)
    scales = parse_scales(args.scales)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    latest = out / "latest.json"
    results: dict[str, Any] = {}
    if latest.exists() and not args.fresh:
        try:
            results = json.loads(latest.read_text())
        except ValueError:
            results = {}
    results["machine"] = machine()
    results["date"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    results.setdefault("scales", {})
    failed = False
    options = Options(
        workers=args.workers,
        wide_concurrency=args.wide_concurrency,
        go_concurrency=parse_go_concurrency(args.go_concurrency),
        floor=not args.no_floor,
        apiserver_cpus=args.apiserver_cpus,
        churn_rate=args.churn_rate,
        churn_seconds=args.churn_seconds,
        profile_seconds=args.profile_seconds,
        server_profile_seconds=args.server_profile_seconds,
        commands_only=args.commands_only,
        command_runs=args.command_runs,
        hold=args.hold,
        out_dir=out,
        log=lambda m: print(m, flush=True),
    )
    for name in scales:
        print(f"== scale {name}: {SCALES[name]}", flush=True)
        try:
            res = run_scale(SCALES[name], options)
        except Exception as e:  # keep the other scales' figures; say what stopped this one
            traceback.print_exc()
            res = {
                "services": SCALES[name].services,
                "dev_namespaces": SCALES[name].dev_namespaces,
                "error": f"{type(e).__name__}: {e}"[:500],
                "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            failed = True
        if args.commands_only:
            # Only the commands' figures are new: keep the rest of the scale's last run.
            new = {"commands_error": res.pop("error")} if "error" in res else res
            new["commands_date"] = res.pop("date")
            res = {**results["scales"].get(name, {}), **new}
        results["scales"][name] = res
        latest.write_text(json.dumps(results, indent=1, sort_keys=False) + "\n")
    report.write_all(results, out)
    print((out / "latest.md").read_text())
    return 1 if failed else 0
