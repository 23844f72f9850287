"""The cache's memory per watched Service and per VirtualService, held.

At 10,000 Services x 20 developer namespaces the operator watches about 210,000
Services: each byte of a record is 0.2 MiB of the Pod's 256 MiB. This builds a converged
cache through the operator's own code (`ClusterCache` informers, `upsert` of objects as
the API server returns them) and measures the heap it holds (tracemalloc), so that a
change that makes a record much larger fails here rather than in production.
"""

from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import sys
import tracemalloc
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from virtualservice_operator.domain.config import OperatorConfig, parse_config
from virtualservice_operator.domain.desired import compute_desired
from virtualservice_operator.domain.model import ServiceInfo
from virtualservice_operator.operator.cache import ClusterCache

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = "prod"
DEVS = [f"dev{j:02d}" for j in range(20)]
NAMES = 300
# Measured when written (CPython 3.11): 286 B per watched Service (the record, its uid
# and resourceVersion, the store's slot; the name as key, labels, ports and external name
# shared) and 1,840 B per VirtualService (its JSON text, record, store key, index entry).
# Before: 423 and 5,257 (keys "namespace/name", an external name per placeholder, the
# VirtualService decoded). The limits leave room for noise, not for half as large again.
MAX_PER_SERVICE = 400
MAX_PER_VIRTUAL_SERVICE = 2_700

JSON = dict[str, Any]


def _served(body: JSON, rv: int) -> JSON:
    """`body` as the API server answers a write: uid, resourceVersion, managedFields."""
    meta = {
        **body["metadata"],
        "uid": str(uuid.uuid4()),
        "resourceVersion": str(rv),
        "creationTimestamp": "2026-12-04T19:00:00Z",
        "managedFields": [{"manager": "virtualservice-operator", "operation": "Update"}],
    }
    return {**body, "metadata": meta}


def _world() -> tuple[OperatorConfig, list[bytes], list[bytes]]:
    """The config, every Service as served (inputs and placeholders), our VirtualServices."""
    config = parse_config(
        f"defaultNamespace: {DEFAULT}\n"
        f"developerNamespaces: [{', '.join(DEVS)}]\n"
        "enablePlaceholderServices: true\n"
    ).config
    services: list[JSON] = []
    vss: list[JSON] = []
    rv = 100
    for i in range(NAMES):
        name = f"svc-{i:05d}"
        found = {}
        for ns in [DEFAULT, *(DEVS[: i % 3] if i % 5 == 0 else [])]:
            rv += 1
            body = {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
                "spec": {
                    "type": "ClusterIP",
                    "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
                    "selector": {"app": name},
                },
            }
            services.append(_served(body, rv))
            found[ns] = ServiceInfo.from_dict(services[-1])
        desired = compute_desired(config, name, found)
        assert desired.virtual_service is not None
        rv += 1
        vss.append(_served(desired.virtual_service, rv))
        for body in desired.placeholders.values():
            rv += 1
            services.append(_served(body, rv))
    return config, [json.dumps(s).encode() for s in services], [json.dumps(v).encode() for v in vss]


def _heap_added(step: Callable[[], object]) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        step()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def _fill(config: OperatorConfig, services: list[bytes], vss: list[bytes]) -> tuple[int, int]:
    """(bytes the Services add to a cache, bytes the VirtualServices add), each object
    decoded from its JSON as the client does, so the cache alone holds what it keeps."""

    async def make() -> ClusterCache:
        cache = ClusterCache(None, lambda name: None, instance=config.instance)  # type: ignore[arg-type]
        cache.services = {ns: cache._service_informer(ns) for ns in config.watched_namespaces}
        return cache

    cache = asyncio.run(make())
    service_bytes = _heap_added(
        lambda: [cache.record_write("Service", json.loads(s)) for s in services]
    )
    vs_bytes = _heap_added(
        lambda: [cache.record_write("VirtualService", json.loads(v)) for v in vss]
    )
    assert sum(len(i) for i in cache.services.values()) == len(services)
    assert len(cache.managed_vs) == len(vss)
    return service_bytes, vs_bytes


def measure() -> tuple[float, float]:
    """(bytes per watched Service, bytes per VirtualService) the cache holds."""
    config, services, vss = _world()
    assert len(services) == NAMES * (1 + len(DEVS))
    _fill(config, services, vss)  # warm-up: interned names and shared values exist after
    service_bytes, vs_bytes = _fill(config, services, vss)
    return service_bytes / len(services), vs_bytes / len(vss)


def test_bytes_per_watched_service_and_per_virtual_service() -> None:
    # In a fresh interpreter: what earlier tests left in the process-wide caches of shared
    # values (emptied when full) would otherwise move the figures.
    code = "from tests.unit.test_cache_memory import measure; print(*measure())"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    per_service, per_vs = (float(v) for v in out.split())
    print(f"{per_service:.0f} B per watched Service, {per_vs:.0f} B per VirtualService")
    assert per_service < MAX_PER_SERVICE, f"{per_service:.0f} B per watched Service"
    assert per_vs < MAX_PER_VIRTUAL_SERVICE, f"{per_vs:.0f} B per VirtualService"
