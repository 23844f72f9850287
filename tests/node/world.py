"""The operator's world on the node, from outside: what its config says must exist (the
bench's `compute_expected`, i.e. `compute_desired` per listed name), what does exist
(the VirtualServices of the default namespace, the placeholders of the developer
namespaces), and the Pods, cgroups and watches that only a real node has."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from bench.core import (
    SETUP_CONCURRENCY,
    Key,
    compute_expected,
    gather_limited,
    http_get,
    matches,
)

from virtualservice_operator.domain.config import OperatorConfig, parse_config
from virtualservice_operator.domain.constants import PLACEHOLDER_LABEL, PLACEHOLDER_VALUE
from virtualservice_operator.kube.client import JSON, SERVICES, AlreadyExists, KubeClient
from virtualservice_operator.operator.kinds import VIRTUAL_SERVICES
from virtualservice_operator.runtime.metrics import parse_exposition
from virtualservice_operator_dev.controlplane import REPO_ROOT
from virtualservice_operator_dev.node import CGROUP_ROOT, Node

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def shipped_config() -> str:
    """config.yaml of deployments/config.yaml (what the manifest install runs with)."""
    manifest = yaml.safe_load((REPO_ROOT / "deployments" / "config.yaml").read_text())
    return str(manifest["data"]["config.yaml"])


def config_for(text: str, instance: str) -> OperatorConfig:
    return parse_config(text).config.with_instance(instance)


async def _actual(client: KubeClient, config: OperatorConfig) -> dict[Key, JSON]:
    have: dict[Key, JSON] = {}
    d = config.default_namespace
    items, _ = await client.list(VIRTUAL_SERVICES, d)
    for o in items:
        have[("VirtualService", d, o["metadata"]["name"])] = o
    for ns in config.developer_namespaces:
        items, _ = await client.list(
            SERVICES, ns, label_selector=f"{PLACEHOLDER_LABEL}={PLACEHOLDER_VALUE}"
        )
        for o in items:
            have[("Service", ns, o["metadata"]["name"])] = o
    return have


@dataclass
class Diff:
    """How the cluster differs from what the config asks for its Services."""

    expected: int
    missing: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)

    @property
    def in_line(self) -> bool:
        return not (self.missing or self.wrong or self.extra)

    def __str__(self) -> str:
        return f"of {self.expected}: missing {self.missing[:10]}, wrong {self.wrong[:10]}, extra {self.extra[:10]}"


def differences(node: Node, config: OperatorConfig) -> Diff:
    """Every VirtualService and placeholder that is missing, wrong or extra, by listing
    (not watching): in line when the cluster holds exactly what `config` asks for."""

    async def main() -> Diff:
        client = KubeClient.from_kubeconfig(str(node.admin_kubeconfig))
        try:
            expected = await compute_expected(client, config)
            have = await _actual(client, config)
        finally:
            await client.close()
        return Diff(
            len(expected),
            missing=sorted("/".join(k) for k in expected if k not in have),
            wrong=sorted(
                "/".join(k)
                for k, w in expected.items()
                if k in have and not matches(k[0], w, have[k])
            ),
            extra=sorted("/".join(k) for k in have if k not in expected),
        )

    return asyncio.run(main())


def create_all(node: Node, bodies: list[tuple[str, JSON]]) -> float:
    """POST every (namespace, Service) as admin, SETUP_CONCURRENCY in flight (the bench's
    set-up path); returns the seconds it took."""

    async def create(ns: str, body: JSON) -> None:
        with contextlib.suppress(AlreadyExists):  # a retried POST that went through
            await client.create(SERVICES, ns, body)

    async def main() -> None:
        try:
            await gather_limited([create(ns, b) for ns, b in bodies], SETUP_CONCURRENCY)
        finally:
            await client.close()

    client = KubeClient.from_kubeconfig(str(node.admin_kubeconfig))
    began = time.monotonic()
    asyncio.run(main())
    return time.monotonic() - began


# -- Pods -------------------------------------------------------------------------------------


def live(pods: list[JSON]) -> list[JSON]:
    """Pods not being deleted."""
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def ready(pod: JSON) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def scrape(pod: JSON) -> Samples:
    """The Pod's /metrics, straight from the node (the Pod network is the node's bridge)."""
    code, body = http_get(f"http://{pod['status']['podIP']}:8080/metrics")
    assert code == 200, (pod["metadata"]["name"], code, body[:200])
    return parse_exposition(body)


def container_cgroup(pod: JSON) -> Path:
    """The container's memory cgroup on the node: the kubelet (cgroupfs driver) puts each
    Pod under <root>/kubepods[/<qos>]/pod<uid>/, containerd the container under its id."""
    uid = pod["metadata"]["uid"]
    cid = pod["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]
    unified = Path("/sys/fs/cgroup")
    root = unified if (unified / "cgroup.controllers").exists() else unified / "memory"
    for pod_dir in (root / CGROUP_ROOT).rglob(f"pod{uid}"):
        if (pod_dir / cid).is_dir():
            return pod_dir / cid
    raise AssertionError(f"no cgroup of container {cid} of Pod {uid} under {root / CGROUP_ROOT}")


def memory_files(cgroup: Path) -> tuple[Path | None, Path, Path]:
    """(peak, current, limit) files of a memory cgroup, v2 or v1; peak None when the
    kernel keeps none (cgroup v2 before Linux 5.19)."""
    if (cgroup / "memory.max").exists():  # v2
        peak = cgroup / "memory.peak"
        return (peak if peak.exists() else None), cgroup / "memory.current", cgroup / "memory.max"
    return (
        cgroup / "memory.max_usage_in_bytes",
        cgroup / "memory.usage_in_bytes",
        cgroup / "memory.limit_in_bytes",
    )


class Sampler(threading.Thread):
    """Reads a memory cgroup's current usage every `interval` s: the peak where the
    kernel keeps none, and a cross-check where it does."""

    def __init__(self, current: Path, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.current, self.interval = current, interval
        self.peak = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            with contextlib.suppress(OSError, ValueError):  # the container is gone
                self.peak = max(self.peak, int(self.current.read_text()))
            self._halt.wait(self.interval)

    def stop(self) -> int:
        self._halt.set()
        self.join()
        return self.peak


# -- watches ----------------------------------------------------------------------------------


class Watch:
    """`kubectl get ... -w --output-watch-events -o json` in the background: every event
    (the first list as ADDED, then each change in order), as parsed objects."""

    def __init__(self, node: Node, *args: str) -> None:
        self.events: list[tuple[str, JSON]] = []
        self._proc = subprocess.Popen(
            [
                str(node.bin_dir / "kubectl"),
                f"--kubeconfig={node.admin_kubeconfig}",
                "get",
                *args,
                "--watch",
                "--output-watch-events",
                "-o",
                "json",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        decoder = json.JSONDecoder()
        buffer = ""
        for line in self._proc.stdout:
            buffer += line
            while buffer.strip():
                try:
                    event, end = decoder.raw_decode(buffer.lstrip())
                except ValueError:
                    break  # an object not yet complete
                buffer = buffer.lstrip()[end:]
                self.events.append((str(event["type"]), event["object"]))

    def objects(self) -> list[JSON]:
        return [obj for _, obj in list(self.events)]

    def stop(self) -> None:
        self._proc.terminate()
        self._proc.wait(timeout=10)
        self._reader.join(timeout=10)


def json_of(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(result.stdout)
