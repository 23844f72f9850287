"""Structured logging: JSON lines by default, readable console lines in development.

Fields follow the operations guide: `timestamp`, `level`, `msg`, and where they apply
`service`, `namespace`, `virtualservice`, `error`. `-zap-log-level` picks the floor.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def _rename_event(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event["msg"] = event.pop("event", "")
    return event


def _logger_name_last(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if "logger" in event:
        event["logger"] = event.pop("logger")
    return event


def configure(level: str = "info", development: bool = False, stream: TextIO | None = None) -> None:
    """Set up structlog (and the stdlib root logger, for libraries) once per process."""
    numeric = LEVELS[level.lower()]
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    renderer: Any
    if development:
        renderer = structlog.dev.ConsoleRenderer(colors=(stream or sys.stderr).isatty())
    else:
        shared.append(_rename_event)
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    structlog.configure(
        processors=[*shared, _logger_name_last, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(
        level=max(numeric, logging.WARNING), stream=stream or sys.stderr, force=True
    )
