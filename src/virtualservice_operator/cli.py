"""Command line: `virtualservice-operator run` and the other subcommands.

Subcommands: `run` (the operator itself), and, for people operating it (each in its
own module of `virtualservice_operator.commands`): `render` and `check-config`
(offline, on a config file), `explain SERVICE` and `status` (read-only, against the
cluster).

Flags of `run` are written as the operations guide writes them, with one dash
(`-zap-log-level=debug`), as controller-runtime operators take them; the two-dash
form (`--zap-log-level=debug`) works too. Booleans take `-flag`, `-flag=true|false`.
Durations take Go's form (`15s`, `1m30s`, `10h`) or plain seconds.

Exit codes of `run`: 0 stopped cleanly; 1 the operator could not start or stopped on an
error (missing/invalid config, lost leadership); 2 bad command-line usage.
Exit codes of the other subcommands (see `virtualservice_operator.commands`): 0 success
(output produced, config valid, in sync); 1 a problem was found (invalid config; drift
for `explain`, and for `status --check`; `status` alone exits 0 even with drift);
2 bad usage; 3 could not answer (cluster unreachable or read refused, operator
ConfigMap missing or invalid, file unreadable).
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from virtualservice_operator import __version__
from virtualservice_operator.domain.constants import CONFIG_MAP_NAME, LEASE_NAME, OPERATOR_NAMESPACE
from virtualservice_operator.kube.client import WATCH_IDLE_TIMEOUT
from virtualservice_operator.runtime.defaults import (
    DEFAULT_WORKERS,
    HEALTH_PROBE_BIND_ADDRESS,
    LEASE_DURATION,
    METRICS_BIND_ADDRESS,
    RENEW_DEADLINE,
    RETRY_PERIOD,
    SYNC_PERIOD,
)

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "t", "yes"):
        return True
    if lowered in ("false", "0", "f", "no"):
        return False
    raise argparse.ArgumentTypeError(f"{value!r} is not a boolean: use true or false")


def parse_duration(value: str) -> float:
    """Go-style duration ("15s", "1m30s", "500ms") or plain seconds, to seconds."""
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    pos, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise argparse.ArgumentTypeError(f"{value!r} is not a duration: use e.g. 15s, 1m30s, 10h")
    return total


def _instance(value: str) -> str:
    from virtualservice_operator.domain.instance import InstanceError, check_instance

    try:
        return check_instance(value)
    except InstanceError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _flag(parser: argparse.ArgumentParser, name: str, **kwargs: object) -> None:
    parser.add_argument(f"-{name}", f"--{name}", dest=name.replace("-", "_"), **kwargs)  # type: ignore[arg-type]


def _bool_flag(parser: argparse.ArgumentParser, name: str, default: bool, help: str) -> None:
    _flag(
        parser,
        name,
        nargs="?",
        const=True,
        default=default,
        type=parse_bool,
        metavar="true|false",
        help=help,
    )


def _run_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "run",
        help="run the operator",
        description=(
            "Run the operator: watch Services, keep VirtualServices and placeholders in step."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _flag(
        p,
        "kubeconfig",
        default=None,
        help="kubeconfig file (default: $KUBECONFIG, else in-cluster, else ~/.kube/config)",
    )
    _flag(
        p,
        "context",
        default=None,
        help="kubeconfig context to use (default: its current-context), as kubectl's --context",
    )
    _flag(
        p,
        "config-map-name",
        default=CONFIG_MAP_NAME,
        help="ConfigMap holding config.yaml",
    )
    _flag(
        p,
        "config-map-namespace",
        default=OPERATOR_NAMESPACE,
        help="namespace of that ConfigMap",
    )
    _flag(
        p,
        "instance",
        default=None,
        type=_instance,
        help=(
            "this instance's identity, labelled on everything it creates; it only ever "
            "touches objects with its own (default: <config-map-namespace>.<config-map-name>)"
        ),
    )
    _flag(
        p,
        "metrics-bind-address",
        default=METRICS_BIND_ADDRESS,
        help="address for /metrics and /debug/pprof ('0' disables)",
    )
    _flag(
        p,
        "health-probe-bind-address",
        default=HEALTH_PROBE_BIND_ADDRESS,
        help="address for /healthz and /readyz ('0' disables)",
    )
    _bool_flag(
        p,
        "enable-profiling",
        False,
        "serve /debug/pprof/profile and /debug/pprof/heap on the metrics address",
    )
    _bool_flag(
        p,
        "metrics-secure",
        False,
        "serve the metrics address over HTTPS, only to callers whose bearer token a "
        "TokenReview authenticates and a SubjectAccessReview allows to get the URL path",
    )
    _flag(
        p,
        "metrics-cert-path",
        default="",
        help="with -metrics-secure: directory holding tls.crt and tls.key (reloaded when "
        "they change); default: a self-signed certificate made at start",
    )
    _bool_flag(
        p, "leader-elect", False, "elect a leader through a Lease, so that only one replica writes"
    )
    _bool_flag(
        p,
        "dry-run",
        False,
        "compute everything and write nothing: log and count "
        "(virtualservice_operator_dry_run_writes_total) each write the operator would make; "
        "sends no Event and never takes the Lease (-leader-elect is ignored)",
    )
    _flag(
        p,
        "leader-election-namespace",
        default="",
        help="namespace of the Lease (default: the ConfigMap's)",
    )
    _flag(p, "leader-election-id", default=LEASE_NAME, help="name of the Lease")
    _flag(
        p,
        "lease-duration",
        type=parse_duration,
        default=LEASE_DURATION,
        help="how long a Lease holds without renewal",
    )
    _flag(
        p,
        "renew-deadline",
        type=parse_duration,
        default=RENEW_DEADLINE,
        help="how long the leader tries to renew before giving up",
    )
    _flag(
        p,
        "retry-period",
        type=parse_duration,
        default=RETRY_PERIOD,
        help="how often to try to acquire or renew",
    )
    _flag(
        p,
        "max-concurrent-reconciles",
        type=int,
        default=DEFAULT_WORKERS,
        help="workers reconciling names in parallel (never two on one name)",
    )
    _flag(
        p,
        "sync-period",
        type=parse_duration,
        default=SYNC_PERIOD,
        help="full resync period (with 10%% jitter)",
    )
    _flag(
        p,
        "watch-idle-timeout",
        type=parse_duration,
        default=WATCH_IDLE_TIMEOUT,
        help="re-establish a watch silent this long",
    )
    _flag(
        p,
        "zap-log-level",
        default="info",
        choices=["debug", "info", "warn", "error"],
        help="lowest level logged",
    )
    _bool_flag(p, "zap-development", False, "human-readable console logs instead of JSON lines")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="virtualservice-operator",
        description=(
            "Keeps Istio VirtualServices and developer placeholder Services in step with "
            "Services. 'run' is the operator; the other commands help operate it."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _run_parser(sub)
    from virtualservice_operator.commands import check_config, explain, render, status

    for command in (render, check_config, explain, status):
        command.add_parser(sub)
    return parser


def _run(args: argparse.Namespace) -> int:
    import prometheus_client
    import structlog

    from virtualservice_operator.kube.kubeconfig import KubeconfigError
    from virtualservice_operator.operator import app
    from virtualservice_operator.runtime import eventloop, logs

    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    logs.configure(args.zap_log_level, args.zap_development)
    options = app.Options(
        kubeconfig=args.kubeconfig,
        context=args.context,
        config_map_name=args.config_map_name,
        config_map_namespace=args.config_map_namespace,
        instance=args.instance or "",
        metrics_bind_address=args.metrics_bind_address,
        health_probe_bind_address=args.health_probe_bind_address,
        profiling=args.enable_profiling,
        metrics_secure=args.metrics_secure,
        metrics_cert_path=args.metrics_cert_path,
        leader_elect=args.leader_elect,
        leader_election_namespace=args.leader_election_namespace,
        leader_election_id=args.leader_election_id,
        lease_duration=args.lease_duration,
        renew_deadline=args.renew_deadline,
        retry_period=args.retry_period,
        max_concurrent_reconciles=args.max_concurrent_reconciles,
        sync_period=args.sync_period,
        watch_idle_timeout=args.watch_idle_timeout,
        dry_run=args.dry_run,
    )

    try:
        return eventloop.run(app.run(options))
    # ValueError: e.g. inconsistent lease timings.
    except (app.StartupError, KubeconfigError, ValueError) as e:
        structlog.get_logger("manager").error(f"cannot start: {e}", error=str(e))
        return 1


def main(argv: Sequence[str] | None = None, *, process: bool = False) -> int:
    """Run a subcommand; its exit code. `process`: this is the process's whole life
    (the console script, `python -m`), see `entry`."""
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return _run(args)
    from virtualservice_operator.commands import EXIT_ERROR, CommandError

    if process:
        gc.disable()  # the heap of a command only grows until it ends (see `entry`)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        code = handler(args)
    except CommandError as e:  # every command's "cannot answer": one line, exit 3
        print(f"error: {e}", file=sys.stderr)
        code = EXIT_ERROR
    if process:
        _exit_now(code)
    return code


def entry() -> None:
    """The console script. After a command other than `run`, the process ends without
    freeing its heap object by object: `status` at 5,000 Services holds about a million
    objects, and tearing them down took a quarter of a second after its answer was
    written. The output is flushed first; a command holds nothing else to close."""
    sys.exit(main(process=True))


def _exit_now(code: int) -> NoReturn:
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:  # the reader stopped reading (`| head`): nothing more to say
        pass
    os._exit(code)


if __name__ == "__main__":
    entry()
