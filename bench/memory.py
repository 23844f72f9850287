"""Where the operator's bytes per watched Service go: its cache built for a scale, measured.

Builds what the operator's `ClusterCache` holds once converged at a scale (the Services of
every watched namespace, the placeholders, our VirtualServices), through the cache's own
code (`Informer.upsert` of the objects as the API server returns them, so the records,
stores and indices are the operator's), and reports the heap it takes (tracemalloc) and a
breakdown by part (`sys.getsizeof` over the distinct objects each part holds).

    python -m bench.memory --scale XL
"""

from __future__ import annotations

import argparse
import gc
import sys
import tracemalloc
import uuid
from collections.abc import Iterable
from typing import Any

from bench.core import (
    SCALES,
    Scale,
    dev_namespaces_for,
    operator_config,
    service_body,
    service_names,
)
from virtualservice_operator.domain.desired import compute_desired
from virtualservice_operator.domain.instance import default_instance
from virtualservice_operator.domain.model import ServiceInfo
from virtualservice_operator.kube.client import JSON


def served(body: JSON, rv: int) -> JSON:
    """`body` as the API server answers it: uid, resourceVersion, timestamps, managedFields."""
    meta = dict(body["metadata"])
    meta.update(
        uid=str(uuid.uuid4()),
        resourceVersion=str(rv),
        creationTimestamp="2026-12-04T19:00:00Z",
        managedFields=[{"manager": "virtualservice-operator", "operation": "Update"}],
    )
    return {**body, "metadata": meta}


def build(scale: Scale) -> tuple[Any, int]:
    """A ClusterCache holding the converged state of `scale`; (cache, watched Services)."""
    import asyncio

    from virtualservice_operator.operator.cache import ClusterCache

    default = "bench-default"
    devs = [f"bench-dev{j}" for j in range(scale.dev_namespaces)]
    config = operator_config(default, devs).with_instance(
        default_instance("virtualservice-operator-system", "bench-config")
    )

    async def make() -> ClusterCache:
        cache = ClusterCache(None, lambda name: None, instance=config.instance)  # type: ignore[arg-type]
        cache.services = {ns: cache._service_informer(ns) for ns in config.watched_namespaces}
        cache.unmanaged_vs = cache._vs_informer(default, "x")
        return cache

    cache = asyncio.run(make())
    rv = 1000
    for i, name in enumerate(service_names(scale)):
        found: dict[str, ServiceInfo] = {}
        for ns in [default, *dev_namespaces_for(i, devs)]:
            rv += 1
            obj = served(service_body(ns, name, i), rv)
            cache.services[ns].upsert(obj)
            found[ns] = ServiceInfo.from_dict(obj)
        desired = compute_desired(config, name, found)
        if desired.virtual_service is not None:
            rv += 1
            cache.record_write("VirtualService", served(desired.virtual_service, rv))
        for body in desired.placeholders.values():
            rv += 1
            cache.record_write("Service", served(body, rv))
    watched = sum(len(i) for i in cache.services.values())
    return cache, watched


def deep_size(roots: Iterable[object], seen: set[int]) -> int:
    """Bytes of every object reachable from `roots` not already in `seen` (shared values
    counted once, for the first part that reaches them)."""
    total = 0
    stack = list(roots)
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, type):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, list | tuple | set | frozenset):
            stack.extend(obj)
        elif hasattr(obj, "__slots__"):
            for cls in type(obj).__mro__:
                for slot in getattr(cls, "__slots__", ()):
                    if hasattr(obj, slot):
                        stack.append(getattr(obj, slot))
        elif hasattr(obj, "__dict__"):
            stack.append(vars(obj))
    return total


def breakdown(cache: Any) -> dict[str, int]:
    """Bytes by part, distinct objects only (interned names are counted where first met)."""
    seen: set[int] = set()
    stores = list(cache.services.values())
    out: dict[str, int] = {}
    records = [r for i in stores for r in i.values()]
    out["service store dicts"] = sum(sys.getsizeof(i._store) for i in stores)
    out["service store keys"] = deep_size((k for i in stores for k in i._store), seen)
    for field in ("uid", "resource_version", "external_name", "namespace", "name"):
        out[f"service .{field}"] = deep_size((getattr(r, field) for r in records), seen)
    for field in ("ports", "labels", "annotations"):
        out[f"service .{field} (shared)"] = deep_size((getattr(r, field) for r in records), seen)
    out["service records"] = sum(sys.getsizeof(r) for r in records)
    vss = cache.managed_vs
    out["VirtualService store + index"] = sys.getsizeof(vss._store) + deep_size(
        [vss._store.keys(), vss._indices], seen
    )
    out["VirtualService records and bodies"] = deep_size(vss.values(), seen)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.memory")
    p.add_argument("--scale", default="M", choices=list(SCALES))
    args = p.parse_args(argv)
    scale = SCALES[args.scale]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    cache, watched = build(scale)
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    vs = len(cache.managed_vs)
    print(f"scale {scale.name}: {watched} watched Services, {vs} VirtualServices")
    print(f"heap held by the cache (tracemalloc): {held / 2**20:.1f} MiB")
    print(f"  per watched Service (all included): {held / watched:.0f} B")
    parts = breakdown(cache)
    for part, size in sorted(parts.items(), key=lambda kv: -kv[1]):
        print(f"  {part:40s} {size / 2**20:7.2f} MiB  {size / watched:6.0f} B/Service")
    return 0


if __name__ == "__main__":
    sys.exit(main())
