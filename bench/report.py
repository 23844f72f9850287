"""latest.md (a table with the targets) and latest.png (four panels) from latest.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ORDER = ["XS", "S", "M", "L", "XL"]
TARGETS = {
    "ratio_to_floor": 1.3,  # at M and L
    "ratio_to_go": 1.2,  # at L and XL
    "peak_rss_mib": 150.0,  # at L
    "peak_rss_mib_xl": 200.0,  # at XL
    "churn_p99_ms": 200.0,
    "status_s": 2.0,  # at L, end to end
    "explain_s": 0.5,  # at L, end to end
}


def _f(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _scales(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    scales = results.get("scales") or {}
    return [(n, scales[n]) for n in ORDER if n in scales]


def markdown(results: dict[str, Any]) -> str:
    m = results.get("machine") or {}
    lines = [
        "# virtualservice-operator benchmark: latest results",
        "",
        f"Machine: {m.get('cpu', '?')}, {m.get('cpus', '?')} CPUs, "
        f"{m.get('memory_mib', '?')} MiB; {m.get('os', '')}; Python {m.get('python', '')}; "
        f"{m.get('kube_apiserver', '')}; {m.get('etcd', '')}. Written {results.get('date', '')}.",
        "Times are from one run per scale on a shared, noisy machine: compare the ratios, "
        "not absolute seconds across runs.",
        "",
        "| scale | Services × dev ns | objects needed | converge s | Go writer s (best c) | "
        "operator / Go | floor s (same concurrency) | operator / floor | floor s (wide) | "
        "writes (needed) | events | steady writes | peak RSS MiB cold / restart | "
        "KiB per watched Service | CPU s (floor) | churn p50 / p99 ms | churn done p99 ms | "
        "queue depth max | churn writes (needed) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in _scales(results):
        if "error" not in r and "converge_s" not in r:
            continue  # only the commands were run at this scale (below)
        if "error" in r:
            lines.append(
                f"| {name} | {r.get('services')} × {r.get('dev_namespaces')} | "
                f"did not finish: {r['error']} |" + " |" * 16
            )
            continue
        wide = r.get("floor_wide_s")
        lines.append(
            "| "
            + " | ".join(
                [
                    name,
                    f"{r['services']} × {r['dev_namespaces']}",
                    str(r["needed_writes"]),
                    _f(r["converge_s"]),
                    f"{_f(r['go_floor_s'])} (c={r['go_floor_concurrency']})"
                    if r.get("go_floor_s")
                    else "–",
                    _f(r.get("ratio_to_go")),
                    _f(r.get("floor_s")),
                    _f(r.get("ratio_to_floor")),
                    f"{_f(wide)} (c={r.get('floor_wide_concurrency')})" if wide else "–",
                    f"{r['writes']} ({r['needed_writes']})",
                    str(r.get("event_writes", "–")),
                    str(r["steady_state_writes"]),
                    f"{_f(r['peak_rss_mib'], 0)} / {_f(r.get('resync_peak_rss_mib'), 0)}",
                    _f(kib_per_watched(r)),
                    f"{_f(r['cpu_s'], 1)} ({_f(r.get('floor_cpu_s'), 1)})",
                    f"{_f(r.get('churn_p50_ms'), 0)} / {_f(r.get('churn_p99_ms'), 0)}",
                    _f(r.get("churn_done_p99_ms"), 0),
                    _f(r.get("churn_queue_depth_max"), 0),
                    f"{r.get('churn_writes', '–')} ({r.get('churn_needed_writes', '–')})",
                ]
            )
            + " |"
        )
    lines += ["", "Targets:", ""]
    for name, r in _scales(results):
        if "error" in r:
            continue
        checks = []
        if name == "L" and r.get("status_s") is not None:
            checks.append(_target("status < 2 s", r["status_s"] < TARGETS["status_s"]))
            checks.append(_target("explain < 0.5 s", r["explain_s"] < TARGETS["explain_s"]))
        if "converge_s" not in r:
            lines.append(f"- {name}: " + "; ".join(checks))
            continue
        if name in ("M", "L") and r.get("ratio_to_floor") is not None:
            checks.append(_target("converge within 1.3× floor", r["ratio_to_floor"] <= 1.3))
        if name in ("L", "XL") and r.get("ratio_to_go") is not None:
            checks.append(_target("converge within 1.2× the Go writer", r["ratio_to_go"] <= 1.2))
        checks.append(_target("writes = needed", r["writes"] == r["needed_writes"]))
        checks.append(_target("0 writes in steady state", r["steady_state_writes"] == 0))
        if name == "L":
            peak = max(r["peak_rss_mib"], r.get("resync_peak_rss_mib") or 0)
            checks.append(_target("peak RSS < 150 MiB (cold and restart)", peak < 150))
        if name == "XL":
            peak = max(r["peak_rss_mib"], r.get("resync_peak_rss_mib") or 0)
            checks.append(_target("peak RSS < 200 MiB (cold and restart)", peak < 200))
        if r.get("churn_p99_ms") is not None:
            own = r.get("churn_ack_p99_ms")
            checks.append(
                _target(f"churn p99 < 200 ms at {r.get('churn_rate')}/s", r["churn_p99_ms"] < 200)
                + (
                    f" (the API server answered the benchmark's own writes in p99 {own:.0f} ms)"
                    if own is not None
                    else ""
                )
            )
        lines.append(f"- {name}: " + "; ".join(checks))
    lines += go_table(results)
    lines += commands_table(results)
    lin = linearity(results)
    if lin:
        lines += ["", "Cost per needed object (linear in N if these stay flat):", ""]
        lines.append(
            "| scale | converge ms/object | Go writer ms/object | floor ms/object | "
            "operator CPU ms/object | peak RSS KiB per watched Service, marginal |"
        )
        lines.append("|---|---|---|---|---|---|")
        for name, row in lin:
            lines.append(
                f"| {name} | {_f(row['converge'])} | {_f(row['go'])} | {_f(row['floor'])} | "
                f"{_f(row['cpu'])} | {_f(row['marginal_kib'])} |"
            )
    return "\n".join(lines) + "\n"


def go_table(results: dict[str, Any]) -> list[str]:
    """The Go writer's sweep, and who used the CPU: the operator, or the API server and
    etcd (their share of the machine says which one bounds the convergence)."""
    rows = [(n, r) for n, r in _scales(results) if r.get("go_floor_sweep")]
    if not rows:
        return []
    cpus = (results.get("machine") or {}).get("cpus") or 1
    lines = [
        "",
        "Against the Go writer (client-go, protobuf Services, JSON VirtualServices), its "
        "concurrency swept; CPU seconds of kube-apiserver + etcd while each wrote, and "
        f"their share of the {cpus} CPUs:",
        "",
        "| scale | Go writer sweep: concurrency = s | operator converge s | operator / Go | "
        "API server + etcd CPU s (share), Go writer | the same, operator | operator CPU s | "
        "load at Go / converge |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows:
        sweep = ", ".join(f"{c} = {t:.1f}" for c, t in r["go_floor_sweep"].items())
        go_server, op_server = r.get("go_floor_server_cpu_s"), r.get("server_cpu_s")
        go_share = go_server / (r["go_floor_s"] * cpus) if go_server else None
        converge = r.get("converge_s")
        op_share = op_server / (converge * cpus) if op_server and converge else None
        loads = r.get("go_floor_sweep_load") or {}
        go_load = loads.get(str(r.get("go_floor_concurrency")))
        lines.append(
            f"| {name} | {sweep} | {_f(converge)} | {_f(r.get('ratio_to_go'))} | "
            f"{_f(go_server, 1)} ({_pct(go_share)}) | {_f(op_server, 1)} ({_pct(op_share)}) | "
            f"{_f(r.get('cpu_s'), 1)} | {_f(go_load, 1)} / {_f(r.get('load_at_converge'), 1)} |"
        )
    return lines


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f}%"


def commands_table(results: dict[str, Any]) -> list[str]:
    rows = [(n, r) for n, r in _scales(results) if r.get("status_s") is not None]
    if not rows:
        return []
    lines = [
        "",
        "Read-only commands on the converged cluster, each its own process with admin "
        "credentials, spawn to exit (median of the runs; load = 1-minute load average):",
        "",
        "| scale | names | status s | status peak RSS MiB | status CPU s | explain s | "
        "explain CPU s | load |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows:
        lines.append(
            f"| {name} | {r.get('status_rows', '–')} | {_f(r['status_s'])} | "
            f"{_f(r['status_peak_rss_mib'], 0)} | {_f(r.get('status_cpu_s'))} | "
            f"{_f(r['explain_s'])} | {_f(r.get('explain_cpu_s'))} | "
            f"{_f(r.get('load_at_commands'), 1)} |"
        )
    return lines


def watched_services(r: dict[str, Any]) -> int:
    """Services the operator watches once converged: the inputs and its placeholders."""
    return int(r.get("input_services") or 0) + int(r.get("needed_placeholders") or 0)


def kib_per_watched(r: dict[str, Any]) -> float | None:
    """Peak RSS (cold or restart) per watched Service, the whole process included."""
    n = watched_services(r)
    if not n or r.get("peak_rss_mib") is None:
        return None
    return 1024 * max(r["peak_rss_mib"], r.get("resync_peak_rss_mib") or 0) / n


def _target(text: str, ok: bool) -> str:
    return f"{text}: {'met' if ok else 'MISSED'}"


def linearity(results: dict[str, Any]) -> list[tuple[str, dict[str, float | None]]]:
    """Per scale, costs per object; `marginal_kib` is the peak RSS added per watched
    Service since the scale before (the process's fixed base cancels out)."""
    out: list[tuple[str, dict[str, float | None]]] = []
    prev: dict[str, Any] | None = None
    for name, r in _scales(results):
        if "error" in r or not r.get("needed_writes") or "converge_s" not in r:
            continue
        n = r["needed_writes"]
        out.append(
            (
                name,
                {
                    "converge": 1000 * r["converge_s"] / n,
                    "floor": 1000 * r["floor_s"] / n if r.get("floor_s") else None,
                    "go": 1000 * r["go_floor_s"] / n if r.get("go_floor_s") else None,
                    "cpu": 1000 * r["cpu_s"] / n,
                    "marginal_kib": _marginal_kib(prev, r),
                },
            )
        )
        prev = r
    return out


def _marginal_kib(prev: dict[str, Any] | None, r: dict[str, Any]) -> float | None:
    if prev is None:
        return None
    dn = watched_services(r) - watched_services(prev)
    if dn <= 0:
        return None

    def peak(x: dict[str, Any]) -> float:
        return float(max(x["peak_rss_mib"], x.get("resync_peak_rss_mib") or 0))

    return 1024 * (peak(r) - peak(prev)) / dn


def plot(results: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [(n, r) for n, r in _scales(results) if "error" not in r and "converge_s" in r]
    if not rows:
        return False
    names = [n for n, _ in rows]
    x = list(range(len(rows)))
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    m = results.get("machine") or {}
    fig.suptitle(
        f"virtualservice-operator benchmark ({m.get('cpus', '?')} CPUs, "
        f"{results.get('date', '')[:10]}; one run per scale)",
        fontsize=13,
    )

    ax = axes[0][0]
    objs = [r["needed_writes"] for _, r in rows]
    ax.plot(
        objs,
        [r["converge_s"] for _, r in rows],
        "o-",
        label=f"operator ({rows[0][1].get('workers', 1)} worker(s))",
    )
    for key, style, label in (
        ("floor_s", "s--", "floor, same concurrency"),
        ("go_floor_s", "D-.", "Go writer, best concurrency"),
    ):
        line = [(o, r[key]) for o, (_, r) in zip(objs, rows, strict=True) if r.get(key)]
        if line:
            ax.plot(*zip(*line, strict=True), style, label=label)
    wide = [
        (o, r["floor_wide_s"])
        for o, (_, r) in zip(objs, rows, strict=True)
        if r.get("floor_wide_s")
    ]
    if wide:
        ax.plot(*zip(*wide, strict=True), "^:", label="floor, wide concurrency")
    for o, n, (_, r) in zip(objs, names, rows, strict=True):
        ax.annotate(n, (o, r["converge_s"]), xytext=(-4, 6), textcoords="offset points", ha="right")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("objects to create (VirtualServices + placeholders)")
    ax.set_ylabel("seconds to converge")
    ax.set_title("Cold convergence (linear = slope 1)")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)

    ax = axes[0][1]
    for offset, key, limit, label in (
        (-0.2, "ratio_to_floor", 1.3, "/ Python floor, same concurrency (target 1.3×)"),
        (0.2, "ratio_to_go", 1.2, "/ Go writer, best concurrency (target 1.2×)"),
    ):
        bars = [(i + offset, r[key]) for i, (_, r) in enumerate(rows) if r.get(key)]
        if not bars:
            continue
        ax.bar(
            [b[0] for b in bars],
            [b[1] for b in bars],
            0.4,
            color=["tab:green" if v <= limit else "tab:red" for _, v in bars],
            alpha=1.0 if offset > 0 else 0.5,
            label=label,
        )
        for i, v in bars:
            ax.text(i, v, f"{v:.2f}×", ha="center", va="bottom", fontsize=8)
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xticks(x, names)
    ax.set_title("Operator convergence time / reference writer's")
    ax.legend(fontsize=8)

    ax = axes[0][2]
    written = [r["writes"] for _, r in rows]
    ax.bar([i - 0.2 for i in x], objs, 0.4, label="needed")
    ax.bar([i + 0.2 for i in x], written, 0.4, label="written (Services + VirtualServices)")
    ax.set_yscale("log")
    ax.set_xticks(x, names)
    for i, (_, r) in enumerate(rows):
        ax.text(
            i,
            max(objs[i], written[i]),
            f"steady: {r['steady_state_writes']}",
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_title("API writes (cold) and steady-state writes")
    ax.legend(fontsize=8)

    ax = axes[1][0]
    rss = [r["peak_rss_mib"] for _, r in rows]
    rss2 = [r.get("resync_peak_rss_mib") or 0 for _, r in rows]
    ax.bar([i - 0.2 for i in x], rss, 0.4, color="tab:blue", label="cold convergence")
    ax.bar([i + 0.2 for i in x], rss2, 0.4, color="tab:purple", label="restart (full resync)")
    ax.axhline(150, color="k", ls="--", lw=1, label="target at L: 150 MiB")
    for i, (a, b) in enumerate(zip(rss, rss2, strict=True)):
        ax.text(i - 0.2, a, f"{a:.0f}", ha="center", va="bottom", fontsize=8)
        ax.text(i + 0.2, b, f"{b:.0f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, names)
    ax.set_ylabel("MiB")
    ax.set_title("Operator peak RSS (VmHWM)")
    ax.legend(fontsize=8, loc="upper left")

    ax = axes[1][1]
    p50 = [max(r.get("churn_p50_ms") or 1, 1) for _, r in rows]
    p99 = [max(r.get("churn_p99_ms") or 1, 1) for _, r in rows]
    ax.bar([i - 0.2 for i in x], p50, 0.4, label="p50")
    ax.bar([i + 0.2 for i in x], p99, 0.4, label="p99")
    ax.axhline(200, color="k", ls="--", lw=1, label="p99 target 200 ms")
    for i, v in enumerate(p99):
        ax.text(i + 0.2, v, f"{v:.0f}", ha="center", va="bottom", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylim(1, max([*p99, 200]) * 30)
    ax.set_xticks(x, names)
    ax.set_ylabel("ms (log)")
    rate = rows[0][1].get("churn_rate")
    ax.set_title(f"Churn at {rate}/s: change → operator write seen")
    ax.legend(fontsize=8, loc="upper left")

    ax = axes[1][2]
    for n, r in rows:
        series = r.get("churn_queue_depth_series") or []
        if series:
            ax.plot([t for t, _ in series], [d for _, d in series], label=n)
    ax.axvline(
        rows[0][1].get("churn_seconds") or 0, color="grey", ls=":", lw=1, label="churn stops"
    )
    ax.set_xlabel("seconds since churn start")
    ax.set_ylabel("workqueue_depth")
    ax.set_title("Queue depth during churn")
    ax.legend(fontsize=8)

    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def cost_plot(results: dict[str, Any], path: Path) -> bool:
    """The cost curve: convergence time (with the Go writer's), API requests, CPU and peak
    RSS against the Services watched, log-log (slope 1 = linear)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(n, r) for n, r in _scales(results) if "converge_s" in r and watched_services(r)]
    if len(rows) < 2:
        return False
    watched = [watched_services(r) for _, r in rows]
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.5))
    fig.suptitle("Cost against Services watched (log-log: slope 1 is linear)", fontsize=12)

    def panel(ax: Any, series: list[tuple[str, str, list[float | None]]], title: str) -> None:
        for label, style, values in series:
            points = [(w, v) for w, v in zip(watched, values, strict=True) if v]
            if points:
                ax.plot(*zip(*points, strict=True), style, label=label)
        for w, (n, _) in zip(watched, rows, strict=True):
            ax.axvline(w, color="grey", lw=0.3)
            ax.annotate(
                n,
                (w, 1),
                xycoords=("data", "axes fraction"),
                xytext=(2, -12),
                textcoords="offset points",
                fontsize=8,
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("Services watched")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)

    panel(
        axes[0],
        [
            ("operator", "o-", [r["converge_s"] for _, r in rows]),
            ("Go writer (best concurrency)", "s--", [r.get("go_floor_s") for _, r in rows]),
        ],
        "Cold convergence, s",
    )
    panel(
        axes[1],
        [
            ("writes", "o-", [r["writes"] for _, r in rows]),
            ("Events", "^:", [r.get("event_writes") for _, r in rows]),
        ],
        "API write requests (cold)",
    )
    panel(
        axes[2],
        [
            ("operator", "o-", [r["cpu_s"] for _, r in rows]),
            ("kube-apiserver + etcd", "s--", [r.get("server_cpu_s") for _, r in rows]),
        ],
        "CPU s over the convergence",
    )
    panel(
        axes[3],
        [
            ("cold", "o-", [r["peak_rss_mib"] for _, r in rows]),
            ("restart", "s--", [r.get("resync_peak_rss_mib") for _, r in rows]),
        ],
        "Operator peak RSS, MiB",
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def write_all(results: dict[str, Any], out: Path) -> None:
    (out / "latest.md").write_text(markdown(results))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("matplotlib not installed (pip install -e '.[bench]'): no latest.png")
        return
    if not plot(results, out / "latest.png"):
        print("no scale finished: no latest.png")
    cost_plot(results, out / "cost.png")


if __name__ == "__main__":
    import sys

    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "results"
    write_all(json.loads((out / "latest.json").read_text()), out)
