"""The reconciler contract, as controller-runtime's `pkg/reconcile`.

`reconcile(key)` returns a `Result` (optionally asking to be called again after a delay,
or requeued with the queue's back-off), raises to be retried with back-off, or raises
`TerminalError` when retrying cannot help until something else changes. The controller
(`runtime.controller`) is written against this contract alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Result:
    requeue_after: float | None = None  # call again after this many seconds
    requeue: bool = False  # call again after the queue's per-name back-off


class TerminalError(Exception):
    """Retrying will not help until something else changes (the config, a template)."""


class Reconciler(Protocol):
    async def reconcile(self, key: str) -> Result: ...
