"""Workers that drain the queue into the reconciler, as controller-runtime's controller.

Concurrency design: `workers` tasks each take a name from the queue, reconcile it and
report the outcome. The queue guarantees a name is never reconciled by two workers at
once, and that the events arriving meanwhile collapse into one more pass afterwards.
Outcomes, each a `controller_runtime_reconcile_total{result}`:
- success: `forget` (reset the name's back-off);
- requeue_after: the name comes back after the delay;
- requeue (a conflict): back-off per name (5 ms doubling to 1000 s), not an error;
- error: the same back-off, counted in errors_total;
- terminal error: logged and counted, not retried until the next event for the name.

The controller is a leader-only part of the manager: `start()` starts the workers,
`stop()` stops intake and lets the reconciles in flight finish; a stop that is itself
cancelled (the manager's grace period is over, or the Lease is lost) cancels them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

import structlog

from virtualservice_operator.kube.client import ApiError
from virtualservice_operator.runtime.defaults import DEFAULT_WORKERS
from virtualservice_operator.runtime.leader import NotLeading
from virtualservice_operator.runtime.metrics import OperatorMetrics
from virtualservice_operator.runtime.reconcile import Reconciler, TerminalError
from virtualservice_operator.runtime.tasks import cancel_and_wait
from virtualservice_operator.runtime.workqueue import ShutDown, WorkQueue

log = structlog.get_logger("controller")

CONTROLLER_NAME = "virtualservice"


class Controller:
    needs_leader = True

    def __init__(
        self,
        reconciler: Reconciler,
        queue: WorkQueue[str],
        metrics: OperatorMetrics,
        *,
        workers: int = DEFAULT_WORKERS,
        name: str = CONTROLLER_NAME,
    ) -> None:
        self._reconciler = reconciler
        self.queue = queue
        self._metrics = metrics
        self._workers = workers
        self.name = name
        self._tasks: list[asyncio.Task[None]] = []
        metrics.init_controller(name, workers)

    def enqueue(self, name: str) -> None:
        self.queue.add(name)

    def enqueue_all(self, names: Iterable[str]) -> None:
        for name in sorted(names):
            self.enqueue(name)

    async def start(self) -> None:
        log.info("starting workers", workers=self._workers)
        for i in range(self._workers):
            self._tasks.append(asyncio.create_task(self._work(), name=f"worker {i}"))

    async def stop(self) -> None:
        """Stop taking work; wait for the reconciles in flight (cancelled if this is)."""
        self.queue.shutdown()
        try:
            if self._tasks:
                await asyncio.wait(self._tasks)
        finally:
            for task in self._tasks:
                await cancel_and_wait(task)
            self._tasks = []

    async def _work(self) -> None:
        while True:
            try:
                name = await self.queue.get()
            except ShutDown:
                return
            self._metrics.active_workers.labels(self.name).inc()
            try:
                await self._process(name)
            finally:
                self._metrics.active_workers.labels(self.name).dec()
                self.queue.done(name)

    async def _process(self, name: str) -> None:
        m = self._metrics
        started = time.monotonic()
        try:
            result = await self._reconciler.reconcile(name)
        except asyncio.CancelledError:
            raise
        except NotLeading:
            return  # the Lease is lost: the process is ending, another replica takes over
        except TerminalError as e:
            m.reconcile_total.labels(self.name, "error").inc()
            m.reconcile_errors.labels(self.name).inc()
            m.terminal_reconcile_errors.labels(self.name).inc()
            self.queue.forget(name)
            log.error(
                "reconcile failed; not retried until something changes", service=name, error=str(e)
            )
        except Exception as e:
            m.reconcile_total.labels(self.name, "error").inc()
            m.reconcile_errors.labels(self.name).inc()
            if not _expected(e):
                m.reconcile_panics.labels(self.name).inc()
            self.queue.add_rate_limited(name)
            log.error(
                "reconcile failed; retrying with back-off",
                service=name,
                error=f"{type(e).__name__}: {e}",
                requeues=self.queue.num_requeues(name),
                exc_info=not _expected(e),
            )
        else:
            if result.requeue:
                m.reconcile_total.labels(self.name, "requeue").inc()
                self.queue.add_rate_limited(name)  # no forget: the back-off grows
                return
            self.queue.forget(name)
            if result.requeue_after is not None:
                m.reconcile_total.labels(self.name, "requeue_after").inc()
                self.queue.add_after(name, result.requeue_after)
            else:
                m.reconcile_total.labels(self.name, "success").inc()
        finally:
            m.reconcile_time.labels(self.name).observe(time.monotonic() - started)


def _expected(e: BaseException) -> bool:
    """An API error: the world, not a bug (no panic counted)."""
    return isinstance(e, ApiError)
