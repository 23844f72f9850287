"""The API server's protobuf envelope and the subset of its schema we read (Service lists).

Encoding a list of Services as protobuf costs the API server about half the CPU of
JSON, and the answer is a third smaller (bench/README.md). Only lists of Services are
read this way; watches, single reads, writes and every other kind stay JSON.

The wire format: 4 magic bytes `k8s\\x00`, then a `runtime.Unknown` whose `raw` holds the
object (a `ServiceList`, or a `Status` for an error). The schema below is a subset of
k8s.io/api core/v1 and k8s.io/apimachinery meta/v1 `generated.proto`, with their field
numbers: protobuf skips the fields a schema does not name (managedFields, status...),
so a subset reads the same bytes correctly. It is built into descriptors at import: no
generated code, no compiler.

Decoding a page into the cache's records is the operator's (`operator.service_protobuf`).

Presence follows Go's encoder, not JSON's: a plain Go string is written even when
empty, where JSON's `omitempty` leaves it out, so an empty externalName or port name
reads as absent, as from JSON; so does an empty appProtocol, which the API server never
accepts.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

MAGIC = b"k8s\x00"

_F = descriptor_pb2.FieldDescriptorProto
_OPTIONAL, _REPEATED = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
_STRING, _BYTES, _INT32, _MESSAGE = _F.TYPE_STRING, _F.TYPE_BYTES, _F.TYPE_INT32, _F.TYPE_MESSAGE
_PACKAGE = "virtualservice_operator.k8s"

# message -> [(field, number, label, type, message type)], the numbers of k8s.io/api
# core/v1 and k8s.io/apimachinery (runtime, meta/v1) generated.proto.
_SCHEMA: dict[str, list[tuple[str, int, int, int, str]]] = {
    "Unknown": [  # runtime.Unknown
        ("raw", 2, _OPTIONAL, _BYTES, ""),
        ("contentEncoding", 3, _OPTIONAL, _STRING, ""),
    ],
    "ListMeta": [
        ("resourceVersion", 2, _OPTIONAL, _STRING, ""),
        ("continue", 3, _OPTIONAL, _STRING, ""),
    ],
    "ObjectMeta": [
        ("name", 1, _OPTIONAL, _STRING, ""),
        ("namespace", 3, _OPTIONAL, _STRING, ""),
        ("uid", 5, _OPTIONAL, _STRING, ""),
        ("resourceVersion", 6, _OPTIONAL, _STRING, ""),
        ("labels", 11, _REPEATED, _BYTES, ""),  # map<string, string>: raw entries
        ("annotations", 12, _REPEATED, _BYTES, ""),  # the same
    ],
    "MapEntry": [("key", 1, _OPTIONAL, _STRING, ""), ("value", 2, _OPTIONAL, _STRING, "")],
    "Status": [
        ("status", 2, _OPTIONAL, _STRING, ""),
        ("message", 3, _OPTIONAL, _STRING, ""),
        ("reason", 4, _OPTIONAL, _STRING, ""),
        ("code", 6, _OPTIONAL, _INT32, ""),
    ],
    "ServiceList": [
        ("metadata", 1, _OPTIONAL, _MESSAGE, "ListMeta"),
        ("items", 2, _REPEATED, _MESSAGE, "Service"),
    ],
    "Service": [
        ("metadata", 1, _OPTIONAL, _MESSAGE, "ObjectMeta"),
        ("spec", 2, _OPTIONAL, _BYTES, ""),  # a ServiceSpec, decoded once per distinct one
    ],
    "ServiceSpec": [
        ("ports", 1, _REPEATED, _MESSAGE, "ServicePort"),
        ("selector", 2, _REPEATED, _BYTES, ""),  # map<string, string>: only its presence
        ("type", 4, _OPTIONAL, _STRING, ""),
        ("externalName", 10, _OPTIONAL, _STRING, ""),
    ],
    "ServicePort": [
        ("name", 1, _OPTIONAL, _STRING, ""),
        ("protocol", 2, _OPTIONAL, _STRING, ""),
        ("port", 3, _OPTIONAL, _INT32, ""),
        ("appProtocol", 6, _OPTIONAL, _STRING, ""),
    ],
}


def file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """The schema above as a .proto file's descriptor."""
    proto = descriptor_pb2.FileDescriptorProto(
        name="virtualservice_operator_k8s.proto", package=_PACKAGE, syntax="proto2"
    )
    for name, fields in _SCHEMA.items():
        message = proto.message_type.add(name=name)
        for field_name, number, label, type_, type_name in fields:
            field = message.field.add(name=field_name, number=number, label=label, type=type_)
            if type_name:
                field.type_name = f".{_PACKAGE}.{type_name}"
    return proto


# A pool of our own: nothing else in the process can clash with these names.
_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(file_descriptor())


def _message(name: str) -> Any:
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{_PACKAGE}.{name}"))


Unknown = _message("Unknown")
ServiceList = _message("ServiceList")
ServiceSpec = _message("ServiceSpec")
MapEntry = _message("MapEntry")
Status = _message("Status")


class ProtobufError(ValueError):
    """Not a Kubernetes protobuf message we can read."""


def parse(message: Any, raw: bytes) -> Any:
    try:
        return message.FromString(raw)
    except DecodeError as e:
        raise ProtobufError(f"cannot decode {message.DESCRIPTOR.name}: {e}") from e


def unwrap(raw: bytes) -> bytes:
    """The object's bytes inside the envelope."""
    if raw[:4] != MAGIC:
        raise ProtobufError("not a Kubernetes protobuf message (no k8s magic)")
    envelope = parse(Unknown, raw[4:])
    if envelope.contentEncoding:
        raise ProtobufError(f"unsupported content encoding {envelope.contentEncoding!r}")
    return bytes(envelope.raw)


def status(raw: bytes) -> dict[str, Any]:
    """An error answer (`Status`) as the JSON dict the API server would have sent."""
    s = parse(Status, unwrap(raw))
    return {"status": s.status, "message": s.message, "reason": s.reason, "code": s.code}
