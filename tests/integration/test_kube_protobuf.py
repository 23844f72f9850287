"""Services listed as protobuf against a real kube-apiserver: the records are those the
JSON path makes of the same objects, page by page, and an error answer in protobuf
still becomes a readable typed error."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest

from tests.integration.conftest import Namespaces
from virtualservice_operator.domain.constants import (
    EXCLUDE_LABEL,
    INSTANCE_LABEL,
    PLACEHOLDER_LABEL,
    PLACEHOLDER_VALUE,
    SOURCE_ANNOTATION,
    service_host,
)
from virtualservice_operator.domain.model import ServiceInfo, ServiceWire
from virtualservice_operator.kube.client import SERVICES, ApiError, KubeClient
from virtualservice_operator.operator.cache import _SERVICE_RECORDS
from virtualservice_operator_dev.controlplane import ControlPlane

pytestmark = pytest.mark.integration

_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def _services(namespace: str, source_ns: str, count: int, seed: int) -> list[dict[str, Any]]:
    """Services of every shape the records distinguish: placeholders (whole or half
    marked), real ones with and without selectors, ports with and without names and
    appProtocol, labels and annotations ours and not, last-applied, no ports at all."""
    rng = random.Random(seed)
    bodies = []
    for i in range(count):
        name = f"svc-{i:03d}"
        labels: dict[str, str] = {}
        annotations: dict[str, str] = {}
        if rng.random() < 0.5:
            labels[PLACEHOLDER_LABEL] = PLACEHOLDER_VALUE
        if rng.random() < 0.5:
            annotations[SOURCE_ANNOTATION] = f"{source_ns}/{name}"
        for key, chance in ((INSTANCE_LABEL, 0.4), (EXCLUDE_LABEL, 0.2), ("app", 0.5)):
            if rng.random() < chance:
                labels[key] = rng.choice(["true", "a", "x-y"])
        if rng.random() < 0.3:
            annotations[_LAST_APPLIED] = '{"kind":"Service"}'
        if rng.random() < 0.3:
            annotations["team/owner"] = rng.choice(["a", "b"])
        count_ports = rng.choice([0, 1, 1, 2, 3])
        ports = [
            {
                "port": 80 + j,
                # A name is required only when there are several.
                **({"name": f"p{j}"} if rng.random() < 0.5 or count_ports > 1 else {}),
                **({"protocol": "UDP"} if rng.random() < 0.2 else {}),
                **({"appProtocol": "grpc"} if rng.random() < 0.3 else {}),
            }
            for j in range(count_ports)
        ]
        if rng.random() < 0.5:
            external = service_host(name, source_ns) if rng.random() < 0.8 else "elsewhere.example"
            spec: dict[str, Any] = {"type": "ExternalName", "externalName": external}
            if ports:
                spec["ports"] = ports
        else:
            spec = {"clusterIP": "None", "ports": ports or [{"port": 8080}]}
            if rng.random() < 0.3:
                spec["type"] = "ClusterIP"
        if rng.random() < 0.4 and spec.get("type") != "ExternalName":
            spec["selector"] = {"app": name}
        metadata: dict[str, Any] = {"name": name, "namespace": namespace}
        if labels:
            metadata["labels"] = labels
        if annotations:
            metadata["annotations"] = annotations
        bodies.append({"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": spec})
    return bodies


async def test_protobuf_lists_make_the_same_records_as_json(
    control_plane: ControlPlane, namespaces: Namespaces
) -> None:
    ns = namespaces.developers[0]
    client = KubeClient.from_kubeconfig(str(control_plane.admin_kubeconfig))
    try:
        for body in _services(ns, namespaces.default, 60, seed=7):
            await client.create(SERVICES, ns, body)
        # Small pages: the continue token is followed in both encodings.
        pb_pages = [p async for p in client.list_pages(_SERVICE_RECORDS, ns, limit=7)]
        json_kind = replace(SERVICES, items=ServiceWire)
        wire_pages = [p async for p in client.list_pages(json_kind, ns, limit=7)]
        plain, _ = await client.list(SERVICES, ns)
    finally:
        await client.close()

    from_pb = [item for items, _ in pb_pages for item in items]
    assert all(type(item) is ServiceInfo for item in from_pb), "not read as protobuf"
    assert len(pb_pages) == 9  # 60 Services, 7 a page
    from_wire = [ServiceInfo.read(item) for items, _ in wire_pages for item in items]
    from_json = [ServiceInfo.from_dict(obj) for obj in plain]
    assert len(from_json) == 60
    assert from_pb == from_json
    assert from_wire == from_json
    # Fields outside equality, and the kept maps in the API server's order.
    assert [s.is_placeholder for s in from_pb] == [s.is_placeholder for s in from_json]
    assert any(s.is_placeholder for s in from_pb) and not all(s.is_placeholder for s in from_pb)
    assert [(list(s.labels.items()), list(s.annotations.items())) for s in from_pb] == [
        (list(s.labels.items()), list(s.annotations.items())) for s in from_json
    ]
    # Each page's resourceVersion, and the list's last one, agree with JSON's page by page.
    assert all(version for _, version in pb_pages)


async def test_an_error_answered_in_protobuf_is_a_readable_typed_error(
    control_plane: ControlPlane, namespaces: Namespaces
) -> None:
    client = KubeClient.from_kubeconfig(str(control_plane.admin_kubeconfig))
    try:
        with pytest.raises(ApiError) as raised:
            async for _ in client.list_pages(
                _SERVICE_RECORDS, namespaces.default, label_selector="a in (b"
            ):
                pass
    finally:
        await client.close()
    assert raised.value.status == 400
    assert raised.value.reason == "BadRequest"
    assert "unable to parse requirement" in raised.value.message
