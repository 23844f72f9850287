"""Every Prometheus metric of the operator, on one registry built per `OperatorMetrics`.

Names and labels follow controller-runtime (and client-go's workqueue/rest_client) so
that existing dashboards and alerts work unchanged. A dedicated `CollectorRegistry`
(not prometheus_client's global one) lets tests build as many as they like.

Go runtime metrics: `go_goroutines` and the other `go_*` series describe Go's runtime,
which this process does not have; faking them would mislead whoever reads a dashboard.
The honest Python equivalents are `python_asyncio_tasks` (live tasks on the operator's
event loop: the unit of concurrency here, as goroutines are in Go) and
`python_threads` (threads alive).

Concurrency: the metrics server is an aiohttp app on the operator's own event loop, so
a scrape never runs beside the code that changes the values and needs no lock. Values
that depend on changing state (queue depth, in-flight work, asyncio tasks) are computed
at scrape time by custom collectors, rather than refreshed by a periodic task that
could lag or die. Each part counts its own work: the client its requests (through
`rest_client_observer`), the executor its writes and conflicts, the queue its adds.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Hashable, Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from virtualservice_operator.runtime.clock import Clock, RealClock

__all__ = [
    "RECONCILE_RESULTS",
    "LeaderGauge",
    "OperatorMetrics",
    "QueueMetrics",
    "exposition",
    "parse_exposition",
]

RECONCILE_RESULTS = ("success", "error", "requeue", "requeue_after")

# controller-runtime's buckets for controller_runtime_reconcile_time_seconds.
RECONCILE_TIME_BUCKETS = (
    *(0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5),
    *(0.6, 0.7, 0.8, 0.9, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5),
    *(5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0, 60.0),
)
# client-go workqueue: ExponentialBuckets(10e-9, 10, 12), i.e. 10 ns .. 1000 s.
WORKQUEUE_BUCKETS = tuple(1e-8 * 10**i for i in range(12))
# client-go rest_client_request_duration_seconds.
REST_CLIENT_BUCKETS = (0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)

_QUEUE_LABELS = ("name", "controller")


class QueueMetrics:
    """workqueue_* metrics of one queue; implements `workqueue.QueueMetricsRecorder`.

    Keeps, like client-go, when each waiting key was added and when each in-flight key
    was handed out; the scrape-time gauges are derived from those two maps.
    """

    def __init__(self, owner: OperatorMetrics, name: str, clock: Clock) -> None:
        self.name = name
        self._clock = clock
        labels = {"name": name, "controller": name}
        self._adds = owner.workqueue_adds.labels(**labels)
        self._retries = owner.workqueue_retries.labels(**labels)
        self._queue_duration = owner.workqueue_queue_duration.labels(**labels)
        self._work_duration = owner.workqueue_work_duration.labels(**labels)
        self._added_at: dict[Hashable, float] = {}
        self._started_at: dict[Hashable, float] = {}

    def add(self, key: Hashable) -> None:
        self._adds.inc()
        self._added_at.setdefault(key, self._clock.now())

    def get(self, key: Hashable) -> None:
        now = self._clock.now()
        added = self._added_at.pop(key, None)
        self._started_at[key] = now
        if added is not None:
            self._queue_duration.observe(now - added)

    def done(self, key: Hashable) -> None:
        now = self._clock.now()
        started = self._started_at.pop(key, None)
        if started is not None:
            self._work_duration.observe(now - started)

    def retry(self, key: Hashable) -> None:
        self._retries.inc()

    def snapshot(self) -> tuple[int, float, float]:
        """(depth, unfinished work seconds, longest running processor seconds)."""
        now = self._clock.now()
        running = [now - started for started in self._started_at.values()]
        return len(self._added_at), sum(running), max(running, default=0.0)


class _QueueGaugesCollector(Collector):
    """workqueue_depth / _unfinished_work_seconds / _longest_running_processor_seconds."""

    def __init__(self) -> None:
        self.queues: dict[str, QueueMetrics] = {}

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        depth, unfinished, longest = families = self._families()
        for queue in list(self.queues.values()):
            labels = [queue.name, queue.name]
            queue_depth, queue_unfinished, queue_longest = queue.snapshot()
            depth.add_metric(labels, queue_depth)
            unfinished.add_metric(labels, queue_unfinished)
            longest.add_metric(labels, queue_longest)
        return families

    @staticmethod
    def _families() -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily(
                "workqueue_depth", "Current depth of workqueue", labels=_QUEUE_LABELS
            ),
            GaugeMetricFamily(
                "workqueue_unfinished_work_seconds",
                "How many seconds of work has been done that is in progress and hasn't "
                "been observed by work_duration. Large values indicate stuck workers.",
                labels=_QUEUE_LABELS,
            ),
            GaugeMetricFamily(
                "workqueue_longest_running_processor_seconds",
                "How many seconds has the longest running processor for workqueue been running.",
                labels=_QUEUE_LABELS,
            ),
        ]


class _RuntimeCollector(Collector):
    """python_asyncio_tasks and python_threads: the stand-ins for go_goroutines."""

    def describe(self) -> Iterable[Metric]:
        return [self._tasks_family(), self._threads_family()]

    def collect(self) -> Iterable[Metric]:
        threads = self._threads_family()
        threads.add_metric([], threading.active_count())
        metrics: list[Metric] = [threads]
        try:
            count = len(asyncio.all_tasks())  # scrapes run on the operator's loop
        except RuntimeError:  # no running loop (a scrape from outside the operator)
            return metrics
        tasks = self._tasks_family()
        tasks.add_metric([], count)
        metrics.append(tasks)
        return metrics

    @staticmethod
    def _tasks_family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "python_asyncio_tasks",
            "Unfinished asyncio tasks on the operator's event loop (in place of "
            "go_goroutines, which a Python process does not have).",
        )

    @staticmethod
    def _threads_family() -> GaugeMetricFamily:
        return GaugeMetricFamily("python_threads", "Python threads alive.")


class LeaderGauge:
    """A gauge without labels whose value is read at scrape time (`set_function`)."""

    def __init__(self, name: str, documentation: str) -> None:
        self.name = name
        self.documentation = documentation
        self._value: Callable[[], float] = lambda: 0.0

    def set(self, value: float) -> None:
        self._value = lambda: value

    def set_function(self, function: Callable[[], float]) -> None:
        self._value = function

    def family(self) -> GaugeMetricFamily:
        family = GaugeMetricFamily(self.name, self.documentation)
        family.add_metric([], self._value())
        return family


class _LeaderOnlyCollector(Collector):
    """Gauges exported only while `leading()`: summed over replicas, a standby's copy
    would count every object twice (sum) or hide nothing (max) on a dashboard."""

    def __init__(self) -> None:
        self.leading: Callable[[], bool] = lambda: True
        self._gauges: list[LeaderGauge] = []

    def gauge(self, name: str, documentation: str) -> LeaderGauge:
        gauge = LeaderGauge(name, documentation)
        self._gauges.append(gauge)
        return gauge

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(g.name, g.documentation) for g in self._gauges]

    def collect(self) -> Iterable[Metric]:
        return [g.family() for g in self._gauges] if self.leading() else []


class OperatorMetrics:
    """All metric objects of the operator, registered on `self.registry`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        # Not prometheus_client's GC_COLLECTOR: that one lives on the global registry.
        GCCollector(registry=r)
        self._runtime = _RuntimeCollector()
        r.register(self._runtime)
        self._queue_gauges = _QueueGaugesCollector()
        r.register(self._queue_gauges)

        # controller-runtime: pkg/internal/controller/metrics
        self.reconcile_total = Counter(
            "controller_runtime_reconcile_total",
            "Total number of reconciliations per controller",
            ["controller", "result"],
            registry=r,
        )
        self.reconcile_errors = Counter(
            "controller_runtime_reconcile_errors_total",
            "Total number of reconciliation errors per controller",
            ["controller"],
            registry=r,
        )
        self.terminal_reconcile_errors = Counter(
            "controller_runtime_terminal_reconcile_errors_total",
            "Total number of terminal reconciliation errors per controller",
            ["controller"],
            registry=r,
        )
        self.reconcile_panics = Counter(
            "controller_runtime_reconcile_panics_total",
            "Total number of reconciliation panics (unexpected exceptions) per controller",
            ["controller"],
            registry=r,
        )
        self.reconcile_time = Histogram(
            "controller_runtime_reconcile_time_seconds",
            "Length of time per reconciliation per controller",
            ["controller"],
            buckets=RECONCILE_TIME_BUCKETS,
            registry=r,
        )
        self.max_concurrent_reconciles = Gauge(
            "controller_runtime_max_concurrent_reconciles",
            "Maximum number of concurrent reconciles per controller",
            ["controller"],
            registry=r,
        )
        self.active_workers = Gauge(
            "controller_runtime_active_workers",
            "Number of currently used workers per controller",
            ["controller"],
            registry=r,
        )

        # client-go workqueue (the gauges come from _QueueGaugesCollector)
        self.workqueue_adds = Counter(
            "workqueue_adds_total",
            "Total number of adds handled by workqueue",
            _QUEUE_LABELS,
            registry=r,
        )
        self.workqueue_retries = Counter(
            "workqueue_retries_total",
            "Total number of retries handled by workqueue",
            _QUEUE_LABELS,
            registry=r,
        )
        self.workqueue_queue_duration = Histogram(
            "workqueue_queue_duration_seconds",
            "How long in seconds an item stays in workqueue before being requested",
            _QUEUE_LABELS,
            buckets=WORKQUEUE_BUCKETS,
            registry=r,
        )
        self.workqueue_work_duration = Histogram(
            "workqueue_work_duration_seconds",
            "How long in seconds processing an item from workqueue takes",
            _QUEUE_LABELS,
            buckets=WORKQUEUE_BUCKETS,
            registry=r,
        )

        # client-go rest client: requests this operator makes to the API server
        self.rest_client_requests = Counter(
            "rest_client_requests_total",
            "Number of HTTP requests, partitioned by status code, method, and host",
            ["code", "method", "host"],
            registry=r,
        )
        self.rest_client_request_duration = Histogram(
            "rest_client_request_duration_seconds",
            "Request latency in seconds, broken down by verb and host",
            ["verb", "host"],
            buckets=REST_CLIENT_BUCKETS,
            registry=r,
        )

        self.leader_election_master_status = Gauge(
            "leader_election_master_status",
            "Gauge of if the reporting system is master of the relevant lease, "
            "0 indicates backup, 1 indicates master. 'name' is the string used to "
            "identify the lease.",
            ["name"],
            registry=r,
        )

        # the operator's own. The inventory gauges describe what the leader enforces; a
        # standby's cache holds the same objects, so only the leader exports them.
        self._leader_only = _LeaderOnlyCollector()
        self.managed_virtualservices = self._leader_only.gauge(
            "virtualservice_operator_managed_virtualservices",
            "VirtualServices carrying the managed-by label, as last seen in the cache "
            "(exported by the leader only)",
        )
        self.developer_routes = self._leader_only.gauge(
            "virtualservice_operator_developer_routes",
            "Developer header routes across all managed VirtualServices (exported by the "
            "leader only)",
        )
        self.placeholder_services = self._leader_only.gauge(
            "virtualservice_operator_placeholder_services",
            "Placeholder Services the operator maintains (exported by the leader only)",
        )
        self.missing_namespaces = self._leader_only.gauge(
            "virtualservice_operator_missing_namespaces",
            "Configured namespaces that do not exist or are being deleted: nothing is written "
            "there until they exist (exported by the leader only)",
        )
        r.register(self._leader_only)
        self.config_reloads = Counter(
            "virtualservice_operator_config_reloads_total",
            "Configuration reloads by result (success or error)",
            ["result"],
            registry=r,
        )
        self.config_valid = Gauge(
            "virtualservice_operator_config_valid",
            "1 if the last configuration read was valid, else 0",
            registry=r,
        )
        self.writes = Counter(
            "virtualservice_operator_writes_total",
            "Write requests sent to the API server, by verb and kind",
            ["verb", "kind"],
            registry=r,
        )
        self.forbidden = Counter(
            "virtualservice_operator_forbidden_writes_total",
            "Writes the operator's RBAC does not allow (403), by verb, kind and namespace",
            ["verb", "kind", "namespace"],
            registry=r,
        )
        self.conflicts = Counter(
            "virtualservice_operator_conflicts_total",
            "409 Conflict answers from the API server, by kind",
            ["kind"],
            registry=r,
        )
        self.dry_run_writes = Counter(
            "virtualservice_operator_dry_run_writes_total",
            "Writes a -dry-run=true operator would have sent (and did not), by verb and kind",
            ["verb", "kind"],
            registry=r,
        )
        self.host_conflicts = Gauge(
            "virtualservice_operator_host_conflicts",
            "Service names whose VirtualService is held back (not created or updated) because "
            "a VirtualService that is not this instance's routes the same host for the mesh",
            registry=r,
        )

        # Series that must exist from the start so that rate() and alerts see a 0.
        for result in ("success", "error"):
            self.config_reloads.labels(result=result)

    def init_controller(self, controller: str, max_concurrent_reconciles: int = 1) -> None:
        """Create the controller's series at zero, as controller-runtime does on start,
        so that an error rate is 0 (not absent) before the first error."""
        for result in RECONCILE_RESULTS:
            self.reconcile_total.labels(controller=controller, result=result)
        self.reconcile_errors.labels(controller=controller)
        self.terminal_reconcile_errors.labels(controller=controller)
        self.reconcile_panics.labels(controller=controller)
        self.max_concurrent_reconciles.labels(controller=controller).set(max_concurrent_reconciles)
        self.active_workers.labels(controller=controller).set(0)

    def export_inventory_while(self, leading: Callable[[], bool]) -> None:
        """Export the inventory gauges only while `leading()` (with leader election);
        without it the one replica always exports them."""
        self._leader_only.leading = leading

    def queue_metrics(self, name: str, clock: Clock | None = None) -> QueueMetrics:
        """Metrics for the work queue called `name` (controller-runtime: the
        controller's name). Pass the same clock as the queue's."""
        if name in self._queue_gauges.queues:
            raise ValueError(f"a work queue named {name!r} already has metrics")
        queue = QueueMetrics(self, name, clock or RealClock())
        self._queue_gauges.queues[name] = queue
        return queue

    def rest_client_observer(self, host: str) -> Callable[[str, int, float], None]:
        """A `kube.RequestObserver` counting a client's requests to `host`."""

        # Each label set's child kept: `labels()` costs more than the count itself, on
        # every request.
        @functools.cache
        def requests(method: str, code: int) -> Counter:
            return self.rest_client_requests.labels(str(code) if code else "<error>", method, host)

        @functools.cache
        def duration(method: str) -> Histogram:
            return self.rest_client_request_duration.labels(method, host)

        def observe(method: str, code: int, seconds: float) -> None:
            requests(method, code).inc()
            duration(method).observe(seconds)

        return observe


def exposition(registry: CollectorRegistry) -> bytes:
    """The registry in Prometheus text format, as served on /metrics."""
    return generate_latest(registry)


def parse_exposition(
    text: str | bytes,
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """{(sample name, labels): value} from a text exposition (for tests and checks)."""
    if isinstance(text, bytes):
        text = text.decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
