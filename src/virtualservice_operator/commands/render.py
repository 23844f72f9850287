"""`render`: offline, what the operator would make for one Service name.

Given a config file (bare config.yaml or ConfigMap manifest) and a Service NAME assumed
to exist in the default namespace, prints the VirtualService `NAME-virtual-service` and
the placeholder Services, exactly as `desired.compute_desired` builds them for the
running operator (except the ownerReference, which needs the live Service's uid).
`--dev-namespace N` (repeatable) says that a real Service NAME exists in developer
namespace N, so it gets a route and no placeholder; `--ports` gives the Services' ports;
`--placeholders` turns enablePlaceholderServices on whatever the file says.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from virtualservice_operator.commands import (
    EXIT_OK,
    EXIT_PROBLEM,
    add_command,
)
from virtualservice_operator.commands.configfile import load_config_file
from virtualservice_operator.commands.output import dump_all
from virtualservice_operator.domain.config import ConfigError
from virtualservice_operator.domain.desired import compute_desired
from virtualservice_operator.domain.model import ServiceInfo, ServicePort, is_dns_label
from virtualservice_operator.domain.template import TemplateError


def parse_ports(value: str) -> tuple[ServicePort, ...]:
    """`80,9090` or `http:80,tcp-db:5432`: ports, optionally named (`name:port`).

    An unnamed port is named `http-<port>` (Istio reads the protocol from the name
    prefix, so it counts as HTTP), as a multi-port Service needs names anyway.
    """
    ports = []
    for item in (part.strip() for part in value.split(",")):
        name, _, number = item.rpartition(":")
        if not number.isdigit() or not 0 < int(number) < 65536:
            raise argparse.ArgumentTypeError(
                f"{item!r} is not a port: use e.g. 80,9090 or http:80,tcp-db:5432"
            )
        ports.append(ServicePort(port=int(number), name=name or f"http-{number}"))
    return tuple(ports)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(
        sub,
        "render",
        summary="print, offline, the VirtualService and placeholders made for a Service",
        description=(
            "Print, without a cluster, the VirtualService and placeholder Services the "
            "operator would make for a Service NAME that exists in the default namespace, "
            "given a config file (bare config.yaml or ConfigMap manifest). Notes (why "
            "something is not made) go to stderr as '# ...' lines."
        ),
        examples=[
            "virtualservice-operator render --config deployments/config.yaml --service cart",
            "virtualservice-operator render --config deployments/config.yaml --service cart "
            "--dev-namespace staging --ports http:80,grpc:9090 -o json",
        ],
        handler=run,
    )
    p.add_argument("--config", required=True, metavar="FILE", help="config.yaml or ConfigMap")
    p.add_argument("--service", required=True, metavar="NAME", help="the Service name")
    p.add_argument(
        "--dev-namespace",
        action="append",
        default=[],
        metavar="N",
        help="a real Service NAME exists in developer namespace N (repeatable)",
    )
    p.add_argument(
        "--placeholders",
        action="store_true",
        help="turn enablePlaceholderServices on, whatever the config says",
    )
    p.add_argument(
        "--ports",
        type=parse_ports,
        default=(ServicePort(port=80, name="http"),),
        metavar="PORTS",
        help="the Services' ports: 80,9090 or name:port,... (default: http:80)",
    )
    p.add_argument(
        "-o",
        "--output",
        choices=["yaml", "json"],
        default="yaml",
        help="yaml: a multi-document stream; json: a v1 List (default: yaml)",
    )


def run(args: argparse.Namespace) -> int:
    try:
        loaded = load_config_file(args.config)
    except ConfigError as e:
        print(f"error: {args.config} is not a valid config:", file=sys.stderr)
        for problem in e.problems:
            print(f"  - {problem.format('')}", file=sys.stderr)
        return EXIT_PROBLEM
    config = loaded.config
    if args.placeholders:
        config = config.model_copy(update={"enable_placeholder_services": True})
    name: str = args.service
    if not is_dns_label(name):
        print(f"error: {name!r} is not a Service name (a DNS label)", file=sys.stderr)
        return EXIT_PROBLEM
    services = {
        config.default_namespace: ServiceInfo(config.default_namespace, name, ports=args.ports)
    }
    for ns in args.dev_namespace:
        if ns not in config.developer_namespaces:
            known = ", ".join(config.developer_namespaces) or "none"
            print(
                f"warning: {ns} is not in developerNamespaces ({known}): ignored", file=sys.stderr
            )
            continue
        services[ns] = ServiceInfo(ns, name, ports=args.ports)
    try:
        desired = compute_desired(config, name, services)
    except TemplateError as e:  # the config was validated: only a bad name gets here
        print(f"error: {e}", file=sys.stderr)
        return EXIT_PROBLEM
    for note in desired.notes:
        print(f"# {note}", file=sys.stderr)
    documents: list[dict[str, Any]] = []
    if desired.virtual_service is not None:
        documents.append(desired.virtual_service)
    documents.extend(desired.placeholders.values())
    sys.stdout.write(dump_all(documents, args.output))
    return EXIT_OK
