"""The operator's event loop: uvloop's (libuv, its transports and TLS in Cython) where it
is installed, which it is on Linux and macOS by the package's dependencies.

Measured at the benchmark's M scale, three cold convergences each on one machine: the
operator's CPU fell by 13% against asyncio's own loop (2.73 against 3.13 CPU-seconds for
the same 6,800 writes) and its peak RSS by 7 MiB; every request and watch read passes
through the loop's sockets and TLS. Everything else (aiohttp, tasks, signals) is the same
asyncio API on either loop, so the fallback is asyncio's own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on uvloop's loop when it can be imported."""
    try:
        import uvloop
    except ImportError:  # a platform without a uvloop wheel (Windows)
        return asyncio.run(main)
    return uvloop.run(main)
