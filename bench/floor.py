"""The floor: the least any client could do to reach the same end state.

Reads the objects the operator would create (computed beforehand by the benchmark with
`desired.compute_desired`, one JSON list of {"kind", "namespace", "body"}) and POSTs them
with `-concurrency` requests in flight, as the operator's ServiceAccount, and nothing else:
no list, no watch, no cache, no events, no diffing. Run as its own process, as the
operator is, so that both pay an interpreter start-up and an HTTP client's set-up.

    python -m bench.floor -kubeconfig=sa.kubeconfig -bodies=bodies.json -concurrency=1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from virtualservice_operator.kube.client import SERVICES, KubeClient
from virtualservice_operator.operator.kinds import virtual_service_kind


async def create_all(kubeconfig: str, objects: list[dict[str, Any]], concurrency: int) -> int:
    client = KubeClient.from_kubeconfig(kubeconfig)
    todo = iter(objects)
    failures = 0

    async def worker() -> None:
        nonlocal failures
        for obj in todo:  # shared iterator: each object is taken by exactly one worker
            body = obj["body"]
            kind = (
                virtual_service_kind(body["apiVersion"])
                if obj["kind"] == "VirtualService"
                else SERVICES
            )
            try:
                await client.create(kind, obj["namespace"], body)
            except Exception as e:
                failures += 1
                print(f"create {obj['namespace']}/{body['metadata']['name']}: {e}", file=sys.stderr)

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        await client.close()
    return failures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.floor")
    p.add_argument("-kubeconfig", required=True)
    p.add_argument("-bodies", required=True)
    p.add_argument("-concurrency", type=int, default=1)
    args = p.parse_args(argv)
    with open(args.bodies) as f:
        objects = json.load(f)
    failures = asyncio.run(create_all(args.kubeconfig, objects, args.concurrency))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
