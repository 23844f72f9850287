"""A proxyless gRPC client that keeps sending: one long-lived grpcio channel to
`xds:///HOST:PORT` (routes from istiod, updated as istiod pushes), one Echo request to
Istio's echo app every INTERVAL seconds, one line per request on stdout:
`<CLOCK_MONOTONIC seconds> <Pod that answered, or ERROR:code>`.

Run on the node's host (the Pod network is its bridge), bootstrapped as a Pod's client
is (mesh.proxyless_env's bootstrap, with the node's address as the client's IP), so
that the time a route takes to reach a client already connected can be measured
without a process start or a new xDS connection per request.

    python -m virtualservice_operator_dev.meshprobe --bootstrap JSON --target xds:///... \
        [--header NAME:VALUE] [--interval 0.02]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

_ECHO = "/proto.EchoTestService/Echo"


def _field(data: bytes, number: int) -> bytes:
    """The first length-delimited field `number` of a protobuf message (EchoResponse has
    one: `string message = 1`)."""
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        if key & 7 == 2:
            size, i = _varint(data, i)
            if key >> 3 == number:
                return data[i : i + size]
            i += size
        elif key & 7 == 0:
            _, i = _varint(data, i)
        else:
            raise ValueError(f"unexpected wire type {key & 7}")
    return b""


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7


def echo_request(message: str) -> bytes:
    """EchoRequest{message}: field 1, length-delimited."""
    raw = message.encode()
    assert len(raw) < 128
    return b"\x0a" + bytes([len(raw)]) + raw


def hostname(response: bytes) -> str:
    for line in _field(response, 1).decode(errors="replace").splitlines():
        if line.startswith("Hostname="):
            return line.split("=", 1)[1]
    return "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m virtualservice_operator_dev.meshprobe")
    parser.add_argument("--bootstrap", required=True, help="xDS bootstrap JSON")
    parser.add_argument("--target", required=True, help="xds:///host:port")
    parser.add_argument("--header", action="append", default=[], help="NAME:VALUE")
    parser.add_argument("--interval", type=float, default=0.02)
    args = parser.parse_args(argv)
    os.environ["GRPC_XDS_BOOTSTRAP_CONFIG"] = args.bootstrap  # read when the channel is made
    import grpc  # type: ignore[import-untyped]  # after the bootstrap is in the environment

    metadata = tuple(
        (name.strip().lower(), value.strip())
        for name, value in (h.split(":", 1) for h in args.header)
    )
    with grpc.insecure_channel(args.target) as channel:
        echo = channel.unary_unary(_ECHO)
        while True:
            began = time.monotonic()
            try:
                answer = hostname(echo(echo_request("probe"), metadata=metadata, timeout=5))
            except grpc.RpcError as e:
                answer = f"ERROR:{e.code().name}"
            print(f"{began:.4f} {answer}", flush=True)
            time.sleep(max(0.0, args.interval - (time.monotonic() - began)))


if __name__ == "__main__":
    sys.exit(main())
