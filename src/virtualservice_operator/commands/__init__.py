"""The operator's user-facing subcommands, one module each; `cli.py` wires them in.

- `render`: offline, the VirtualService and placeholders the operator would make;
- `check-config`: offline, validate a config.yaml or ConfigMap manifest;
- `explain`: read-only, against the cluster, what happens to one Service name and why;
- `status`: read-only, against the cluster, every name the operator manages.

`inspect` holds what explain and status share (load the config from its ConfigMap,
read the cluster, compute desired state and the plan for a name); `configfile` reads a
config file for render and check-config; `output` holds formatting (colour only when
stdout is a terminal, YAML/JSON/tables).

Exit codes, the same for every command:
  0  success: the output was produced; the config is valid; the name(s) are in sync
  1  a problem was found: the config is invalid; explain found drift (a reconcile would
     write something); status --check found a name not in sync
  2  bad command-line usage
  3  the question could not be answered: the cluster could not be reached or refused
     a read, the operator's ConfigMap is missing or invalid, a file could not be read
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Callable, Sequence

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_USAGE = 2
EXIT_ERROR = 3

EXIT_CODES_EPILOG = """\
exit codes:
  0  success (output produced; config valid; in sync)
  1  a problem was found (invalid config; drift: a reconcile would write)
  2  bad command-line usage
  3  could not answer (cluster unreachable or read refused; operator ConfigMap
     missing or invalid; file unreadable)
"""


class CommandError(Exception):
    """The command cannot answer; the message is the one line the user needs (exit 3)."""


def add_command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    *,
    summary: str,
    description: str,
    examples: Sequence[str],
    handler: Callable[[argparse.Namespace], int],
    note: str = "",
) -> argparse.ArgumentParser:
    """A subcommand parser: wrapped description; examples and exit codes in the epilog."""
    lines = ["examples:", *(f"  {e}" for e in examples), "", EXIT_CODES_EPILOG.rstrip()]
    if note:
        lines.append(f"  ({note})")
    parser = sub.add_parser(
        name,
        help=summary,
        description=textwrap.fill(description, 88),
        epilog="\n".join(lines),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(handler=handler)
    return parser
