"""Two small processes to run beside a benchmark on the same machine (issue 21's quiet L
runs, bench/README.md "The server's extra CPU on a quiet machine").

    python -m bench.beside burn [--duty 0.45]   # a stand-in for the operator's CPU
    python -m bench.beside probe                # the machine's speed and steal, per second

`burn`: Python that walks a 300,000-dict heap (random reads and writes) for `duty` of the
time in slices of 4 ms of its own CPU, sending no request: what the operator's Python does
to the two CPUs it shares with kube-apiserver and etcd, without its requests.
`probe`: every second, the CPU time a fixed piece of Python work takes (more for the same
work: a slower CPU), and the machine's steal and busy jiffies since the last line
(`unix-time work-ms steal busy idle`).
"""

from __future__ import annotations

import argparse
import random
import time
from typing import Any


def burn(duty: float, slice_s: float = 0.004, size: int = 300_000) -> None:
    heap: list[dict[str, Any]] = [
        {"name": f"svc-{i}", "ns": f"ns-{i % 10}", "port": i % 65535, "labels": {"a": str(i)}}
        for i in range(size)
    ]
    rnd = random.Random(1)
    while True:
        c0 = time.thread_time()
        while time.thread_time() - c0 < slice_s:
            for _ in range(200):
                d = heap[rnd.randrange(size)]
                d["port"] = (d["port"] + len(d["name"])) % 65535
        time.sleep(slice_s * (1 - duty) / duty)


def _stat() -> tuple[int, int, int]:
    """(steal, busy, idle) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[7], sum(v[:3]) + sum(v[5:7]), v[3] + v[4]


def _work() -> int:
    s = 0
    for i in range(60000):
        s += i * i % 7
    return s


def probe() -> None:
    prev = _stat()
    while True:
        t = time.time()
        c0 = time.thread_time()
        _work()
        c1 = time.thread_time()
        time.sleep(1.0)
        cur = _stat()
        steal, busy, idle = (c - p for c, p in zip(cur, prev, strict=True))
        print(f"{t:.1f} {1000 * (c1 - c0):.2f} {steal} {busy} {idle}", flush=True)
        prev = cur


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.beside", description=__doc__)
    sub = p.add_subparsers(dest="what", required=True)
    b = sub.add_parser("burn")
    b.add_argument("--duty", type=float, default=0.45, help="share of one CPU (0-1]")
    sub.add_parser("probe")
    args = p.parse_args(argv)
    if args.what == "burn":
        burn(args.duty)
    else:
        probe()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
