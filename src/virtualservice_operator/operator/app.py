"""`virtualservice-operator run`: the operator's parts, wired and handed to the manager.

Start-up order (the manager's, see runtime/manager.py):
1. serve /healthz, /readyz, /metrics (and pprof);
2. read the config from its ConfigMap (missing or invalid: exit 1 with one clear line),
   then fill the caches for the namespaces it names: now /readyz says ready;
3. record Events; with -leader-elect, campaign for the Lease;
4. once leading (at once without -leader-elect): the workers, the resync (every known
   name, again every -sync-period: a restart is a full resync) and the orphan sweep.
A valid config change is swapped in, the caches follow it and everything is resynced.
A configured namespace that does not exist is reported once (`namespaces.py`); its
creation resyncs everything.

With -dry-run: everything is computed as above, nothing is written (no object, no Event,
no Lease: the dry-run process never campaigns, so it never keeps a real leader from
leading); each write it would make is logged and counted instead (`executor.py`).

Stop: SIGTERM/SIGINT stops intake, finishes the reconcile in flight, releases the Lease
and exits 0. Losing the Lease stops work at once and exits 1 (never two leaders).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from dataclasses import dataclass

import structlog

from virtualservice_operator.domain.config import OperatorConfig
from virtualservice_operator.domain.constants import (
    CONFIG_MAP_NAME,
    LEASE_NAME,
    OPERATOR_NAME,
    OPERATOR_NAMESPACE,
)
from virtualservice_operator.domain.instance import default_instance
from virtualservice_operator.kube.client import (
    WATCH_IDLE_TIMEOUT,
    WATCH_TIMEOUT,
    ClusterAccess,
    KubeClient,
)
from virtualservice_operator.operator.cache import ClusterCache
from virtualservice_operator.operator.configwatch import ConfigWatcher, StartupError
from virtualservice_operator.operator.executor import Executor
from virtualservice_operator.operator.namespaces import MissingNamespaces
from virtualservice_operator.operator.parts import CachePart, HttpServers, settle_heap
from virtualservice_operator.operator.reconciler import VirtualServiceReconciler
from virtualservice_operator.operator.resync import OrphanSweep, Resync
from virtualservice_operator.runtime.controller import CONTROLLER_NAME, Controller
from virtualservice_operator.runtime.defaults import (
    DEFAULT_WORKERS,
    HEALTH_PROBE_BIND_ADDRESS,
    LEASE_DURATION,
    METRICS_BIND_ADDRESS,
    RENEW_DEADLINE,
    RETRY_PERIOD,
    SYNC_PERIOD,
)
from virtualservice_operator.runtime.events import EventRecorder
from virtualservice_operator.runtime.leader import LeaderElectionConfig, LeaderElector
from virtualservice_operator.runtime.manager import Manager
from virtualservice_operator.runtime.metrics import OperatorMetrics
from virtualservice_operator.runtime.workqueue import WorkQueue

__all__ = ["Operator", "Options", "StartupError", "run"]

log = structlog.get_logger("manager")


@dataclass
class Options:
    kubeconfig: str | None = None
    context: str | None = None  # --context: replaces the kubeconfig's current-context
    config_map_name: str = CONFIG_MAP_NAME
    config_map_namespace: str = OPERATOR_NAMESPACE
    instance: str = ""  # "": derived from the ConfigMap's location (domain/instance.py)
    metrics_bind_address: str = METRICS_BIND_ADDRESS
    health_probe_bind_address: str = HEALTH_PROBE_BIND_ADDRESS
    profiling: bool = False  # -enable-profiling
    metrics_secure: bool = False  # -metrics-secure
    metrics_cert_path: str = ""  # -metrics-cert-path
    leader_elect: bool = False
    leader_election_namespace: str = ""
    leader_election_id: str = LEASE_NAME
    lease_duration: float = LEASE_DURATION
    renew_deadline: float = RENEW_DEADLINE
    retry_period: float = RETRY_PERIOD
    max_concurrent_reconciles: int = DEFAULT_WORKERS
    sync_period: float = SYNC_PERIOD
    watch_timeout: int = WATCH_TIMEOUT
    watch_idle_timeout: float = WATCH_IDLE_TIMEOUT
    dry_run: bool = False  # -dry-run: compute everything, write nothing


class Operator:
    """Every part, built and added to one manager (nothing starts until `run()`)."""

    def __init__(self, options: Options, client: KubeClient, metrics: OperatorMetrics) -> None:
        o = options
        self.client = client
        events = EventRecorder(client, component=OPERATOR_NAME, enabled=not o.dry_run)
        queue: WorkQueue[str] = WorkQueue(
            CONTROLLER_NAME, metrics=metrics.queue_metrics(CONTROLLER_NAME)
        )
        instance = o.instance or default_instance(o.config_map_namespace, o.config_map_name)
        self.cache = ClusterCache(
            client,
            self._on_name,
            instance=instance,
            on_namespace=self._on_namespace,
            watch_timeout=o.watch_timeout,
            idle_timeout=o.watch_idle_timeout,
        )
        self.config = ConfigWatcher(
            client,
            o.config_map_namespace,
            o.config_map_name,
            instance=instance,
            metrics=metrics,
            events=events,
            on_change=self._config_changed,
            watch_timeout=o.watch_timeout,
            idle_timeout=o.watch_idle_timeout,
        )
        elector = None
        if o.leader_elect and o.dry_run:
            log.info("dry run: not campaigning for the Lease (-leader-elect ignored)")
        elif o.leader_elect:
            elector = LeaderElector(
                client,
                LeaderElectionConfig(
                    namespace=o.leader_election_namespace or o.config_map_namespace,
                    name=o.leader_election_id,
                    lease_duration=o.lease_duration,
                    renew_deadline=o.renew_deadline,
                    retry_period=o.retry_period,
                ),
                metrics=metrics,
            )
            metrics.export_inventory_while(elector.leading.is_set)
        # With leader election, only while the Lease is held (cleared the moment it is lost).
        executor = Executor(
            client,
            self.cache,
            metrics,
            leading=elector.leading.is_set if elector is not None else lambda: True,
            dry_run=o.dry_run,
        )
        reconciler = VirtualServiceReconciler(self.cache, self.config.config, events, executor)
        metrics.host_conflicts.set_function(lambda: float(len(reconciler.host_conflicts)))
        self._controller = controller = Controller(
            reconciler, queue, metrics, workers=o.max_concurrent_reconciles
        )
        sweep = OrphanSweep(client, executor, self.config.config)
        self._resync = Resync(
            self.cache.all_names, controller.enqueue_all, sweep, period=o.sync_period
        )
        self._missing = MissingNamespaces(
            self.cache, lambda: self.config.current, events, self.config.ref, self._resync.request
        )
        metrics.missing_namespaces.set_function(lambda: float(len(self._missing.reported)))
        self.manager = Manager(elector=elector)
        for part in (
            HttpServers(
                health_address=o.health_probe_bind_address,
                metrics_address=o.metrics_bind_address,
                ready=self.ready,
                registry=metrics.registry,
                profiling=o.profiling,
                secure=o.metrics_secure,
                cert_path=o.metrics_cert_path or None,
                review_client=client,
            ),
            self.config,
            CachePart(self.cache, self.config.config, metrics, synced=self._missing.check),
            events,
            controller,
            sweep,
            self._resync,
            self._missing,
        ):
            self.manager.add(part)

    def _on_name(self, name: str) -> None:
        # A standby queues nothing: on winning the Lease, the resync queues every name.
        if self.manager.leading:
            self._controller.enqueue(name)

    def _on_namespace(self, name: str) -> None:
        # Called from the cache's first list too, before `_missing` exists.
        missing = getattr(self, "_missing", None)
        if missing is not None:
            missing.check()

    def ready(self) -> tuple[bool, str]:
        if self.config.current is None:
            return False, "config not loaded"
        if not self.cache.synced():
            return False, "caches not synced"
        return True, ""

    async def _config_changed(self, config: OperatorConfig) -> None:
        await self.cache.reconfigure(config)
        settle_heap()  # the new namespaces' lists, as after the first sync
        self._missing.check()
        self._resync.request()

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT (0) or the loss of the Lease (1)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.manager.request_stop)
        exit_code = 1
        try:
            exit_code = await self.manager.run()
        finally:
            await self.client.close()
            log.info("stopped", exit_code=exit_code)
        return exit_code


async def run(options: Options) -> int:
    """Build the operator for `options` and run it; StartupError if it cannot start."""
    metrics = OperatorMetrics()
    access = ClusterAccess.from_kubeconfig(options.kubeconfig, options.context)
    client = KubeClient.for_access(access, observe=metrics.rest_client_observer(access.host))
    return await Operator(options, client, metrics).run()
