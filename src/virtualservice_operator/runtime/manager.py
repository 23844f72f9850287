"""Runs the operator's parts in order, after controller-runtime's `pkg/manager`.

Every part is a `Runnable`: `start()` returns once it runs (a cache: once it has
listed), `stop()` returns once it has stopped, and `needs_leader` says whether only the
Lease holder may run it. `add()` sorts a part into a group by what it is, and `run()`
starts the groups in a fixed order, each part after the one before:

1. servers (`Server`: health and metrics answer while the rest starts);
2. caches (`Cache`: started, then waited for until synced; a failure here, such as a
   missing config, ends the run before anything writes);
3. the other parts that do not need the Lease (the leader elector among them);
4. once the Lease is won (at once without leader election), the leader-only parts.

Stop (a signal, `request_stop()`): every started part in reverse order, all within one
grace period; a part still stopping when it ends is cancelled. Losing the Lease ends
the run with exit code 1: the leader-only parts are cancelled at once (no grace: the
reconcile in flight must not write once another replica may lead), then the rest stop.
The manager never learns what a part does; a new part is one `add()`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Protocol, runtime_checkable

import structlog

from virtualservice_operator.runtime.defaults import SHUTDOWN_GRACE

log = structlog.get_logger("manager")


class Runnable(Protocol):
    needs_leader: bool

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@runtime_checkable
class Cache(Runnable, Protocol):
    """A part that others read: the manager waits until it has synced."""

    async def wait_synced(self) -> None: ...


@runtime_checkable
class Server(Runnable, Protocol):
    """A part that serves HTTP: started first, stopped last."""

    @property
    def ports(self) -> dict[str, int]: ...


class Election(Runnable, Protocol):
    """What the manager needs of the leader elector (`leader.LeaderElector`)."""

    leading: asyncio.Event  # set once the Lease is won
    lost: asyncio.Event  # set once the Lease, having been won, is lost


class Manager:
    def __init__(self, *, elector: Election | None = None, grace: float = SHUTDOWN_GRACE) -> None:
        self._elector = elector
        self._grace = grace
        self._servers: list[Runnable] = []
        self._caches: list[Cache] = []
        self._others: list[Runnable] = []
        self._leader_only: list[Runnable] = []
        self._started: list[Runnable] = []
        self._stop = asyncio.Event()
        self.leading = False  # True from the start of the leader-only parts
        if elector is not None:
            self.add(elector)

    def add(self, part: Runnable) -> None:
        if part.needs_leader:
            self._leader_only.append(part)
        elif isinstance(part, Server):
            self._servers.append(part)
        elif isinstance(part, Cache):
            self._caches.append(part)
        else:
            self._others.append(part)

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> int:
        """Start every part, wait for a stop or the loss of the Lease, stop every part.

        The exit code: 0 after a requested stop, 1 once the Lease is lost. An error
        while starting (e.g. a missing config) is raised, after stopping what started."""
        exit_code = 0
        try:
            for part in (*self._servers, *self._caches, *self._others):
                await self._start(part)
            if await self._until_stopped_or(self._leading()):
                self.leading = True
                for part in self._leader_only:
                    await self._start(part)
                if await self._until_stopped_or(self._lost()):
                    log.error("lost leadership: stopping at once")
                    self.leading = False
                    exit_code = 1
                    await self._stop_parts(self._leader_only, grace=0.0)
        finally:
            await self._stop_parts(self._started, grace=self._grace)
        return exit_code

    async def _start(self, part: Runnable) -> None:
        self._started.append(part)
        await part.start()
        if isinstance(part, Cache):
            await part.wait_synced()

    async def _leading(self) -> None:
        if self._elector is not None:
            await self._elector.leading.wait()

    async def _lost(self) -> None:
        if self._elector is not None:
            await self._elector.lost.wait()
        else:
            await asyncio.Event().wait()  # without leader election, never

    async def _until_stopped_or(self, event: Coroutine[Any, Any, None]) -> bool:
        """Wait for `event` or a stop request; True if `event` came first."""
        happened = asyncio.ensure_future(event)
        stopped = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({happened, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            happened.cancel()
            stopped.cancel()
        return happened.done() and not happened.cancelled() and not self._stop.is_set()

    async def _stop_parts(self, parts: list[Runnable], *, grace: float) -> None:
        """Stop `parts` (those started) in reverse order, all within `grace` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        for part in reversed([p for p in self._started if p in parts]):
            self._started.remove(part)
            try:
                async with asyncio.timeout_at(max(deadline, loop.time())):
                    await part.stop()
            except TimeoutError:
                log.warning("stop grace period over: cancelled", part=type(part).__name__)
            except Exception as e:
                log.error("part failed to stop", part=type(part).__name__, error=str(e))
