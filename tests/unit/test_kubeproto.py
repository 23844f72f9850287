"""Service list pages in protobuf: the records are those the JSON of the same Services
makes, for Services of any shape, encoded as the API server's Go encoder writes them
(plain strings always, even empty; pointers only when set); and a page that is not
Kubernetes protobuf is refused."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from virtualservice_operator.domain.constants import (
    EXCLUDE_LABEL,
    INSTANCE_LABEL,
    PLACEHOLDER_LABEL,
    PLACEHOLDER_VALUE,
    SOURCE_ANNOTATION,
)
from virtualservice_operator.domain.model import ServiceInfo
from virtualservice_operator.kube import protobuf as kubeproto
from virtualservice_operator.operator import service_protobuf

_names = st.from_regex(r"[a-z]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
_values = st.sampled_from(["", "true", "a", "prod/svc", "svc.prod.svc.cluster.local"])
_label_keys = st.sampled_from(
    [PLACEHOLDER_LABEL, EXCLUDE_LABEL, INSTANCE_LABEL, "app", "team", "virtualservice-operator/x"]
)
_annotation_keys = st.sampled_from(
    [SOURCE_ANNOTATION, "kubectl.kubernetes.io/last-applied-configuration", "owner", "note"]
)
_ports = st.lists(
    st.fixed_dictionaries(
        {"port": st.integers(1, 65535)},
        optional={
            "name": _names,
            "protocol": st.sampled_from(["TCP", "UDP", "SCTP"]),
            "appProtocol": st.sampled_from(["grpc", "http", "kubernetes.io/h2c"]),
        },
    ),
    max_size=3,
)


@st.composite
def services(draw: st.DrawFn) -> dict[str, Any]:
    """A Service as the API server's JSON has it (empty fields left out)."""
    labels = draw(st.dictionaries(_label_keys, _values, max_size=4))
    if draw(st.booleans()):
        labels[PLACEHOLDER_LABEL] = PLACEHOLDER_VALUE
    metadata: dict[str, Any] = {
        "name": draw(_names),
        "namespace": draw(_names),
        "uid": draw(st.uuids()).hex,
        "resourceVersion": str(draw(st.integers(1, 10**9))),
        "labels": labels,
        "annotations": draw(st.dictionaries(_annotation_keys, _values, max_size=3)),
    }
    spec: dict[str, Any] = {
        "type": draw(st.sampled_from(["", "ClusterIP", "ExternalName", "NodePort"])),
        "externalName": draw(st.sampled_from(["", "x.example", "svc.prod.svc.cluster.local"])),
        "ports": draw(_ports),
        "selector": draw(st.dictionaries(_names, _names, max_size=2)),
    }
    for maps, key in ((metadata, "labels"), (metadata, "annotations"), (spec, "selector")):
        maps[key] = dict(sorted(maps[key].items()))  # Go's encoding/json sorts map keys
    return {
        "metadata": {k: v for k, v in metadata.items() if v},
        "spec": {k: v for k, v in spec.items() if v},
    }


def _entries(mapping: dict[str, str]) -> list[bytes]:
    # Go writes a map's entries sorted by key.
    return [
        kubeproto.MapEntry(key=k, value=v).SerializeToString() for k, v in sorted(mapping.items())
    ]


def _encoded(services: list[dict[str, Any]], token: str = "") -> bytes:
    """The page as kube-apiserver encodes it."""
    page = kubeproto.ServiceList()
    page.metadata.resourceVersion = "99"
    setattr(page.metadata, "continue", token)
    for obj in services:
        meta, spec = obj["metadata"], obj["spec"]
        item = page.items.add()
        for field in ("name", "namespace", "uid", "resourceVersion"):
            setattr(item.metadata, field, meta.get(field, ""))  # plain strings: always
        item.metadata.labels.extend(_entries(meta.get("labels", {})))
        item.metadata.annotations.extend(_entries(meta.get("annotations", {})))
        encoded = kubeproto.ServiceSpec(
            type=spec.get("type", ""), externalName=spec.get("externalName", "")
        )
        for p in spec.get("ports", []):
            port = encoded.ports.add(
                port=p["port"], name=p.get("name", ""), protocol=p.get("protocol", "")
            )
            if "appProtocol" in p:  # a pointer: only when set
                port.appProtocol = p["appProtocol"]
        encoded.selector.extend(_entries(spec.get("selector", {})))
        item.spec = encoded.SerializeToString()
    envelope = kubeproto.Unknown(raw=page.SerializeToString())
    return kubeproto.MAGIC + envelope.SerializeToString()


@settings(max_examples=200, deadline=None)
@given(st.lists(services(), max_size=6), st.sampled_from(["", "next"]))
def test_a_protobuf_page_makes_the_records_json_makes(
    objs: list[dict[str, Any]], token: str
) -> None:
    raw = _encoded(objs, token)
    for _ in range(2):  # the second time from the decoded-value caches
        records, version, after = service_protobuf.service_page(raw)
        expected = [ServiceInfo.from_dict(obj) for obj in objs]
        assert records == expected
        assert [r.is_placeholder for r in records] == [e.is_placeholder for e in expected]
        assert [list(r.annotations.items()) for r in records] == [
            list(e.annotations.items()) for e in expected
        ]
        assert (version, after) == ("99", token or None)


def test_a_page_without_the_kubernetes_envelope_is_refused() -> None:
    with pytest.raises(kubeproto.ProtobufError, match="magic"):
        service_protobuf.service_page(b'{"kind": "ServiceList"}')
    with pytest.raises(kubeproto.ProtobufError, match="cannot decode"):
        service_protobuf.service_page(kubeproto.MAGIC + b"\xff\xff\xff")
    gzipped = kubeproto.Unknown(raw=b"x", contentEncoding="gzip").SerializeToString()
    with pytest.raises(kubeproto.ProtobufError, match="content encoding"):
        service_protobuf.service_page(kubeproto.MAGIC + gzipped)
