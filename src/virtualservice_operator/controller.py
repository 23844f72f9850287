"""Workers that drain the queue into the reconciler, as controller-runtime's controller.

Concurrency design: `workers` tasks each take a name from the queue, reconcile it and
report the outcome. The queue guarantees a name is never reconciled by two workers at
once, and that the events arriving meanwhile collapse into one more pass afterwards.
Outcomes, each a `controller_runtime_reconcile_total{result}`:
- success: `forget` (reset the name's back-off);
- requeue_after: the name comes back after the delay;
- error: back-off per name (5 ms doubling to 1000 s), counted in errors_total;
- terminal error: logged and counted, not retried until the next event for the name.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

import structlog

from virtualservice_operator.constants import DEFAULT_WORKERS
from virtualservice_operator.kube import ApiError
from virtualservice_operator.metrics import OperatorMetrics
from virtualservice_operator.reconciler import Reconciler, RetryExhausted, TerminalError
from virtualservice_operator.tasks import cancel_and_wait
from virtualservice_operator.workqueue import ShutDown, WorkQueue

log = structlog.get_logger("controller")

CONTROLLER_NAME = "virtualservice"


class Controller:
    def __init__(
        self,
        reconciler: Reconciler,
        queue: WorkQueue[str],
        metrics: OperatorMetrics,
        *,
        workers: int = DEFAULT_WORKERS,
        accept: Callable[[str], bool] = lambda name: True,
        name: str = CONTROLLER_NAME,
    ) -> None:
        self._reconciler = reconciler
        self.queue = queue
        self._metrics = metrics
        self._workers = workers
        self._accept = accept
        self.name = name
        self._tasks: list[asyncio.Task[None]] = []
        metrics.init_controller(name, workers)

    @property
    def in_flight(self) -> int:
        """Names being reconciled now (taken from the queue, not yet done)."""
        return self.queue.num_processing

    def enqueue(self, name: str) -> None:
        if self._accept(name):
            self.queue.add(name)

    def enqueue_all(self, names: Iterable[str]) -> None:
        for name in sorted(names):
            self.enqueue(name)

    def start(self) -> None:
        for i in range(self._workers):
            self._tasks.append(asyncio.create_task(self._work(), name=f"worker {i}"))

    def abort(self) -> None:
        """Stop at once (leadership lost): take no more work and cancel the reconciles in
        flight instead of letting them finish, so that no further write is sent."""
        self.queue.shutdown()
        for task in self._tasks:
            task.cancel()

    async def stop(self, grace: float = 8.0) -> None:
        """Stop taking work; let the reconcile in flight finish (up to `grace` seconds)."""
        self.queue.shutdown()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=grace)
            for task in pending:
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
            self.queue.forget(name)
            if result.requeue_after is not None:
                m.reconcile_total.labels(self.name, "requeue_after").inc()
                self.queue.add_after(name, result.requeue_after)
            else:
                m.reconcile_total.labels(self.name, "success").inc()
        finally:
            m.reconcile_time.labels(self.name).observe(time.monotonic() - started)


def _expected(e: BaseException) -> bool:
    """An API error or exhausted retries: the world, not a bug (no panic counted)."""
    return isinstance(e, ApiError | RetryExhausted)
