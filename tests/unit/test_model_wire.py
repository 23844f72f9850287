"""A Service listed into `ServiceWire` (only the fields kept, the rest skipped by the
decoder) becomes the same `ServiceInfo` as the same Service read as JSON."""

from __future__ import annotations

import json
from typing import Any

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from virtualservice_operator.domain.constants import (
    EXCLUDE_LABEL,
    INSTANCE_LABEL,
    PLACEHOLDER_LABEL,
    SOURCE_ANNOTATION,
)
from virtualservice_operator.domain.model import ServiceInfo, ServiceWire

KEYS = st.sampled_from(
    [PLACEHOLDER_LABEL, SOURCE_ANNOTATION, INSTANCE_LABEL, EXCLUDE_LABEL, "app", "team"]
)
TEXT = st.text("abc-/.", max_size=8)
MAPS = st.none() | st.dictionaries(KEYS, TEXT, max_size=4)
PORT = st.fixed_dictionaries(
    {"port": st.integers(0, 65535)},
    optional={
        "name": TEXT,
        "protocol": st.sampled_from(["TCP", "UDP", ""]),
        "appProtocol": TEXT,
        "targetPort": st.integers(1, 9) | TEXT,
    },
)
SPEC = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["ClusterIP", "ExternalName", ""]),
        "externalName": TEXT,
        "ports": st.lists(PORT, max_size=3),
        "selector": MAPS,
        "clusterIP": st.just("None"),
    },
)
META = st.fixed_dictionaries(
    {"name": TEXT, "namespace": TEXT},
    optional={
        "uid": TEXT,
        "resourceVersion": st.integers(1, 99).map(str),
        "labels": MAPS,
        "annotations": MAPS,
        "managedFields": st.just([{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]),
    },
)
SERVICE = st.fixed_dictionaries(
    {"metadata": META},
    optional={"spec": SPEC, "status": st.just({"loadBalancer": {}}), "kind": st.just("Service")},
)


@given(SERVICE)
def test_a_listed_service_is_the_same_record_as_its_json(obj: dict[str, Any]) -> None:
    wire = msgspec.json.decode(json.dumps(obj), type=ServiceWire)
    assert ServiceInfo.read(wire) == ServiceInfo.read(obj) == ServiceInfo.from_dict(obj)
    assert wire.key == f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
