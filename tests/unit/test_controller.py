"""Controller outcomes: each result is counted under controller-runtime's metric names,
errors are retried with back-off, terminal errors are not, and no name runs twice at once."""

from __future__ import annotations

import asyncio
import functools

from tests import waiting
from virtualservice_operator.runtime.controller import Controller
from virtualservice_operator.runtime.metrics import OperatorMetrics, exposition, parse_exposition
from virtualservice_operator.runtime.reconcile import Result, TerminalError
from virtualservice_operator.runtime.workqueue import WorkQueue


class ScriptedReconciler:
    def __init__(self, outcomes: dict[str, list[object]]) -> None:
        self.outcomes = outcomes
        self.calls: list[str] = []
        self.running: set[str] = set()
        self.overlap = False

    async def reconcile(self, key: str) -> Result:
        if key in self.running:
            self.overlap = True
        self.running.add(key)
        try:
            self.calls.append(key)
            await asyncio.sleep(0)
            outcome = (
                self.outcomes.get(key, [Result()]).pop(0) if self.outcomes.get(key) else Result()
            )
            if isinstance(outcome, BaseException):
                raise outcome
            assert isinstance(outcome, Result)
            return outcome
        finally:
            self.running.discard(key)


def metric(m: OperatorMetrics, name: str, **labels: str) -> float:
    parsed = parse_exposition(exposition(m.registry))
    return sum(
        v
        for (n, ls), v in parsed.items()
        if n == name and all((k, x) in ls for k, x in labels.items())
    )


# The controller's workers take longer than a plain state change to settle.
wait_until = functools.partial(waiting.until, within=5.0, poll=0.001)


async def test_outcomes_are_counted_and_errors_retried() -> None:
    m = OperatorMetrics()
    rec = ScriptedReconciler(
        {
            "ok": [Result()],
            "flaky": [RuntimeError("boom"), RuntimeError("boom"), Result()],
            "broken": [TerminalError("template")],
            "later": [Result(requeue_after=0.01), Result()],
        }
    )
    queue: WorkQueue[str] = WorkQueue("virtualservice", metrics=m.queue_metrics("virtualservice"))
    controller = Controller(rec, queue, m, workers=2)
    await controller.start()
    controller.enqueue_all(["ok", "flaky", "broken", "later"])
    await wait_until(
        lambda: rec.calls.count("flaky") == 3 and rec.calls.count("later") == 2 and not rec.running
    )
    await controller.stop()
    assert rec.calls.count("broken") == 1 and rec.calls.count("ok") == 1
    assert metric(m, "controller_runtime_reconcile_total", result="success") == 3
    assert metric(m, "controller_runtime_reconcile_total", result="error") == 3
    assert metric(m, "controller_runtime_reconcile_total", result="requeue_after") == 1
    assert metric(m, "controller_runtime_reconcile_errors_total") == 3
    assert metric(m, "controller_runtime_terminal_reconcile_errors_total") == 1
    assert metric(m, "controller_runtime_reconcile_panics_total") == 2  # RuntimeError is a bug
    assert metric(m, "workqueue_retries_total") == 2
    assert not rec.overlap


async def test_stop_finishes_the_reconcile_in_flight() -> None:
    m = OperatorMetrics()
    release = asyncio.Event()
    finished: list[str] = []

    class Slow:
        async def reconcile(self, key: str) -> Result:
            await release.wait()
            finished.append(key)
            return Result()

    queue: WorkQueue[str] = WorkQueue("virtualservice", metrics=m.queue_metrics("virtualservice"))
    controller = Controller(Slow(), queue, m)
    await controller.start()
    controller.enqueue("web")
    await wait_until(lambda: metric(m, "controller_runtime_active_workers") == 1)
    stopping = asyncio.create_task(controller.stop())
    await asyncio.sleep(0)
    release.set()
    await asyncio.wait_for(stopping, 5)
    assert finished == ["web"]
