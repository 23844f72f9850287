"""The benchmark's scenarios, run against a real local kube-apiserver + etcd.

One scale = one fresh control plane (so that nothing from another scale is in etcd or in
the operator's cluster-wide caches) and throw-away namespaces:

1. cold convergence: N Services in the default namespace D, M developer namespaces, a
   fifth of the names with real Services in about half of the developer namespaces,
   placeholders on. Everything is created first, then the operator starts; the time is
   from its process spawn until every desired object (computed by
   `desired.compute_desired` from a list of the Services) is seen, right, on a watch.
2. the floor: `bench.floor` POSTs exactly those objects with the operator's concurrency
   (and, for comparison, wider), measured the same way; its objects are then deleted.
3. steady state: the operator is restarted on the converged cluster (a full resync) and
   the API server's write counters must not move.
4. churn: changes to Services at a fixed rate; per change, the time from the change's
   acknowledgement to the operator's first resulting write seen on a watch ("first"),
   and to the name being fully right again ("done"); workqueue_depth scraped meanwhile.
5. commands: on the converged cluster, `virtualservice-operator status --check` and
   `explain NAME`, each in its own process as a user runs them (admin credentials), from
   spawn to exit; `status --check` must exit 0 (it finds every name in sync). With
   `commands_only`, the end state is created directly (no operator) and only this runs.

Figures: wall times and ratios from `time.monotonic`; write counts from the API server's
`apiserver_request_total`; the operator's peak RSS (VmHWM) and CPU time from /proc; a
command's peak RSS and CPU time from wait4().
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench import pprofsplit
from bench.throttle import cpu_quota
from virtualservice_operator.domain.config import OperatorConfig, parse_config
from virtualservice_operator.domain.constants import (
    OPERATOR_NAME,
    PLACEHOLDER_LABEL,
    PLACEHOLDER_VALUE,
    SOURCE_ANNOTATION,
)
from virtualservice_operator.domain.desired import compute_desired
from virtualservice_operator.domain.instance import default_instance
from virtualservice_operator.domain.model import ServiceInfo
from virtualservice_operator.kube.client import (
    CONFIGMAPS,
    EVENTS,
    JSON,
    SERVICES,
    AlreadyExists,
    ApiError,
    Kind,
    KubeClient,
    NotFound,
    ServerError,
    TooManyRequests,
)
from virtualservice_operator.operator.kinds import VIRTUAL_SERVICES, virtual_service_kind
from virtualservice_operator.runtime.defaults import DEFAULT_WORKERS
from virtualservice_operator.runtime.metrics import parse_exposition
from virtualservice_operator_dev.controlplane import (
    REPO_ROOT,
    ControlPlane,
    ensure_binaries,
    free_port,
)
from virtualservice_operator_dev.operator import spawn_operator

NAMESPACES = Kind("", "v1", "namespaces", "Namespace")
OPERATOR_NS = "virtualservice-operator-system"
WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "DELETE", "APPLY"})
DEV_FRACTION = 0.2  # names that also have real Services in developer namespaces
SETUP_CONCURRENCY = 32
# kube-apiserver's defaults (400 / 200 in flight) are ample for one operator; the bench's
# own set-up sends bursts of SETUP_CONCURRENCY, well inside them either way.
APISERVER_ARGS = ("--max-requests-inflight=800", "--max-mutating-requests-inflight=400")


@dataclass(frozen=True)
class Scale:
    name: str
    services: int
    dev_namespaces: int


SCALES = {
    "XS": Scale("XS", 20, 2),
    "S": Scale("S", 100, 3),
    "M": Scale("M", 1000, 5),
    "L": Scale("L", 5000, 10),
    # Istio's own scalability targets: 10,000 Services, here with 20 developer namespaces
    # and placeholders on, about 210,000 Services watched.
    "XL": Scale("XL", 10000, 20),
}


@dataclass
class Options:
    workers: int = DEFAULT_WORKERS  # the operator's -max-concurrent-reconciles
    wide_concurrency: int = 16  # a second floor, to show what the API server itself allows
    churn_rate: float = 50.0  # changes per second
    churn_seconds: float = 20.0
    churn_drain_timeout: float = 60.0
    profile_seconds: int = 0  # >0: CPU profile of the cold convergence saved beside results
    # >0: kube-apiserver's (and etcd's) CPU profile over each Go writer run and the cold
    # convergence, taken in windows of N s until the run has converged, merged
    # (server-profile-<scale>-{go-c<concurrency>,operator}.pb.gz, etcd-profile-...), split
    # into parts per object written; then the operator's Events posted again by themselves
    server_profile_seconds: int = 0
    out_dir: Path = REPO_ROOT / "bench" / "results"
    log: Callable[[str], None] = print
    converge_timeout: float = 1800.0
    wide_max_objects: int = 20_000  # the wide floor is skipped above this (time)
    # The Go writer (client-go) at these concurrencies; empty: doubling from 2 until two
    # steps in a row are not GO_SWEEP_GAIN faster than the best before. None: none.
    go_concurrency: tuple[int, ...] | None = ()
    floor: bool = True  # the Python floor at the operator's concurrency
    # >0: kube-apiserver and etcd held to this many CPUs (a slow API server on purpose)
    # from after the set-up to the end of the scale (bench/throttle.py).
    apiserver_cpus: float = 0.0
    commands_only: bool = False  # create the end state directly, time the commands, no more
    command_runs: int = 3  # each command is timed this many times; the median is kept
    # Keep the cluster of the last scale after its run: describe it in this JSON file and
    # wait until the file is deleted (to measure by hand against the same objects).
    hold: Path | None = None


# -- inputs ---------------------------------------------------------------------------------


def service_names(scale: Scale) -> list[str]:
    return [f"svc-{i:05d}" for i in range(scale.services)]


def dev_namespaces_for(i: int, devs: list[str]) -> list[str]:
    """For a fifth of the names, about half of the developer namespaces (at least one)."""
    if i % round(1 / DEV_FRACTION) != 0:
        return []
    picked = [ns for j, ns in enumerate(devs) if (i // 5 + j) % 2 == 0]
    return picked or devs[:1]


def service_body(namespace: str, name: str, i: int) -> JSON:
    ports: list[JSON] = [{"name": "http", "port": 80, "targetPort": 8080}]
    if i % 10 == 3:  # some multi-port Services: one route per HTTP port
        ports.append({"name": "grpc", "port": 9090, "targetPort": 9090})
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        # Headless: no ClusterIP to allocate, so the set-up measures nothing but Services.
        "spec": {"clusterIP": "None", "ports": ports, "selector": {"app": name}},
    }


def operator_config(default: str, devs: list[str]) -> OperatorConfig:
    return parse_config(config_text(default, devs)).config


def config_text(default: str, devs: list[str]) -> str:
    return yaml.safe_dump(
        {
            "defaultNamespace": default,
            "developerNamespaces": devs,
            "enablePlaceholderServices": True,
        },
        sort_keys=False,
    )


async def gather_limited(coros: list[Any], limit: int) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def one(c: Any) -> Any:
        async with sem:
            return await c

    return await asyncio.gather(*(one(c) for c in coros))


# -- what must exist --------------------------------------------------------------------------

Key = tuple[str, str, str]  # (kind, namespace, name)


async def compute_expected(client: KubeClient, config: OperatorConfig) -> dict[Key, JSON]:
    """List the Services of every watched namespace and ask `compute_desired` per name."""
    by_name: dict[str, dict[str, ServiceInfo]] = {}
    for ns in config.watched_namespaces:
        items, _ = await client.list(SERVICES, ns)
        for obj in items:
            info = ServiceInfo.from_dict(obj)
            by_name.setdefault(info.name, {})[ns] = info
    expected: dict[Key, JSON] = {}
    for name, services in sorted(by_name.items()):
        desired = compute_desired(config, name, services)
        vs = desired.virtual_service
        if vs is not None:
            meta = vs["metadata"]
            expected[("VirtualService", meta["namespace"], meta["name"])] = vs
        for ns, body in desired.placeholders.items():
            expected[("Service", ns, name)] = body
    return expected


def _subset(want: Any, have: Any) -> bool:
    have = have or {}
    return all(have.get(k) == v for k, v in (want or {}).items())


def _ports(spec: JSON) -> list[tuple[Any, ...]]:
    return [
        (p.get("name"), p.get("port"), p.get("protocol", "TCP"), p.get("appProtocol"))
        for p in spec.get("ports") or []
    ]


def matches(kind: str, want: JSON, have: JSON) -> bool:
    """Is `have` (from the API server) what `want` (compute_desired's) asks for?"""
    wm, hm = want["metadata"], have.get("metadata") or {}
    if not (_subset(wm.get("labels"), hm.get("labels"))):
        return False
    if not _subset(wm.get("annotations"), hm.get("annotations")):
        return False
    if kind == "VirtualService":
        refs = hm.get("ownerReferences") or []
        return have.get("spec") == want["spec"] and all(
            r in refs for r in wm.get("ownerReferences") or []
        )
    ws, hs = want["spec"], have.get("spec") or {}
    return (
        hs.get("type") == ws["type"]
        and hs.get("externalName") == ws.get("externalName")
        and _ports(hs) == _ports(ws)
    )


def routed_namespaces(vs: JSON | None, default: str) -> set[str]:
    """Developer namespaces a VirtualService routes to (from destination hosts)."""
    out: set[str] = set()
    for route in ((vs or {}).get("spec") or {}).get("http") or []:
        for dest in route.get("route") or []:
            host = str((dest.get("destination") or {}).get("host", ""))
            parts = host.split(".")
            if len(parts) >= 2 and parts[1] != default:
                out.add(parts[1])
    return out


# -- watching the outcome ---------------------------------------------------------------------

Listener = Callable[[str, str, Key, JSON | None, float], None]


class Observer:
    """Watches the VirtualServices in D and the placeholders in the developer namespaces,
    and knows at every event whether the cluster holds exactly the expected objects."""

    def __init__(self, client: KubeClient, default: str, devs: list[str]) -> None:
        self.client = client
        self.default = default
        self.devs = set(devs)
        self.objects: dict[Key, JSON] = {}
        self.expected: dict[Key, JSON] = {}
        self.right: set[Key] = set()
        self.extra: set[Key] = set()
        self.converged_at: float | None = None
        self._converged = asyncio.Event()
        self.listeners: list[Listener] = []
        self.events = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._synced = [asyncio.Event(), asyncio.Event()]

    # state
    def set_expected(self, expected: dict[Key, JSON]) -> None:
        self.expected = expected
        self.right = {
            k
            for k, obj in self.objects.items()
            if k in expected and matches(k[0], expected[k], obj)
        }
        self.extra = {k for k in self.objects if k not in expected}
        self._check(time.monotonic())

    def reset(self) -> None:
        self.converged_at = None
        self._converged.clear()
        self._check(time.monotonic())

    def _check(self, t: float) -> None:
        if len(self.right) == len(self.expected) and not self.extra:
            if self.converged_at is None:
                self.converged_at = t
                self._converged.set()
        else:
            self.converged_at = None
            self._converged.clear()

    async def wait_converged(self, timeout: float) -> float:
        await asyncio.wait_for(self._converged.wait(), timeout)
        assert self.converged_at is not None
        return self.converged_at

    def _update(self, etype: str, key: Key, obj: JSON | None, t: float) -> None:
        self.events += 1
        if obj is None:
            self.objects.pop(key, None)
            self.right.discard(key)
            self.extra.discard(key)
        else:
            self.objects[key] = obj
            want = self.expected.get(key)
            if want is None:
                self.extra.add(key)
            elif matches(key[0], want, obj):
                self.right.add(key)
            else:
                self.right.discard(key)
        self._check(t)
        for listener in self.listeners:
            listener(key[0], etype, key, obj, t)

    # watching
    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(
                self._run(0, "VirtualService", VIRTUAL_SERVICES, self.default, None)
            ),
            asyncio.create_task(
                self._run(1, "Service", SERVICES, None, f"{PLACEHOLDER_LABEL}={PLACEHOLDER_VALUE}")
            ),
        ]

    async def synced(self) -> None:
        await asyncio.gather(*(e.wait() for e in self._synced))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    def _wanted(self, kind: str, obj: JSON) -> Key | None:
        meta = obj.get("metadata") or {}
        ns = str(meta.get("namespace", ""))
        if kind == "Service" and ns not in self.devs:
            return None
        return (kind, ns, str(meta.get("name")))

    async def _run(self, i: int, kind: str, k: Kind, ns: str | None, selector: str | None) -> None:
        rv = ""
        while True:
            try:
                if not rv:
                    items, rv = await self.client.list(k, ns, label_selector=selector)
                    now = time.monotonic()
                    seen = set()
                    for obj in items:
                        key = self._wanted(kind, obj)
                        if key:
                            seen.add(key)
                            self._update("ADDED", key, obj, now)
                    for key in [x for x in self.objects if x[0] == kind and x not in seen]:
                        self._update("DELETED", key, None, now)
                    self._synced[i].set()
                async for etype, obj in self.client.watch(
                    k, ns, resource_version=rv, label_selector=selector, timeout_seconds=600
                ):
                    now = time.monotonic()
                    rv = str((obj.get("metadata") or {}).get("resourceVersion", rv))
                    if etype == "BOOKMARK":
                        continue
                    key = self._wanted(kind, obj)
                    if key:
                        self._update(etype, key, None if etype == "DELETED" else obj, now)
            except asyncio.CancelledError:
                raise
            except ApiError as e:
                if e.status == 410:
                    rv = ""
                else:
                    await asyncio.sleep(0.2)


# -- the operator as a process ----------------------------------------------------------------


def loadavg() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError):
        return float("nan")


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process so far (seconds); NaN if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return float("nan")
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_cpu_s(cp: ControlPlane) -> float:
    """CPU seconds kube-apiserver and etcd have used so far, together."""
    return sum(_server_cpu_by_process(cp).values())


def _server_cpu_by_process(cp: ControlPlane) -> dict[str, float]:
    """CPU seconds each of kube-apiserver and etcd has used so far."""
    procs = {"apiserver": cp.apiserver, "etcd": cp.etcd}
    return {k: proc_cpu_s(p.pid) for k, p in procs.items() if p is not None}


def http_get(url: str, timeout: float = 10) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return int(r.status), bytes(r.read())
    except urllib.error.HTTPError as e:
        return int(e.code), bytes(e.read())
    except OSError:
        return 0, b""


class Operator:
    def __init__(self, kubeconfig: Path, config_map: str, log_path: Path, workers: int) -> None:
        self.kubeconfig = kubeconfig
        self.config_map = config_map
        self.log_path = log_path
        self.workers = workers
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.spawned_at = 0.0

    def start(self) -> float:
        self.spawned_at = time.monotonic()
        self.proc = spawn_operator(
            self.kubeconfig,
            self.metrics_port,
            self.health_port,
            self.log_path,
            f"-config-map-name={self.config_map}",
            f"-max-concurrent-reconciles={self.workers}",
            "-zap-log-level=info",
            "-enable-profiling=true",  # for --profile-seconds; idle until asked
        )
        return self.spawned_at

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def wait_ready(self, timeout: float = 120) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"operator exited: {self.log_tail()}")
            code, _ = await asyncio.to_thread(
                http_get, f"http://127.0.0.1:{self.health_port}/readyz", 2
            )
            if code == 200:
                return time.monotonic()
            await asyncio.sleep(0.05)
        raise TimeoutError("operator not ready")

    async def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        code, body = await asyncio.to_thread(
            http_get, f"http://127.0.0.1:{self.metrics_port}/metrics", 10
        )
        return parse_exposition(body) if code == 200 else {}

    @staticmethod
    def metric(
        parsed: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
    ) -> float:
        return sum(
            v
            for (n, ls), v in parsed.items()
            if n == name and all((k, val) in ls for k, val in labels.items())
        )

    async def own_writes(self) -> int:
        """Write requests the operator itself counted (rest_client_requests_total)."""
        m = await self.metrics()
        return int(
            sum(
                v
                for (n, ls), v in m.items()
                if n == "rest_client_requests_total" and dict(ls).get("method") in WRITE_VERBS
            )
        )

    async def wait_idle(self, reconciles: int, timeout: float) -> float:
        """Until at least `reconciles` successful passes and nothing queued or running."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = await self.metrics()
            if (
                m
                and self.metric(m, "controller_runtime_reconcile_total", result="success")
                >= reconciles
                and self.metric(m, "workqueue_depth") == 0
                and self.metric(m, "controller_runtime_active_workers") == 0
            ):
                return time.monotonic()
            await asyncio.sleep(0.2)
        raise TimeoutError(f"operator not idle after {timeout}s")

    def peak_rss_mib(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cpu_s(self) -> float:
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        utime, stime = int(fields[11]), int(fields[12])
        return (utime + stime) / os.sysconf("SC_CLK_TCK")

    def log_tail(self, n: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""

    def stop(self, timeout: float = 30) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


# -- API server counters ----------------------------------------------------------------------

_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def api_writes(cp: ControlPlane) -> dict[tuple[str, str, str], float]:
    """apiserver_request_total for write verbs, by (verb, resource, code), all clients."""
    counts: dict[tuple[str, str, str], float] = {}
    for line in cp.api_get("/metrics").splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels_text, value = line.rsplit(" ", 1)
        labels = dict(_LABEL.findall(labels_text))
        verb = labels.get("verb", "")
        if verb in WRITE_VERBS:
            key = (verb, labels.get("resource", ""), labels.get("code", ""))
            counts[key] = counts.get(key, 0.0) + float(value)
    return counts


def writes_delta(
    before: dict[tuple[str, str, str], float], after: dict[tuple[str, str, str], float]
) -> dict[str, dict[str, int]]:
    """{resource: {verb: count}} of what changed, zeros left out; answers other than
    2xx (409 conflicts, 404s...) are also listed under "_not_2xx" as "VERB resource code"."""
    out: dict[str, dict[str, int]] = {}
    for key in set(before) | set(after):
        d = round(after.get(key, 0.0) - before.get(key, 0.0))
        if d:
            verb, resource, code = key
            by_verb = out.setdefault(resource, {})
            by_verb[verb] = by_verb.get(verb, 0) + d
            if not code.startswith("2"):
                bad = out.setdefault("_not_2xx", {})
                bad[f"{verb} {resource} {code}"] = d
    return out


def object_writes(delta: dict[str, dict[str, int]]) -> int:
    return sum(sum(v.values()) for r, v in delta.items() if r in ("services", "virtualservices"))


OPERATOR_RESOURCES = ("services", "virtualservices", "events")


def operator_resource_writes(delta: dict[str, dict[str, int]]) -> int:
    """Writes to what the operator writes (the API server renews its own Leases and
    Endpoints meanwhile: those are left out)."""
    return sum(sum(v.values()) for r, v in delta.items() if r in OPERATOR_RESOURCES)


def all_writes(delta: dict[str, dict[str, int]]) -> int:
    return sum(sum(v.values()) for r, v in delta.items() if not r.startswith("_"))


async def settle_writes(
    cp: ControlPlane, quiet: float = 1.5, timeout: float = 60
) -> dict[tuple[str, str, str], float]:
    """The write counters once they stopped moving for `quiet` seconds (events drain late)."""
    deadline = time.monotonic() + timeout
    last = await asyncio.to_thread(api_writes, cp)
    while time.monotonic() < deadline:
        await asyncio.sleep(quiet)
        now = await asyncio.to_thread(api_writes, cp)
        if now == last:
            return now
        last = now
    return last


# -- the scenarios ----------------------------------------------------------------------------


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


@dataclass
class Ctx:
    cp: ControlPlane
    client: KubeClient
    sa_kubeconfig: Path
    scale: Scale
    options: Options
    tmp: Path
    default: str = ""
    devs: list[str] = field(default_factory=list)
    config_map: str = ""
    config: OperatorConfig | None = None
    observer: Observer | None = None
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    last_server_cpu_s: float = 0.0  # kube-apiserver + etcd CPU over the last timed writer
    # --server-profile-seconds: per run profiled, its window's CPU, writes and parts
    server_profiles: dict[str, Any] = field(default_factory=dict)

    def log(self, msg: str) -> None:
        self.options.log(f"[{self.scale.name}] {msg}")


async def _setup(ctx: Ctx) -> dict[str, Any]:
    suffix = uuid.uuid4().hex[:6]
    ctx.default = f"bench-{suffix}"
    ctx.devs = [f"bench-{suffix}-dev{j}" for j in range(ctx.scale.dev_namespaces)]
    ctx.config_map = f"bench-config-{suffix}"
    for ns in [ctx.default, *ctx.devs]:
        await ctx.client.create(
            NAMESPACES, None, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
        )
    text = config_text(ctx.default, ctx.devs)
    # The operator's identity follows its ConfigMap: what it makes carries that label.
    ctx.config = parse_config(text).config.with_instance(
        default_instance(OPERATOR_NS, ctx.config_map)
    )
    await ctx.client.create(
        CONFIGMAPS,
        OPERATOR_NS,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": ctx.config_map, "namespace": OPERATOR_NS},
            "data": {"config.yaml": text},
        },
    )
    bodies: list[tuple[str, JSON]] = []
    for i, name in enumerate(service_names(ctx.scale)):
        bodies.append((ctx.default, service_body(ctx.default, name, i)))
        for ns in dev_namespaces_for(i, ctx.devs):
            bodies.append((ns, service_body(ns, name, i)))
    t = time.monotonic()
    await gather_limited(
        [ctx.client.create(SERVICES, ns, b) for ns, b in bodies], SETUP_CONCURRENCY
    )
    ctx.log(f"created {len(bodies)} Services in {time.monotonic() - t:.1f}s")
    return {"input_services": len(bodies), "dev_services": len(bodies) - ctx.scale.services}


MANAGED = "managed-by=virtualservice-operator"


async def _delete_collection(client: KubeClient, kind: Kind, ns: str, selector: str) -> None:
    """One deletecollection request where the client has it, else one delete per object."""
    delete_collection = getattr(client, "delete_collection", None)
    if delete_collection is not None:
        try:
            await delete_collection(kind, ns, label_selector=selector)
            return
        except ApiError:
            pass
    items, _ = await client.list(kind, ns, label_selector=selector)
    await gather_limited(
        [client.delete(kind, ns, o["metadata"]["name"]) for o in items], SETUP_CONCURRENCY
    )


async def _delete_outputs(ctx: Ctx) -> None:
    """Remove what the floor made (deletecollection by label), wait until the watch agrees."""
    obs = ctx.observer
    assert obs is not None
    selector = f"{PLACEHOLDER_LABEL}={PLACEHOLDER_VALUE}"
    await _delete_collection(ctx.client, VIRTUAL_SERVICES, ctx.default, MANAGED)
    for ns in ctx.devs:
        await _delete_collection(ctx.client, SERVICES, ns, selector)
    deadline = time.monotonic() + 300
    while obs.objects and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    if obs.objects:
        raise RuntimeError(f"{len(obs.objects)} objects left after clean-up")


def _bodies_file(ctx: Ctx, expected: dict[Key, JSON]) -> Path:
    """The objects to create, as the floors read them: a JSON list of {kind, namespace, body}."""
    bodies = ctx.tmp / "bodies.json"
    if not bodies.exists():
        objects = [{"kind": k[0], "namespace": k[1], "body": b} for k, b in expected.items()]
        bodies.write_text(json.dumps(objects))
    return bodies


async def _timed_writer(
    ctx: Ctx, argv: list[str], server_profile: str | None = None
) -> tuple[float, float]:
    """(seconds from spawn until the watch sees the expected state, CPU seconds of the
    writer process): how a floor is measured, as the operator's convergence is."""
    obs = ctx.observer
    assert obs is not None
    obs.reset()
    env = {**os.environ}
    env.pop("KUBECONFIG", None)
    converged = asyncio.Event()
    prof = await _start_server_profile(ctx, server_profile, converged) if server_profile else None
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    server0 = server_cpu_s(ctx.cp)
    t0 = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=REPO_ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        t1 = await obs.wait_converged(ctx.options.converge_timeout)
    finally:
        converged.set()  # the profile's last window, whether or not it converged
    ctx.last_server_cpu_s = server_cpu_s(ctx.cp) - server0
    if prof is not None:
        await prof
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{Path(argv[0]).name} failed: {err.decode()[-2000:]}")
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return t1 - t0, (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)


async def _floor(ctx: Ctx, expected: dict[Key, JSON], concurrency: int) -> tuple[float, float]:
    """The Python floor (`bench.floor`): (seconds to converge, CPU seconds)."""
    bodies = _bodies_file(ctx, expected)
    return await _timed_writer(
        ctx,
        [
            sys.executable,
            "-m",
            "bench.floor",
            f"-kubeconfig={ctx.sa_kubeconfig}",
            f"-bodies={bodies}",
            f"-concurrency={concurrency}",
        ],
    )


GO_SWEEP_GAIN = 0.05  # a step of the sweep must be this much faster than the best so far
GO_SWEEP_MAX = 256


async def _go_floor(ctx: Ctx, expected: dict[Key, JSON], writer: Path) -> dict[str, Any]:
    """The Go writer (client-go) over a sweep of concurrencies, its objects deleted after
    each run; the best time is the reference the operator is held to."""
    bodies = _bodies_file(ctx, expected)
    fixed = list(ctx.options.go_concurrency or ())
    sweep: dict[int, float] = {}
    cpu: dict[int, float] = {}
    server: dict[int, float] = {}
    loads: dict[int, float] = {}
    concurrency = fixed.pop(0) if fixed else 2
    best_before = float("inf")
    flat = 0
    while True:
        loads[concurrency] = loadavg()
        sweep[concurrency], cpu[concurrency] = await _timed_writer(
            ctx,
            [
                str(writer),
                f"-kubeconfig={ctx.sa_kubeconfig}",
                f"-objects={bodies}",
                f"-concurrency={concurrency}",
            ],
            server_profile=f"go-c{concurrency}",
        )
        server[concurrency] = ctx.last_server_cpu_s
        ctx.log(f"go writer at concurrency {concurrency}: {sweep[concurrency]:.2f}s")
        await _delete_outputs(ctx)
        if ctx.options.go_concurrency:
            if not fixed:
                break
            concurrency = fixed.pop(0)
            continue
        # Throughput stopped rising: two steps in a row not GO_SWEEP_GAIN faster than the
        # best before them (one slow step may be the shared machine's noise).
        if sweep[concurrency] > best_before * (1 - GO_SWEEP_GAIN):
            flat += 1
        else:
            flat = 0
        best_before = min(best_before, sweep[concurrency])
        if flat >= 2 or concurrency >= GO_SWEEP_MAX:
            break
        concurrency *= 2
    best_c = min(sweep, key=lambda c: sweep[c])
    return {
        "go_floor_s": sweep[best_c],
        "go_floor_concurrency": best_c,
        "go_floor_cpu_s": cpu[best_c],
        # What the API server and etcd spent serving it: their share of the machine.
        "go_floor_server_cpu_s": server[best_c],
        "go_floor_sweep": {str(c): round(t, 3) for c, t in sweep.items()},
        "go_floor_sweep_load": {str(c): load for c, load in loads.items()},
    }


async def _verify(ctx: Ctx, expected: dict[Key, JSON]) -> dict[str, int]:
    """By listing, independent of the watch: every expected object right, nothing extra."""
    have: dict[Key, JSON] = {}
    items, _ = await ctx.client.list(VIRTUAL_SERVICES, ctx.default)
    for o in items:
        have[("VirtualService", ctx.default, o["metadata"]["name"])] = o
    for ns in ctx.devs:
        items, _ = await ctx.client.list(
            SERVICES, ns, label_selector=f"{PLACEHOLDER_LABEL}={PLACEHOLDER_VALUE}"
        )
        for o in items:
            have[("Service", ns, o["metadata"]["name"])] = o
    wrong = sum(1 for k, w in expected.items() if k not in have or not matches(k[0], w, have[k]))
    extra = sum(1 for k in have if k not in expected)
    return {"wrong_or_missing": wrong, "extra": extra}


async def _profile(op: Operator, seconds: int, path: Path) -> None:
    code, body = await asyncio.to_thread(
        http_get,
        f"http://127.0.0.1:{op.metrics_port}/debug/pprof/profile?seconds={seconds}",
        seconds + 60,
    )
    if code == 200:
        path.write_bytes(body)


@dataclass(frozen=True)
class _Baseline:
    writes: dict[tuple[str, str, str], float]
    cpu: dict[str, float]
    t: float


async def _server_profile(ctx: Ctx, what: str, done: asyncio.Event, base: _Baseline) -> None:
    """kube-apiserver's own CPU profile (its /debug/pprof, as admin), and etcd's when it
    serves one (started with --enable-pprof), in windows of `server_profile_seconds` from
    now until `done` is set: where the server's CPU goes while `what` writes. The windows
    are merged into one profile; the servers' CPU (/proc) and the writes (by resource) over
    the same windows are kept beside the profile's parts, to turn shares into CPU-seconds
    per object written."""
    seconds = ctx.options.server_profile_seconds
    out = ctx.options.out_dir
    out.mkdir(parents=True, exist_ok=True)
    name = f"{ctx.scale.name}-{what}"
    api_parts: list[Path] = []
    etcd_parts: list[Path] = []
    while True:
        api, (code, etcd) = await asyncio.gather(
            asyncio.to_thread(
                ctx.cp.api_get_bytes, f"/debug/pprof/profile?seconds={seconds}", seconds + 60.0
            ),
            asyncio.to_thread(
                http_get, f"{ctx.cp.etcd_url}/debug/pprof/profile?seconds={seconds}", seconds + 60
            ),
        )
        api_parts.append(ctx.tmp / f"api-{name}-{len(api_parts)}.pb.gz")
        api_parts[-1].write_bytes(api)
        if code == 200:
            etcd_parts.append(ctx.tmp / f"etcd-{name}-{len(etcd_parts)}.pb.gz")
            etcd_parts[-1].write_bytes(etcd)
        if done.is_set():
            break
    window = time.monotonic() - base.t
    cpu1 = _server_cpu_by_process(ctx.cp)
    writes = writes_delta(base.writes, await asyncio.to_thread(api_writes, ctx.cp))
    figures: dict[str, Any] = {
        "window_s": round(window, 2),
        "cpu_s": {k: round(cpu1[k] - base.cpu[k], 2) for k in cpu1},
        "writes": writes,
    }
    api_file = out / f"server-profile-{name}.pb.gz"
    await asyncio.to_thread(pprofsplit.merge, api_parts, api_file)
    files = [("kube-apiserver", api_file, pprofsplit.APISERVER_RULES, "apiserver_parts_s")]
    if etcd_parts:
        etcd_file = out / f"etcd-profile-{name}.pb.gz"
        await asyncio.to_thread(pprofsplit.merge, etcd_parts, etcd_file)
        files.append(("etcd", etcd_file, pprofsplit.ETCD_RULES, "etcd_parts_s"))
    for server, path, rules, key in files:
        parts = pprofsplit.split(await asyncio.to_thread(pprofsplit.read_traces, path), rules)
        figures[key] = {k: round(v, 2) for k, v in parts.items()}
        ctx.log(
            f"{server} while {what} wrote ({window:.0f} s, {len(api_parts)} windows): "
            f"{path.name}\n{await asyncio.to_thread(pprofsplit.top, path)}\n"
            f"{pprofsplit.table(parts)}"
        )
    ctx.server_profiles[what] = figures
    ctx.log(f"{what}: window {window:.1f} s, CPU {figures['cpu_s']}, writes {writes}")


async def _start_server_profile(
    ctx: Ctx, what: str, done: asyncio.Event
) -> asyncio.Task[None] | None:
    """The servers' counters read now (before `what` starts writing), their profiles
    taken from now until `done`."""
    if ctx.options.server_profile_seconds <= 0:
        return None
    writes = await asyncio.to_thread(api_writes, ctx.cp)
    base = _Baseline(writes, _server_cpu_by_process(ctx.cp), time.monotonic())
    return asyncio.create_task(_server_profile(ctx, what, done, base))


async def _events_again(ctx: Ctx, count: int, concurrency: int = 16) -> dict[str, Any]:
    """What the operator's Events cost the server by themselves: `count` of the Events it
    posted (the same bodies, new names), posted again as JSON through the same client
    library at `concurrency`, with the servers' CPU and profile over them."""
    items, _ = await ctx.client.list(EVENTS, None)
    ours = [e for e in items if e.get("reportingComponent") == OPERATOR_NAME]
    if not ours or count <= 0:
        return {}
    keep = (
        *("involvedObject", "reason", "message", "type", "source", "reportingComponent"),
        *("reportingInstance", "firstTimestamp", "lastTimestamp", "count"),
    )

    def body(i: int) -> JSON:
        e = ours[i % len(ours)]
        meta = e["metadata"]
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta['name']}-again{i}", "namespace": meta["namespace"]},
            **{k: e[k] for k in keep if k in e},
        }

    bodies = [body(i) for i in range(count)]
    done = asyncio.Event()
    prof = await _start_server_profile(ctx, "events-again", done)
    server0 = server_cpu_s(ctx.cp)
    t0 = time.monotonic()
    try:
        await gather_limited(
            [ctx.client.create(EVENTS, b["metadata"]["namespace"], b) for b in bodies],
            concurrency,
        )
        wall = time.monotonic() - t0
        await asyncio.sleep(3)  # the Go collector's work for them lands late
        server = server_cpu_s(ctx.cp) - server0
    finally:
        done.set()
    if prof is not None:
        await prof
    ctx.log(f"{count} Events posted again: {wall:.1f} s, kube-apiserver + etcd {server:.1f} CPU s")
    return {"events_again": count, "events_again_s": wall, "events_again_server_cpu_s": server}


async def _cold(ctx: Ctx, expected: dict[Key, JSON], names: int) -> tuple[Operator, dict[str, Any]]:
    obs = ctx.observer
    assert obs is not None
    obs.reset()
    before = await asyncio.to_thread(api_writes, ctx.cp)
    op = Operator(
        ctx.sa_kubeconfig, ctx.config_map, ctx.tmp / "operator-cold.log", ctx.options.workers
    )
    converged = asyncio.Event()
    server_prof = await _start_server_profile(ctx, "operator", converged)
    server0 = server_cpu_s(ctx.cp)
    t0 = op.start()
    ready_at = await op.wait_ready()
    prof: asyncio.Task[None] | None = None
    if ctx.options.profile_seconds > 0:
        ctx.options.out_dir.mkdir(parents=True, exist_ok=True)
        prof = asyncio.create_task(
            _profile(
                op,
                ctx.options.profile_seconds,
                ctx.options.out_dir / f"profile-{ctx.scale.name}.pb.gz",
            )
        )
    try:
        t1 = await obs.wait_converged(ctx.options.converge_timeout)
    finally:
        converged.set()
    cpu_at_converged = op.cpu_s()
    server_cpu = server_cpu_s(ctx.cp) - server0
    await op.wait_idle(names, 600)
    after = await settle_writes(ctx.cp)
    for task in (prof, server_prof):
        if task is not None:
            await task
    delta = writes_delta(before, after)
    out = {
        "converge_s": t1 - t0,
        "ready_s": ready_at - t0,
        "cpu_s": cpu_at_converged,
        "server_cpu_s": server_cpu,  # kube-apiserver + etcd over the convergence
        "cpu_s_idle": op.cpu_s(),
        "peak_rss_mib": op.peak_rss_mib(),
        "writes": object_writes(delta),
        "writes_by_resource": delta,
        "event_writes": sum(delta.get("events", {}).values()),
        "operator_counted_writes": await op.own_writes(),
        "verify": await _verify(ctx, expected),
    }
    return op, out


async def _steady(ctx: Ctx, op: Operator, names: int) -> tuple[Operator, dict[str, Any]]:
    await asyncio.to_thread(op.stop)
    before = await settle_writes(ctx.cp, quiet=1.0)
    op2 = Operator(
        ctx.sa_kubeconfig, ctx.config_map, ctx.tmp / "operator-steady.log", ctx.options.workers
    )
    t0 = op2.start()
    await op2.wait_ready()
    t1 = await op2.wait_idle(names, 600)
    after = await settle_writes(ctx.cp, quiet=2.0)
    delta = writes_delta(before, after)
    return op2, {
        "steady_state_writes": operator_resource_writes(delta),
        "steady_operator_counted_writes": await op2.own_writes(),
        "steady_writes_by_resource": delta,
        "resync_s": t1 - t0,
        "resync_cpu_s": op2.cpu_s(),
        "resync_peak_rss_mib": op2.peak_rss_mib(),
    }


@dataclass
class Change:
    kind: str  # dev_add | dev_remove | add | delete
    name: str
    namespace: str
    issued: float = 0.0
    acked: float | None = None
    first: float | None = None
    done: float | None = None
    failed: str = ""


class Churn:
    """Fixed-rate changes; each name has at most one change in flight at a time."""

    WEIGHTS = (("dev_add", 0.35), ("dev_remove", 0.35), ("add", 0.15), ("delete", 0.15))

    def __init__(self, ctx: Ctx, real: dict[str, set[str]]) -> None:
        self.ctx = ctx
        self.obs = ctx.observer
        self.rng = random.Random(42)
        self.names = list(real)  # names in D
        self.real = real  # name -> developer namespaces with a real Service
        self.busy: dict[str, Change] = {}
        self.changes: list[Change] = []
        self.skipped = 0
        self.added = 0

    # what counts, per change kind
    def _first(self, ch: Change, kind: str, etype: str, key: Key) -> bool:
        if ch.kind == "dev_add":  # our own patch removes the placeholder label: VS only
            return kind == "VirtualService" and self._done(ch)
        return True

    def _done(self, ch: Change) -> bool:
        obs, d = self.obs, self.ctx.default
        assert obs is not None
        vs = obs.objects.get(("VirtualService", d, f"{ch.name}-virtual-service"))
        routes = routed_namespaces(vs, d)
        phs = [("Service", ns, ch.name) in obs.objects for ns in self.ctx.devs]
        if ch.kind == "dev_add":
            return ch.namespace in routes
        if ch.kind == "dev_remove":
            return (
                vs is not None
                and ch.namespace not in routes
                and ("Service", ch.namespace, ch.name) in obs.objects
            )
        if ch.kind == "add":
            return vs is not None and all(phs)
        return vs is None and not any(phs)

    def on_event(self, kind: str, etype: str, key: Key, obj: JSON | None, t: float) -> None:
        name = key[2][: -len("-virtual-service")] if kind == "VirtualService" else key[2]
        ch = self.busy.get(name)
        if ch is None:
            return
        if ch.first is None and self._first(ch, kind, etype, key):
            ch.first = t
        if self._done(ch):
            ch.done = t
            if ch.first is None:
                ch.first = t
            if ch.acked is not None:
                del self.busy[name]

    def _kind(self) -> str:
        r, acc = self.rng.random(), 0.0
        for k, w in self.WEIGHTS:
            acc += w
            if r < acc:
                return k
        return self.WEIGHTS[-1][0]

    def _pick(self) -> Change | None:
        """A change of a kind drawn by WEIGHTS, on a name with no change in flight; None
        (counted as skipped) when no name fits: the mix stays as drawn."""
        devs = self.ctx.devs
        kind = self._kind()
        if kind == "add":
            name = f"churn-{self.added:05d}"
            self.added += 1
            return Change("add", name, self.ctx.default)
        for _ in range(50):
            name = self.rng.choice(self.names)
            if name in self.busy:
                continue
            real = self.real[name]
            if kind == "dev_add":
                free = [ns for ns in devs if ns not in real]
                if free:
                    return Change("dev_add", name, self.rng.choice(free))
            elif kind == "dev_remove":
                if real:
                    return Change("dev_remove", name, self.rng.choice(sorted(real)))
            elif kind == "delete" and not real:
                return Change("delete", name, self.ctx.default)
        return None

    def _reserve(self, ch: Change) -> None:
        """The driver's own bookkeeping (the state it asks for), before any await: the
        next pick must already see this name as busy."""
        if ch.kind == "add":
            self.names.append(ch.name)
            self.real[ch.name] = set()
        elif ch.kind == "delete":
            self.names.remove(ch.name)
            del self.real[ch.name]
        elif ch.kind == "dev_add":
            self.real[ch.name].add(ch.namespace)
        else:
            self.real[ch.name].discard(ch.namespace)
        self.busy[ch.name] = ch

    def _needed(self, ch: Change) -> int:
        """Writes the operator needs for a change: VirtualService update (+ placeholder
        back), or VirtualService + one placeholder per developer namespace."""
        return {"dev_add": 1, "dev_remove": 2}.get(ch.kind, 1 + len(self.ctx.devs))

    async def _apply(self, ch: Change) -> None:
        client, d = self.ctx.client, self.ctx.default
        ch.issued = time.monotonic()
        try:
            if ch.kind == "add":
                await client.create(SERVICES, d, service_body(d, ch.name, 0))
            elif ch.kind == "delete":
                await client.delete(SERVICES, d, ch.name)
            elif ch.kind == "dev_remove":
                await client.delete(SERVICES, ch.namespace, ch.name)
            else:  # a team deploys its own Service over the placeholder
                await client.merge_patch(
                    SERVICES,
                    ch.namespace,
                    ch.name,
                    {
                        "metadata": {
                            "labels": {PLACEHOLDER_LABEL: None, "app": ch.name},
                            "annotations": {SOURCE_ANNOTATION: None},
                        },
                        "spec": {
                            "type": "ClusterIP",
                            "externalName": None,
                            "clusterIP": "None",
                            "selector": {"app": ch.name},
                        },
                    },
                )
        except (ApiError, NotFound) as e:
            ch.failed = str(e)
            self.busy.pop(ch.name, None)
            return
        ch.acked = time.monotonic()
        if ch.done is not None or self._done(ch):
            ch.done = ch.done or ch.acked
            ch.first = ch.first or ch.done
            self.busy.pop(ch.name, None)

    async def run(self, op: Operator) -> dict[str, Any]:
        o = self.ctx.options
        obs = self.obs
        assert obs is not None
        obs.listeners.append(self.on_event)
        depths: list[tuple[float, float]] = []
        stop = asyncio.Event()

        async def sample() -> None:
            while not stop.is_set():
                m = await op.metrics()
                if m:
                    depths.append((time.monotonic() - t0, op.metric(m, "workqueue_depth")))
                await asyncio.sleep(0.25)

        before = await asyncio.to_thread(api_writes, self.ctx.cp)
        cpu0 = op.cpu_s()
        t0 = time.monotonic()
        sampler = asyncio.create_task(sample())
        tasks = []
        total = int(o.churn_rate * o.churn_seconds)
        for i in range(total):
            delay = t0 + i / o.churn_rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            ch = self._pick()
            if ch is None:
                self.skipped += 1
                continue
            self.changes.append(ch)
            self._reserve(ch)
            tasks.append(asyncio.create_task(self._apply(ch)))
        sent_s = time.monotonic() - t0
        await asyncio.gather(*tasks)
        deadline = time.monotonic() + o.churn_drain_timeout
        while self.busy and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        drained_s = time.monotonic() - t0
        stop.set()
        await sampler
        obs.listeners.remove(self.on_event)
        after = await settle_writes(self.ctx.cp, quiet=1.0)
        delta = writes_delta(before, after)
        ok = [c for c in self.changes if not c.failed and c.acked is not None]
        first = [
            max(0.0, c.first - c.acked) * 1000
            for c in ok
            if c.first is not None and c.acked is not None
        ]
        done = [
            max(0.0, c.done - c.acked) * 1000
            for c in ok
            if c.done is not None and c.acked is not None
        ]
        # The API server's own answer time for the benchmark's writes, in the same seconds:
        # the operator's "first" passes through the server three times (the change's watch
        # event, its write, that write's watch event), so this says what a slow server costs.
        ack = [(c.acked - c.issued) * 1000 for c in ok if c.acked is not None]
        by_kind = {}
        for kind, _ in self.WEIGHTS:
            ks = [
                max(0.0, c.first - c.acked) * 1000
                for c in ok
                if c.kind == kind and c.first is not None and c.acked is not None
            ]
            by_kind[kind] = {
                "n": len([c for c in ok if c.kind == kind]),
                "p50_ms": pct(ks, 50),
                "p99_ms": pct(ks, 99),
            }
        depth_values = [d for _, d in depths]
        return {
            "churn_rate": o.churn_rate,
            "churn_seconds": o.churn_seconds,
            "churn_changes": len(self.changes),
            "churn_achieved_rate": len(self.changes) / sent_s if sent_s else None,
            "churn_skipped": self.skipped,
            "churn_failed": sum(1 for c in self.changes if c.failed),
            "churn_unfinished": sum(1 for c in ok if c.done is None),
            "churn_unfinished_examples": [
                f"{c.kind} {c.namespace}/{c.name}" for c in ok if c.done is None
            ][:10],
            "churn_p50_ms": pct(first, 50),
            "churn_p99_ms": pct(first, 99),
            "churn_max_ms": max(first) if first else None,
            "churn_ack_p50_ms": pct(ack, 50),
            "churn_ack_p99_ms": pct(ack, 99),
            "churn_done_p50_ms": pct(done, 50),
            "churn_done_p99_ms": pct(done, 99),
            "churn_by_kind": by_kind,
            "churn_drained_s": drained_s,
            "churn_queue_depth_max": max(depth_values) if depth_values else None,
            "churn_queue_depth_mean": statistics.fmean(depth_values) if depth_values else None,
            "churn_queue_depth_series": [(round(t, 2), d) for t, d in depths],
            "churn_cpu_s": op.cpu_s() - cpu0,
            # The API server counts the driver's own change too (one write each).
            "churn_writes": object_writes(delta) - len(self.changes),
            "churn_needed_writes": sum(self._needed(c) for c in ok),
            "churn_writes_by_resource": delta,
            "churn_event_writes": sum(delta.get("events", {}).values()),
        }


def timed_command(argv: list[str], out: Path) -> tuple[float, float, float, int]:
    """(wall s from spawn to exit, peak RSS MiB, CPU s, exit code) of one process, as
    `bench.timed` measures them; its output goes to `out`."""
    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("KUBECONFIG", None)
    figures = out.with_suffix(".json")
    with out.open("wb") as sink:
        code = subprocess.run(
            [sys.executable, "-m", "bench.timed", str(figures), *argv],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO_ROOT,
            check=False,
        ).returncode
    got = json.loads(figures.read_text())
    return got["wall_s"], got["peak_rss_mib"], got["cpu_s"], code


async def _commands(ctx: Ctx) -> dict[str, Any]:
    """`status --check` over every name and `explain` of one name, timed (median of
    `command_runs`); status must find everything in sync."""
    name = service_names(ctx.scale)[0]  # routed in half of the developer namespaces
    base = [sys.executable, "-m", "virtualservice_operator.cli"]
    flags = [f"--kubeconfig={ctx.cp.admin_kubeconfig}", f"--config-map-name={ctx.config_map}"]
    res: dict[str, Any] = {"load_at_commands": loadavg(), "explain_name": name}
    for command, args in (("status", ["status", "--check"]), ("explain", ["explain", name])):
        runs = []
        for i in range(ctx.options.command_runs):
            out = ctx.tmp / f"{command}-{i}.out"
            run = await asyncio.to_thread(timed_command, [*base, *args, *flags], out)
            if run[3] != 0:
                text = out.read_text()
                raise RuntimeError(f"{command} exited {run[3]}: {text[-2000:]}")
            runs.append(run)
        wall, rss, cpu, _ = sorted(runs)[len(runs) // 2]
        res[f"{command}_s"] = wall
        res[f"{command}_peak_rss_mib"] = rss
        res[f"{command}_cpu_s"] = cpu
        res[f"{command}_runs_s"] = [round(r[0], 3) for r in runs]
        ctx.log(f"{command}: {wall:.2f}s (runs {res[f'{command}_runs_s']}), {rss:.0f} MiB")
    res["status_rows"] = sum(
        1 for line in (ctx.tmp / "status-0.out").read_text().splitlines()[1:] if line.strip()
    )
    return res


async def _commands_only(ctx: Ctx) -> dict[str, Any]:
    """The converged end state, created directly as admin (no operator), then the commands."""
    res = await _setup(ctx)
    assert ctx.config is not None
    expected = await compute_expected(ctx.client, ctx.config)
    res["needed_writes"] = len(expected)
    t = time.monotonic()

    async def create(kind: str, ns: str, body: JSON) -> None:
        api = virtual_service_kind(body["apiVersion"]) if kind == "VirtualService" else SERVICES
        for attempt in range(5):
            try:
                await ctx.client.create(api, ns, body)
                return
            except AlreadyExists:
                return  # a retried POST whose first attempt went through
            except (ServerError, TooManyRequests):
                # A loaded machine: a connection can take longer than the client allows.
                if attempt == 4:
                    raise
                await asyncio.sleep(0.5 * 2**attempt)

    await gather_limited(
        [create(kind, ns, body) for (kind, ns, _), body in expected.items()], SETUP_CONCURRENCY
    )
    ctx.log(f"created the {len(expected)} expected objects in {time.monotonic() - t:.1f}s")
    res.update(await _commands(ctx))
    return res


async def _run_scale_async(ctx: Ctx) -> dict[str, Any]:
    o = ctx.options
    res: dict[str, Any] = {
        "services": ctx.scale.services,
        "dev_namespaces": ctx.scale.dev_namespaces,
        "workers": o.workers,
    }
    res.update(await _setup(ctx))
    assert ctx.config is not None
    expected = await compute_expected(ctx.client, ctx.config)
    if o.apiserver_cpus > 0:
        pids = [p.pid for p in (ctx.cp.apiserver, ctx.cp.etcd) if p is not None]
        ctx.stack.enter_context(cpu_quota(pids, o.apiserver_cpus))
        res["apiserver_cpus"] = o.apiserver_cpus
        ctx.log(f"kube-apiserver and etcd held to {o.apiserver_cpus} CPUs")
    res["needed_writes"] = len(expected)
    res["needed_virtualservices"] = sum(1 for k in expected if k[0] == "VirtualService")
    res["needed_placeholders"] = sum(1 for k in expected if k[0] == "Service")
    ctx.observer = Observer(ctx.client, ctx.default, ctx.devs)
    ctx.observer.start()
    await ctx.observer.synced()
    ctx.observer.set_expected(expected)

    res["load_at_floor"] = loadavg()
    if o.go_concurrency is not None:
        ctx.log(f"go writer: {len(expected)} objects, concurrency sweep")
        res.update(await _go_floor(ctx, expected, build_go_writer()))
        ctx.log(
            f"go writer best {res['go_floor_s']:.2f}s at concurrency "
            f"{res['go_floor_concurrency']} (sweep {res['go_floor_sweep']})"
        )
    if o.floor:
        ctx.log(f"floor: {len(expected)} objects at concurrency {o.workers}")
        res["floor_s"], res["floor_cpu_s"] = await _floor(ctx, expected, o.workers)
        ctx.log(f"floor {res['floor_s']:.2f}s")
        await _delete_outputs(ctx)
    if (
        o.wide_concurrency
        and o.wide_concurrency != o.workers
        and len(expected) <= o.wide_max_objects
    ):
        res["floor_wide_concurrency"] = o.wide_concurrency
        res["floor_wide_s"], res["floor_wide_cpu_s"] = await _floor(
            ctx, expected, o.wide_concurrency
        )
        ctx.log(f"floor at concurrency {o.wide_concurrency}: {res['floor_wide_s']:.2f}s")
        await _delete_outputs(ctx)

    ctx.log("cold convergence")
    res["load_at_converge"] = loadavg()
    op, cold = await _cold(ctx, expected, ctx.scale.services)
    res.update(cold)
    if "floor_s" in res:
        res["ratio_to_floor"] = res["converge_s"] / res["floor_s"]
    if "go_floor_s" in res:
        res["ratio_to_go"] = res["converge_s"] / res["go_floor_s"]
    if "floor_wide_s" in res:
        res["ratio_to_wide_floor"] = res["converge_s"] / res["floor_wide_s"]
    ctx.log(
        f"converged in {res['converge_s']:.2f}s (ready {res['ready_s']:.2f}s), "
        f"ratio {res.get('ratio_to_floor', 0):.2f} (to Go {res.get('ratio_to_go', 0):.2f}), "
        f"writes {res['writes']}/{res['needed_writes']}, rss {res['peak_rss_mib']:.0f} MiB, "
        f"cpu {res['cpu_s']:.1f}s, verify {res['verify']}"
    )

    if o.server_profile_seconds > 0:
        res["server_profiles"] = ctx.server_profiles
        res.update(await _events_again(ctx, res["event_writes"]))

    ctx.log("steady state (restart)")
    op, steady = await _steady(ctx, op, ctx.scale.services)
    res.update(steady)
    ctx.log(f"steady writes {res['steady_state_writes']}, resync {res['resync_s']:.2f}s")
    res.update(await _commands(ctx))

    if o.churn_seconds > 0:
        ctx.log(f"churn {o.churn_rate}/s for {o.churn_seconds}s")
        real = {
            name: set(dev_namespaces_for(i, ctx.devs))
            for i, name in enumerate(service_names(ctx.scale))
        }
        try:
            res.update(await Churn(ctx, real).run(op))
        finally:
            res["churn_peak_rss_mib"] = op.peak_rss_mib() if op.alive() else None
        ctx.log(
            f"churn p50 {res['churn_p50_ms']} ms p99 {res['churn_p99_ms']} ms, "
            f"done p99 {res['churn_done_p99_ms']} ms, depth max {res['churn_queue_depth_max']}, "
            f"the benchmark's own writes p99 {res['churn_ack_p99_ms']} ms, "
            f"unfinished {res['churn_unfinished']}"
        )
    await asyncio.to_thread(op.stop)
    await ctx.observer.stop()
    return res


def build_go_writer() -> Path:
    """The Go writer's binary, built (and cached by source hash) by its hack/ script."""
    script = REPO_ROOT / "hack" / "build-bench-writer.sh"
    out = subprocess.run(["bash", str(script)], check=True, capture_output=True, text=True)
    if out.stderr.strip():
        print(out.stderr.strip(), file=sys.stderr)
    return Path(out.stdout.strip().splitlines()[-1])


def run_scale(scale: Scale, options: Options, cp: ControlPlane | None = None) -> dict[str, Any]:
    """One scale on a fresh control plane (or `cp`); returns its figures."""
    own = cp is None
    if cp is None:
        # etcd's /debug/pprof for --server-profile-seconds.
        pprof = ("--enable-pprof=true",) if options.server_profile_seconds > 0 else ()
        cp = ControlPlane(
            bin_dir=ensure_binaries(), extra_apiserver_args=APISERVER_ARGS, extra_etcd_args=pprof
        )
        cp.start()
    began = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix=f"vso-bench-{scale.name}-") as tmp_name:
            tmp = Path(tmp_name)
            _warm_up(cp)
            cp.kubectl("apply", "-f", str(REPO_ROOT / "deployments" / "deployment.yaml"))
            sa = cp.service_account_kubeconfig(
                OPERATOR_NS, "virtualservice-operator", tmp / "sa.kubeconfig"
            )

            held: dict[str, Any] = {}

            async def main() -> dict[str, Any]:
                client = KubeClient.from_kubeconfig(str(cp.admin_kubeconfig))
                ctx = Ctx(cp, client, sa, scale, options, tmp)
                try:
                    with ctx.stack:
                        if options.commands_only:
                            return await _commands_only(ctx)
                        return await _run_scale_async(ctx)
                finally:
                    held.update(default=ctx.default, devs=ctx.devs, config_map=ctx.config_map)
                    await client.close()

            res = asyncio.run(main())
            if options.hold is not None:
                _hold(cp, held, options.hold)
    finally:
        if own:
            cp.stop()
    res["scale_wall_s"] = time.monotonic() - began
    res["date"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return res


def _hold(cp: ControlPlane, held: dict[str, Any], path: Path) -> None:
    """Describe the cluster in `path` (JSON) and keep it until that file is deleted."""
    info = {
        **held,
        "kubeconfig": str(cp.admin_kubeconfig),
        "url": cp.url,
        "apiserver_pid": cp.apiserver.pid if cp.apiserver else None,
        "etcd_pid": cp.etcd.pid if cp.etcd else None,
    }
    path.write_text(json.dumps(info, indent=1) + "\n")
    while path.exists():
        time.sleep(1)


def _warm_up(cp: ControlPlane) -> None:
    """The first write to a fresh CRD costs the API server ~2 s of storage set-up."""
    path = "/apis/networking.istio.io/v1/namespaces/default/virtualservices"
    cp.api(
        "POST",
        path,
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "bench-warm-up"},
            "spec": {"hosts": ["bench-warm-up"]},
        },
    )
    cp.api("DELETE", f"{path}/bench-warm-up")
