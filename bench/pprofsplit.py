"""Where a Go server's CPU profile goes, in parts that do not overlap.

`go tool pprof -top` ranks functions, and its cumulative figures overlap (a request's
decode is inside its handler, which is inside the filter chain). This reads every sampled
stack (`go tool pprof -traces`) and gives each to one part: the first rule, in the order
listed, that one of the stack's frames matches. The parts of one profile add up to its
total, so two profiles (the Go writer's run, the operator's) can be compared part by part
and turned into CPU-seconds per object written.

    python -m bench.pprofsplit [--etcd | --operator] PROFILE.pb.gz [...]
"""

from __future__ import annotations

import argparse
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

Trace = tuple[float, list[str]]  # (seconds sampled, frames from the leaf to the root)
Rules = Sequence[tuple[str, str]]  # (part, regex searched in each frame)

OTHER = "other"

# kube-apiserver. GC and TLS first: an allocation's GC assist or a socket's encryption is
# counted as such wherever it happens; then the request's stages from the most specific.
APISERVER_RULES: Rules = (
    # Idle-priority marking runs only on a P the server had nothing else for: it takes a
    # CPU the machine may want for something else, but it is no request's work.
    ("GC: idle mark workers", r"^runtime\.gcDrainMarkWorkerIdle"),
    (
        "GC (mark, assist, sweep)",
        r"^runtime\.(gcBgMarkWorker|gcAssistAlloc|bgsweep|bgscavenge|sweepone|"
        r"deductSweepCredit|gcStart|gcMarkDone|gcMarkTermination)",
    ),
    ("TLS", r"^crypto/tls\."),
    # A handler's new goroutine growing its stack (HTTP/2 runs one per request).
    ("goroutine stack growth", r"^runtime\.newstack"),
    (
        "watch: etcd's events into the watch cache",
        r"etcd3\.\(\*watchChan\)|cacher\.\(\*watchCache\)|cacher\.\(\*Cacher\)\.processEvent|"
        r"cacher\.\(\*Cacher\)\.startCaching|cache\.\(\*Reflector\)",
    ),
    (
        "watch: events encoded and sent to watchers",
        r"handlers\.\(\*WatchServer\)|cacher\.\(\*cacheWatcher\)|"
        r"cacher\.\(\*Cacher\)\.dispatchEvent|cacher\.\(\*watcherBookmark",
    ),
    ("lists and gets", r"handlers\.ListResource|handlers\.GetResource"),
    # kube-apiserver's own controllers (the Service IP repair loop, its informers) read
    # through a loopback client-go; what they ask is served as a request like any other.
    (
        "own controllers' client side (loopback client-go)",
        r"k8s\.io/client-go/(rest|gentype|kubernetes)|watch\.\(\*StreamWatcher\)|"
        r"controller\.\(\*Repair",
    ),
    # Before the decoders: a write's stored object is decoded back (protobuf, or JSON for
    # a custom resource) inside the store. (An update's admission and validation run
    # inside the store's GuaranteedUpdate too: counted here; the benchmark's runs create.)
    (
        "storage: etcd client (encode, transaction, gRPC, decode)",
        r"etcd3\.\(\*store\)|go\.etcd\.io/etcd/client|google\.golang\.org/grpc",
    ),
    ("request body: protobuf decode", r"serializer/protobuf\.\(\*Serializer\)\.Decode"),
    (
        "request body: JSON decode (CRD schema included)",
        r"serializer/json\.\(\*Serializer\)\.Decode|schemaCoercingDecoder|"
        r"unstructuredSchemaCoercer",
    ),
    (
        "request body: conversion, defaulting",
        r"versioning\.\(\*codec\)\.Decode|runtime\.Decode$",
    ),
    ("response: encoding and writing", r"responsewriters\."),
    ("managedFields", r"managedfields|fieldmanager|structured-merge-diff"),
    ("admission", r"pkg/admission|admission/"),
    ("registry: strategy, validation", r"registry/|apiserver/pkg/registry"),
    ("authentication, authorization", r"pkg/authentication|pkg/authorization|authorizer|rbac"),
    # The rest of a request: HTTP/2's own (the connection's frames and streams: the
    # handler chain itself runs in goroutines of its own, whose stacks do not say which
    # protocol brought the request), then filters, routing, net/http.
    ("rest of a request: HTTP/2 connection", r"golang\.org/x/net/http2\."),
    ("rest of a request: filters, routing, net/http", r"^net/http\.|/filters\.|/filterlatency\."),
)

# etcd (its profile exists only with --enable-pprof).
ETCD_RULES: Rules = (
    (
        "GC (mark, assist, sweep)",
        r"^runtime\.(gcBgMarkWorker|gcAssistAlloc|bgsweep|bgscavenge|sweepone|"
        r"deductSweepCredit|gcStart)",
    ),
    (
        "watch: events to kube-apiserver",
        r"mvcc\.\(\*watchableStore\)|v3rpc\.\(\*serverWatchStream\)",
    ),
    ("backend (bbolt)", r"go\.etcd\.io/bbolt|mvcc/backend"),
    ("raft, WAL", r"go\.etcd\.io/raft|/wal\.|etcdserver\.\(\*raftNode\)"),
    ("apply (mvcc, txn)", r"etcdserver/apply|/mvcc\.|etcdserver\.\(\*EtcdServer\)\.apply"),
    ("gRPC", r"google\.golang\.org/grpc|golang\.org/x/net/http2"),
)


# The operator (its own /debug/pprof/profile, Python frames as `Class.method`; the
# event loop's thread). The cyclic garbage collector has no frame of its own: its passes
# are charged to the frame whose allocation started them.
OPERATOR_RULES: Rules = (
    # An Event's whole cost, its POST included, before the client's parts take it.
    ("Events (recorder and their POSTs)", r"^EventRecorder\."),
    (
        "log lines (structlog)",
        r"^PrintLogger|BoundLogger|_make_filtering_bound_logger|_make_stamper|JSONRenderer",
    ),
    ("metrics (prometheus_client)", r"^MetricWrapperBase\.|^MutexValue\."),
    ("request bodies: json.dumps", r"^JSONEncoder\.|^dumps$"),
    ("TLS (ssl)", r"^SSLObject\.|^SSLProtocol\.|^_SSLProtocolTransport\."),
    (
        "watch: events read, decoded, applied",
        r"^Informer\._watch$|^KubeClient\.watch$|^_watch_event$",
    ),
    (
        "cache: a write's answer stored (Informer._put, indexes)",
        r"^ClusterCache\.record_write$|^Informer\.(upsert|_put)$",
    ),
    ("answers decoded (msgspec)", r"^_json$|^version_of_json$|^_answer$"),
    (
        "HTTP client: requests, aiohttp, headers, socket",
        r"^(ClientSession|ClientRequest|ClientResponse|ResponseHandler|StreamWriter|"
        r"StreamReader|DataQueue|BaseConnector|LoopTransport|TimerContext|TimerNoop|"
        r"BytesPayload|PayloadRegistry|_SelectorSocketTransport|_BaseRequestContextManager|"
        r"KubeClient|Http1Pool|_Connection|HttpResponseParser)\.",
    ),
    ("deepcopy of bodies", r"^deepcopy$|^_deepcopy_"),
    (
        "reconcile: desired state and plan",
        r"^VirtualServiceReconciler\.|^compute_desired$|^_?plan|^(Service|VirtualService)Info\.|"
        r"^render_virtual_service$",
    ),
    ("work queue, controller, executor", r"^WorkQueue\.|^Controller\.|^Executor\."),
)


def parse_traces(text: str) -> list[Trace]:
    """`go tool pprof -traces` output -> (seconds, frames leaf first) per distinct stack."""
    out: list[Trace] = []
    value: float | None = None
    frames: list[str] = []
    for line in text.splitlines():
        if line.startswith("-----------+"):
            if value is not None:
                out.append((value, frames))
            value, frames = None, []
            continue
        if value is None and "|" not in line:
            head = line.split(None, 1)
            if len(head) == 2 and head[0][0].isdigit() and head[0][-1] == "s":
                value = _seconds(head[0])
                frames = [head[1].strip()]
            continue
        if value is not None and line.strip():
            frames.append(line.strip())
    if value is not None:
        out.append((value, frames))
    return out


def _seconds(text: str) -> float:
    """pprof's durations: 10ms, 1.20s, 350us, 2ns, 1.5mins, 2hrs."""
    m = re.fullmatch(r"([0-9.]+)(ns|us|µs|ms|s|mins|hrs)", text)
    if m is None:
        raise ValueError(f"not a pprof duration: {text!r}")
    scale = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "mins": 60.0, "hrs": 3600.0}
    return float(m.group(1)) * scale[m.group(2)]


def _frame(frame: str) -> str:
    return frame.removesuffix(" (inline)")


def split(traces: Sequence[Trace], rules: Rules) -> dict[str, float]:
    """Seconds per part (every part of `rules` present, then OTHER); each stack counts
    once, in the first rule that matches one of its frames."""
    compiled = [(name, re.compile(rx)) for name, rx in rules]
    parts = {name: 0.0 for name, _ in rules}
    parts[OTHER] = 0.0
    for value, frames in traces:
        names = [_frame(f) for f in frames]
        for name, rx in compiled:
            if any(rx.search(f) for f in names):
                parts[name] += value
                break
        else:
            parts[OTHER] += value
    return parts


def read_traces(path: Path) -> list[Trace]:
    out = subprocess.run(
        ["go", "tool", "pprof", "-traces", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return parse_traces(out)


def top(path: Path, nodes: int = 25, cum: bool = False) -> str:
    """`go tool pprof -top` of a profile (the header and `nodes` functions)."""
    argv = ["go", "tool", "pprof", "-top", f"-nodecount={nodes}"]
    if cum:
        argv.append("-cum")
    result = subprocess.run([*argv, str(path)], check=False, capture_output=True, text=True)
    return result.stdout or result.stderr


def merge(paths: Sequence[Path], out: Path) -> None:
    """Profiles of consecutive windows into one (pprof adds their samples)."""
    data = subprocess.run(
        ["go", "tool", "pprof", "-proto", *(str(p) for p in paths)],
        check=True,
        capture_output=True,
    ).stdout
    out.write_bytes(data)


def table(parts: dict[str, float]) -> str:
    total = sum(parts.values()) or 1.0
    rows = sorted(parts.items(), key=lambda kv: -kv[1])
    return "\n".join(f"{v:8.2f}s {100 * v / total:5.1f}%  {name}" for name, v in rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.pprofsplit", description=__doc__)
    p.add_argument("profiles", nargs="+", type=Path)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--etcd", action="store_true", help="etcd's parts, not kube-apiserver's")
    which.add_argument(
        "--operator", action="store_true", help="the operator's own profile's parts (Python)"
    )
    args = p.parse_args(argv)
    rules = ETCD_RULES if args.etcd else OPERATOR_RULES if args.operator else APISERVER_RULES
    for path in args.profiles:
        parts = split(read_traces(path), rules)
        print(f"== {path} ({sum(parts.values()):.2f}s sampled)\n{table(parts)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
