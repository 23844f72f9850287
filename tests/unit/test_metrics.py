"""Operator metrics: names and labels as controller-runtime, values that really move."""

from __future__ import annotations

import asyncio

import pytest

from virtualservice_operator.runtime.clock import FakeClock
from virtualservice_operator.runtime.metrics import (
    RECONCILE_RESULTS,
    OperatorMetrics,
    exposition,
    parse_exposition,
)
from virtualservice_operator.runtime.ratelimit import ItemExponentialFailureRateLimiter
from virtualservice_operator.runtime.workqueue import QueueMetricsRecorder, WorkQueue

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(metrics: OperatorMetrics) -> Samples:
    return parse_exposition(exposition(metrics.registry))


def value(samples: Samples, metric: str, /, **labels: str) -> float:
    return samples[(metric, frozenset(labels.items()))]


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


def test_process_and_python_runtime_metrics_are_real() -> None:
    samples = scrape(OperatorMetrics())
    assert value(samples, "process_resident_memory_bytes") > 1_000_000
    assert value(samples, "process_cpu_seconds_total") > 0
    assert value(samples, "python_threads") >= 1
    assert "python_info" in names(samples)
    assert "python_gc_collections_total" in names(samples)
    # No Go runtime here, so no go_* series pretending otherwise.
    assert not any(name.startswith("go_") for name in names(samples))
    # No event loop attached yet: nothing to count.
    assert "python_asyncio_tasks" not in names(samples)


def test_controller_series_start_at_zero() -> None:
    metrics = OperatorMetrics()
    metrics.init_controller("virtualservice", max_concurrent_reconciles=2)
    samples = scrape(metrics)
    for result in RECONCILE_RESULTS:
        assert (
            value(
                samples,
                "controller_runtime_reconcile_total",
                controller="virtualservice",
                result=result,
            )
            == 0
        )
    for name in (
        "controller_runtime_reconcile_errors_total",
        "controller_runtime_terminal_reconcile_errors_total",
        "controller_runtime_reconcile_panics_total",
        "controller_runtime_active_workers",
    ):
        assert value(samples, name, controller="virtualservice") == 0, name
    assert (
        value(samples, "controller_runtime_max_concurrent_reconciles", controller="virtualservice")
        == 2
    )
    for result in ("success", "error"):
        assert value(samples, "virtualservice_operator_config_reloads_total", result=result) == 0


def test_reconcile_time_uses_controller_runtime_buckets() -> None:
    metrics = OperatorMetrics()
    metrics.reconcile_time.labels(controller="vs").observe(0.3)
    samples = scrape(metrics)
    bucket = "controller_runtime_reconcile_time_seconds_bucket"
    assert value(samples, bucket, controller="vs", le="0.25") == 0
    assert value(samples, bucket, controller="vs", le="0.3") == 1
    assert value(samples, bucket, controller="vs", le="60.0") == 1
    assert value(samples, "controller_runtime_reconcile_time_seconds_count", controller="vs") == 1


def test_registries_are_independent() -> None:
    first, second = OperatorMetrics(), OperatorMetrics()
    first.writes.labels(verb="create", kind="VirtualService").inc()
    first.conflicts.labels(kind="VirtualService").inc(2)
    first.leader_election_master_status.labels(name="lease").set(1)
    first.config_valid.set(1)
    first.managed_virtualservices.set(7)
    first.rest_client_requests.labels(code="200", method="GET", host="api:6443").inc()
    first.rest_client_request_duration.labels(verb="GET", host="api:6443").observe(0.01)
    one, two = scrape(first), scrape(second)
    assert value(one, "virtualservice_operator_writes_total", verb="create", kind="VirtualService")
    assert value(one, "virtualservice_operator_conflicts_total", kind="VirtualService") == 2
    assert value(one, "leader_election_master_status", name="lease") == 1
    assert value(one, "virtualservice_operator_config_valid") == 1
    assert value(one, "virtualservice_operator_managed_virtualservices") == 7
    assert value(one, "rest_client_requests_total", code="200", method="GET", host="api:6443")
    assert value(one, "rest_client_request_duration_seconds_count", verb="GET", host="api:6443")
    assert value(two, "virtualservice_operator_managed_virtualservices") == 0
    assert "virtualservice_operator_writes_total" not in names(two)


def test_request_observer_counts_each_code_and_verb_apart() -> None:
    # The observer keeps each label set's child: a code or verb must not reuse another's.
    metrics = OperatorMetrics()
    observe = metrics.rest_client_observer("api:6443")
    for method, code in [("POST", 201), ("POST", 201), ("POST", 409), ("GET", 200), ("GET", 0)]:
        observe(method, code, 0.01)
    got = scrape(metrics)
    for code, method, count in [("201", "POST", 2), ("409", "POST", 1), ("200", "GET", 1)]:
        assert (
            value(got, "rest_client_requests_total", code=code, method=method, host="api:6443")
            == count
        )
    assert (
        value(got, "rest_client_requests_total", code="<error>", method="GET", host="api:6443") == 1
    )
    assert (
        value(got, "rest_client_request_duration_seconds_count", verb="POST", host="api:6443") == 3
    )
    assert (
        value(got, "rest_client_request_duration_seconds_count", verb="GET", host="api:6443") == 2
    )


async def test_workqueue_metrics_follow_the_queue() -> None:
    clock = FakeClock()
    metrics = OperatorMetrics()
    recorder: QueueMetricsRecorder = metrics.queue_metrics("virtualservice", clock)
    queue: WorkQueue[str] = WorkQueue(
        "virtualservice",
        clock=clock,
        rate_limiter=ItemExponentialFailureRateLimiter(1.0, 8.0),
        metrics=recorder,
    )
    labels = {"name": "virtualservice", "controller": "virtualservice"}

    samples = scrape(metrics)
    assert value(samples, "workqueue_depth", **labels) == 0
    assert value(samples, "workqueue_longest_running_processor_seconds", **labels) == 0

    for i in range(1000):
        queue.add(f"key-{i % 10}")
    samples = scrape(metrics)
    assert value(samples, "workqueue_depth", **labels) == 10
    assert value(samples, "workqueue_adds_total", **labels) == 10  # after de-duplication

    clock.advance(2)
    first = await asyncio.wait_for(queue.get(), 1)
    clock.advance(3)
    second = await asyncio.wait_for(queue.get(), 1)
    clock.advance(1)
    samples = scrape(metrics)
    assert value(samples, "workqueue_depth", **labels) == 8
    assert value(samples, "workqueue_queue_duration_seconds_count", **labels) == 2
    assert value(samples, "workqueue_queue_duration_seconds_sum", **labels) == 2 + 5
    assert value(samples, "workqueue_longest_running_processor_seconds", **labels) == 4
    assert value(samples, "workqueue_unfinished_work_seconds", **labels) == 4 + 1

    queue.done(first)
    queue.done(second)
    queue.add_rate_limited(first)
    samples = scrape(metrics)
    assert value(samples, "workqueue_work_duration_seconds_count", **labels) == 2
    assert value(samples, "workqueue_work_duration_seconds_sum", **labels) == 4 + 1
    assert value(samples, "workqueue_unfinished_work_seconds", **labels) == 0
    assert value(samples, "workqueue_longest_running_processor_seconds", **labels) == 0
    assert value(samples, "workqueue_retries_total", **labels) == 1
    assert value(samples, "workqueue_work_duration_seconds_bucket", le="1e-08", **labels) == 0
    queue.shutdown()


def test_a_queue_name_gets_metrics_once() -> None:
    metrics = OperatorMetrics()
    metrics.queue_metrics("vs")
    with pytest.raises(ValueError):
        metrics.queue_metrics("vs")


async def test_asyncio_tasks_are_counted_by_a_scrape_on_the_loop() -> None:
    metrics = OperatorMetrics()
    baseline = value(scrape(metrics), "python_asyncio_tasks")
    assert baseline >= 1  # at least this test's own task
    stop = asyncio.Event()
    tasks = [asyncio.create_task(stop.wait()) for _ in range(5)]
    await asyncio.sleep(0)
    # The metrics server runs on the operator's loop: that loop's tasks are counted.
    samples = scrape(metrics)
    assert value(samples, "python_asyncio_tasks") >= baseline + 5
    assert value(samples, "python_threads") >= 1
    stop.set()
    await asyncio.gather(*tasks)


def test_a_scrape_without_a_running_loop_counts_no_tasks() -> None:
    assert "python_asyncio_tasks" not in names(scrape(OperatorMetrics()))


def test_parse_exposition_accepts_text_and_bytes() -> None:
    text = '# TYPE x_total counter\nx_total{a="1"} 3.0\n'
    expected = {("x_total", frozenset({("a", "1")})): 3.0}
    assert parse_exposition(text) == expected
    assert parse_exposition(text.encode()) == expected


def test_inventory_gauges_are_exported_while_leading_only() -> None:
    metrics = OperatorMetrics()
    leading = [False]
    metrics.export_inventory_while(lambda: leading[0])
    metrics.managed_virtualservices.set_function(lambda: 3.0)
    metrics.placeholder_services.set(2)
    inventory = {
        "virtualservice_operator_managed_virtualservices",
        "virtualservice_operator_developer_routes",
        "virtualservice_operator_placeholder_services",
    }
    assert not inventory & names(scrape(metrics))  # a standby: not even a 0
    leading[0] = True
    samples = scrape(metrics)
    assert inventory <= names(samples)
    assert value(samples, "virtualservice_operator_managed_virtualservices") == 3
    assert value(samples, "virtualservice_operator_placeholder_services") == 2
