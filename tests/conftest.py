"""Shared fixtures. Integration tests share one control plane per session (see
tests/integration/conftest.py); unit tests need nothing."""

from __future__ import annotations

import pytest

# Figures worth seeing at the end of every run, filled in by fixtures.
FIGURES: dict[str, str] = {}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for name, value in FIGURES.items():
        terminalreporter.write_line(f"{name}: {value}")
