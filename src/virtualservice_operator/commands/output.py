"""Output helpers for the subcommands: colour only on a terminal, YAML/JSON, tables.

Colour follows the usual conventions: on when stdout is a TTY, off when it is not
(pipes, files, tests) or when the NO_COLOR environment variable is set.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import yaml

_CODES = {"bold": "1", "red": "31", "green": "32", "yellow": "33", "dim": "2"}


class Style:
    """ANSI styling that is a no-op unless the stream is a terminal."""

    def __init__(self, stream: TextIO | None = None) -> None:
        stream = stream if stream is not None else sys.stdout
        isatty = getattr(stream, "isatty", None)
        self.enabled = bool(isatty and isatty()) and "NO_COLOR" not in os.environ

    def __call__(self, text: str, *styles: str) -> str:
        if not self.enabled or not styles:
            return text
        codes = ";".join(_CODES[s] for s in styles)
        return f"\033[{codes}m{text}\033[0m"

    def ok(self, text: str) -> str:
        return self(text, "green")

    def bad(self, text: str) -> str:
        return self(text, "red", "bold")

    def warn(self, text: str) -> str:
        return self(text, "yellow")

    def title(self, text: str) -> str:
        return self(text, "bold")


class _Dumper(yaml.SafeDumper):
    """Block-style YAML without anchors: shared sub-objects are written out in full."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump(data: Any, fmt: str) -> str:
    """`data` as JSON (indented) or YAML (block style, keys in insertion order)."""
    if fmt == "json":
        return json.dumps(data, indent=2) + "\n"
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def dump_all(documents: Sequence[Any], fmt: str) -> str:
    """Several manifests: a YAML stream (`---`), or a JSON `v1/List` kubectl can apply."""
    if fmt == "json":
        return dump({"apiVersion": "v1", "kind": "List", "items": list(documents)}, fmt)
    return yaml.dump_all(documents, Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    last: Callable[[str], str] = str,
) -> list[str]:
    """Left-aligned columns, two spaces apart, as kubectl prints them.

    `last` styles the last cell of each data row (after padding, so colour codes do
    not upset the alignment).
    """
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        cells = [cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=False)]
        lines.append("  ".join([*cells, last(row[-1])]))
    return lines
