"""Reading a config file given on the command line (shared by render and check-config)."""

from __future__ import annotations

import sys
from pathlib import Path

from virtualservice_operator.commands import CommandError
from virtualservice_operator.domain.config import LoadedConfig, parse_config_file


def read_text(path: str) -> str:
    """The file's text; `-` reads stdin. Raises CommandError when it cannot be read."""
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise CommandError(f"cannot read {path}: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise CommandError(f"cannot read {path}: not UTF-8 text ({e.reason})") from e


def load_config_file(path: str) -> LoadedConfig:
    """Parse a bare config.yaml or a ConfigMap manifest. Raises CommandError, ConfigError."""
    return parse_config_file(read_text(path))
