"""Waiting on a condition with a deadline, never sleeping as synchronisation."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def until(condition: Callable[[], object], within: float = 2.0, poll: float = 0.0) -> None:
    """Let the event loop turn (every `poll` seconds; 0: at once) until `condition()` is
    true; `TimeoutError` after `within` seconds."""
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 - a plain predicate, no event to wait on
            await asyncio.sleep(poll)
