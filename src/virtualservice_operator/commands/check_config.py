"""`check-config FILE`: validate a config offline, before `kubectl apply`.

FILE is a bare config.yaml or a whole ConfigMap manifest (e.g. deployments/config.yaml);
`-` reads stdin. Every problem is listed at once, each with its field path, what is
wrong, how to fix it and, where the YAML has one, its line in config.yaml. Warnings
(unknown keys, with a "did you mean") do not make the config invalid: the operator
loads it and logs them. The same parser as the running operator's is used, so a file
that passes here is one the operator accepts; it checks the template's VirtualService
against Istio's own schema, offline. `--server` also has the cluster judge it
(servercheck.py: a dry-run create, so Istio's validating webhook too, where installed).
"""

from __future__ import annotations

import argparse

from virtualservice_operator.commands import (
    EXIT_OK,
    EXIT_PROBLEM,
    add_command,
)
from virtualservice_operator.commands.configfile import load_config_file
from virtualservice_operator.commands.inspect import CONTEXT_HELP
from virtualservice_operator.commands.output import Style
from virtualservice_operator.commands.servercheck import check_on_server
from virtualservice_operator.domain.config import ConfigError, OperatorConfig


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(
        sub,
        "check-config",
        summary="validate a config.yaml or ConfigMap manifest offline",
        description=(
            "Validate the operator's configuration offline, with the operator's own parser. "
            "FILE is a bare config.yaml or a ConfigMap manifest holding data.config.yaml "
            "('-' reads stdin). Lists every problem with its field, its line in config.yaml "
            "and the fix; warnings (unknown keys) do not make it invalid. The rendered "
            "VirtualService is checked against Istio's VirtualService schema offline; "
            "--server also sends a sample to the cluster as a dry-run create (nothing is "
            "stored), so the API server and Istio's validating webhook, where installed, "
            "judge it too."
        ),
        examples=[
            "virtualservice-operator check-config deployments/config.yaml",
            "kubectl get configmap virtualservice-operator-config -n "
            "virtualservice-operator-system -o yaml | virtualservice-operator check-config -",
            "virtualservice-operator check-config --server deployments/config.yaml",
        ],
        handler=run,
    )
    p.add_argument("file", metavar="FILE", help="config.yaml or ConfigMap manifest ('-': stdin)")
    p.add_argument(
        "--server",
        action="store_true",
        help="also dry-run create a sample VirtualService in the cluster (needs 'create' "
        "on virtualservices in the default namespace)",
    )
    p.add_argument(
        "--kubeconfig",
        "-kubeconfig",
        default=None,
        metavar="FILE",
        help="with --server: kubeconfig file (default: $KUBECONFIG, else in-cluster, "
        "else ~/.kube/config)",
    )
    p.add_argument(
        "--context",
        "-context",
        default=None,
        metavar="NAME",
        help="with --server: " + CONTEXT_HELP,
    )


def run(args: argparse.Namespace) -> int:
    style = Style()
    try:
        loaded = load_config_file(args.file)
    except ConfigError as e:
        count = len(e.problems)
        print(style.bad(f"{args.file}: {count} problem{'s' if count != 1 else ''}"))
        for problem in e.problems:
            print(f"  - {problem.format('')}")  # the file is named above
        return EXIT_PROBLEM
    for warning in loaded.warnings:
        print(style.warn(f"warning: {warning}"))
    print(f"{style.ok('config OK')}: {summary(loaded.config)}")
    if args.server:
        verdict = check_on_server(loaded.config, args.kubeconfig, args.context)
        if not verdict.accepted:
            print(style.bad(f"server: refused a sample VirtualService ({verdict.where}):"))
            print(f"  - {verdict.message}")
            return EXIT_PROBLEM
        print(
            f"{style.ok('server OK')}: a sample VirtualService ({verdict.where}) passes a dry run"
        )
    return EXIT_OK


def summary(config: OperatorConfig) -> str:
    developers = ", ".join(config.developer_namespaces) or "none"
    placeholders = "on" if config.enable_placeholder_services else "off"
    routing = config.routing
    key = routing.header if routing.match == "header" else f"baggage {routing.baggage_key}"
    extra = ""
    if config.service_selector is not None:
        extra += f"; serviceSelector {config.service_selector.query() or '(everything)'}"
    if config.allow_host_conflicts:
        extra += "; host conflicts allowed"
    return (
        f"defaultNamespace {config.default_namespace}; developerNamespaces {developers}; "
        f"placeholders {placeholders}; routing on {key}{extra}"
    )
