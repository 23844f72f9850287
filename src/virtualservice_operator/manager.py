"""Wires the operator together and runs it until told to stop.

Start-up order (each step waits for the one before):
1. load the config from its ConfigMap: missing or invalid → exit 1 with one clear line;
2. serve /healthz, /readyz, /metrics (and pprof);
3. fill the caches (informers for the watched namespaces) — now /readyz says ready;
4. with -leader-elect, wait for the Lease; then start the workers, enqueue every known
   name (restart = full resync), and remove orphans left while we were away;
5. watch the ConfigMap: a valid change is swapped in and everything re-evaluated; an
   invalid one is refused with an error log and a Warning Event, the last good config
   stays, and nothing in the cluster changes.

Stop: SIGTERM/SIGINT stops intake, finishes the reconcile in flight, releases the Lease
and exits 0. Losing the Lease stops work at once and exits 1 (never two leaders).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from virtualservice_operator.cache import ClusterCache
from virtualservice_operator.config import (
    ConfigError,
    OperatorConfig,
    Problem,
    diff_configs,
    parse_config,
)
from virtualservice_operator.constants import (
    CONFIG_KEY,
    CONFIG_MAP_NAME,
    DEFAULT_WORKERS,
    IGNORED_SERVICES,
    LEASE_NAME,
    OPERATOR_NAMESPACE,
    PLACEHOLDER_LABEL,
    PLACEHOLDER_VALUE,
)
from virtualservice_operator.controller import CONTROLLER_NAME, Controller
from virtualservice_operator.desired import developer_route_names
from virtualservice_operator.events import EventRecorder, ObjectRef
from virtualservice_operator.httpserver import Servers, start_servers
from virtualservice_operator.informer import Informer, strip_managed_fields, version_of_json
from virtualservice_operator.kube import CONFIGMAPS, JSON, SERVICES, ApiError, KubeClient, NotFound
from virtualservice_operator.metrics import OperatorMetrics
from virtualservice_operator.model import ServiceInfo
from virtualservice_operator.reconciler import VirtualServiceReconciler
from virtualservice_operator.workqueue import WorkQueue

if TYPE_CHECKING:
    from virtualservice_operator.leader import LeaderElector

log = structlog.get_logger("manager")


class StartupError(Exception):
    """The operator cannot start; the message is the one line an operator needs."""


@dataclass
class Options:
    kubeconfig: str | None = None
    config_map_name: str = CONFIG_MAP_NAME
    config_map_namespace: str = OPERATOR_NAMESPACE
    metrics_bind_address: str = ":8080"
    health_probe_bind_address: str = ":8081"
    profiling: bool = False
    metrics_secure: bool = False
    metrics_cert_path: str = ""
    leader_elect: bool = False
    leader_election_namespace: str = ""
    leader_election_id: str = LEASE_NAME
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    max_concurrent_reconciles: int = DEFAULT_WORKERS
    sync_period: float = 10 * 3600.0
    watch_timeout: int = 300
    watch_idle_timeout: float = 120.0


class Manager:
    def __init__(
        self,
        options: Options,
        *,
        client: KubeClient | None = None,
        metrics: OperatorMetrics | None = None,
    ) -> None:
        self.options = options
        self.metrics = metrics or OperatorMetrics()
        self.client = client or KubeClient.from_kubeconfig(
            options.kubeconfig, observe=self._observe_request
        )
        self.events = EventRecorder(self.client)
        self.queue: WorkQueue[str] = WorkQueue(
            CONTROLLER_NAME, metrics=self.metrics.queue_metrics(CONTROLLER_NAME)
        )
        self.cache = ClusterCache(
            self.client,
            self._on_name,
            watch_timeout=options.watch_timeout,
            idle_timeout=options.watch_idle_timeout,
        )
        self.config: OperatorConfig | None = None
        self.reconciler = VirtualServiceReconciler(
            self.client, self.cache, self._current_config, self.events, observer=self
        )
        self.controller = Controller(
            self.reconciler,
            self.queue,
            self.metrics,
            workers=options.max_concurrent_reconciles,
            accept=lambda name: name not in IGNORED_SERVICES,
        )
        self.leading = False
        self.servers: Servers | None = None
        self._config_informer: Informer[JSON] | None = None
        self._config_lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._exit_code = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._elector: LeaderElector | None = None

    # -- observers ------------------------------------------------------------------------

    def _observe_request(self, method: str, code: int, seconds: float) -> None:
        host = getattr(self, "client", None)
        host_name = host.host if host is not None else ""
        self.metrics.rest_client_requests.labels(
            str(code) if code else "<error>", method, host_name
        ).inc()
        self.metrics.rest_client_request_duration.labels(method, host_name).observe(seconds)

    def write(self, verb: str, kind: str) -> None:
        self.metrics.writes.labels(verb, kind).inc()

    def conflict(self, kind: str) -> None:
        self.metrics.conflicts.labels(kind).inc()

    def _on_name(self, name: str) -> None:
        if self.leading:
            self.controller.enqueue(name)

    def _current_config(self) -> OperatorConfig:
        assert self.config is not None
        return self.config

    def ready(self) -> tuple[bool, str]:
        if self.config is None:
            return False, "config not loaded"
        if not self.cache.synced():
            return False, "caches not synced"
        return True, ""

    # -- running ------------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self.metrics.attach_event_loop(loop)
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)
        try:
            await self._start()
            await self._stop.wait()
        finally:
            await self._shutdown()
        return self._exit_code

    async def _start(self) -> None:
        o = self.options
        self.config = await self._load_initial_config()
        self.metrics.config_valid.set(1)
        self._register_gauges()
        self.servers = await start_servers(
            health_address=o.health_probe_bind_address,
            metrics_address=o.metrics_bind_address,
            ready=self.ready,
            registry=self.metrics.registry,
            profiling=o.profiling,
            secure=o.metrics_secure,
            cert_path=o.metrics_cert_path or None,
            review_client=self.client,
        )
        self.events.start()
        log.info(
            "config loaded",
            configmap=f"{o.config_map_namespace}/{o.config_map_name}",
            default_namespace=self.config.default_namespace,
            developer_namespaces=list(self.config.developer_namespaces),
            placeholders=self.config.enable_placeholder_services,
        )
        await self.cache.reconfigure(self.config)
        log.info("caches synced", informers=[i.description for i in self.cache.informers()])
        self._config_informer = Informer(
            self.client,
            CONFIGMAPS,
            o.config_map_namespace,
            transform=strip_managed_fields,
            version_of=version_of_json,
            handler=lambda old, new: self._spawn(self._config_changed(new), "config reload"),
            field_selector=f"metadata.name={o.config_map_name}",
            watch_timeout=o.watch_timeout,
            idle_timeout=o.watch_idle_timeout,
        )
        self._config_informer.start()
        if o.leader_elect:
            self._spawn(self._lead(), "leader election")
        else:
            await self._start_leading()

    async def _lead(self) -> None:
        from virtualservice_operator.leader import LeaderElectionConfig, LeaderElector

        o = self.options
        self._elector = LeaderElector(
            self.client,
            LeaderElectionConfig(
                namespace=o.leader_election_namespace or o.config_map_namespace,
                name=o.leader_election_id,
                lease_duration=o.lease_duration,
                renew_deadline=o.renew_deadline,
                retry_period=o.retry_period,
            ),
            metrics=self.metrics,
        )
        await self._elector.acquire()
        await self._start_leading()
        await self._elector.renew_loop()
        if not self._stop.is_set():
            log.error("lost leadership: stopping at once")
            self.leading = False
            self._exit_code = 1
            self.controller.abort()  # cancel the reconcile in flight: another may lead now
            self._stop.set()

    async def _start_leading(self) -> None:
        log.info("starting workers", workers=self.options.max_concurrent_reconciles)
        self.leading = True
        self.controller.start()
        await self._resync()
        self._spawn(self._periodic_resync(), "periodic resync")

    async def _resync(self) -> None:
        """Every known name once more (restart = full resync), then orphaned placeholders."""
        self.controller.enqueue_all(self.cache.all_names())
        await self._sweep_placeholders()

    async def _periodic_resync(self) -> None:
        while True:
            await asyncio.sleep(self.options.sync_period * (1 + 0.1 * random.random()))
            log.info("periodic resync")
            await self._resync()

    async def _sweep_placeholders(self) -> None:
        """Remove our placeholders from namespaces the config no longer lists."""
        config = self._current_config()
        # Placeholders in watched namespaces are in the cache and handled by name; ask the
        # API server for the others only.
        elsewhere = ",".join(f"metadata.namespace!={ns}" for ns in config.watched_namespaces)
        orphans: list[ServiceInfo] = []
        try:
            async for items, _ in self.client.list_pages(
                SERVICES,
                None,
                label_selector=f"{PLACEHOLDER_LABEL}={PLACEHOLDER_VALUE}",
                field_selector=elsewhere,
            ):
                orphans.extend(ServiceInfo.from_dict(obj) for obj in items)
        except ApiError as e:
            log.error("could not list placeholder Services for the orphan sweep", error=str(e))
            return
        deleted = 0
        for svc in orphans:
            if svc.namespace in config.watched_namespaces:
                continue
            if svc.is_placeholder:
                try:
                    await self.client.delete(
                        SERVICES,
                        svc.namespace,
                        svc.name,
                        uid=svc.uid,
                        resource_version=svc.resource_version,
                    )
                    self.write("delete", "Service")
                    deleted += 1
                    log.info(
                        "orphaned placeholder deleted", service=svc.name, namespace=svc.namespace
                    )
                except NotFound:
                    pass
                except ApiError as e:
                    log.warning(
                        "orphaned placeholder not deleted",
                        service=svc.name,
                        namespace=svc.namespace,
                        error=str(e),
                    )
        # Said once per resync (start-up, then every -sync-period): the end of the work a
        # resync does outside the queue.
        log.info("orphan sweep done", deleted=deleted, found=len(orphans))

    async def _shutdown(self) -> None:
        if self.leading or self.controller.in_flight:
            await self.controller.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._elector is not None and self._exit_code == 0:
            with contextlib.suppress(Exception):
                await self._elector.release()
        if self._config_informer is not None:
            await self._config_informer.stop()
        await self.cache.stop()
        await self.events.stop()
        if self.servers is not None:
            await self.servers.stop()
        await self.client.close()
        log.info("stopped", exit_code=self._exit_code)

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.append(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        if (error := task.exception()) is not None:
            log.error(
                "background task failed: stopping",
                task=task.get_name(),
                error=f"{type(error).__name__}: {error}",
            )
            self._exit_code = 1
            self._stop.set()

    # -- configuration ------------------------------------------------------------------

    async def _load_initial_config(self) -> OperatorConfig:
        o = self.options
        where = f"ConfigMap {o.config_map_namespace}/{o.config_map_name}"
        try:
            obj = await self.client.get(CONFIGMAPS, o.config_map_namespace, o.config_map_name)
        except NotFound as e:
            raise StartupError(
                f"{where} not found: create it (see deployments/config.yaml) "
                "and the operator will start"
            ) from e
        except ApiError as e:
            raise StartupError(f"cannot read {where}: {e}") from e
        text = (obj.get("data") or {}).get(CONFIG_KEY)
        if text is None:
            raise StartupError(
                f"{where} has no key {CONFIG_KEY!r}: "
                f"put the operator's config.yaml under data.{CONFIG_KEY}"
            )
        try:
            loaded = parse_config(text)
        except ConfigError as e:
            raise StartupError(
                f"invalid config in {where}: {'; '.join(str(p) for p in e.problems)}"
            ) from e
        for warning in loaded.warnings:
            log.warning(warning, configmap=where)
        return loaded.config

    async def _config_changed(self, obj: JSON | None) -> None:
        o = self.options
        where = f"{o.config_map_namespace}/{o.config_map_name}"
        async with self._config_lock:
            if obj is None:
                log.error("config map deleted: keeping the last good config", configmap=where)
                return
            ref = ObjectRef(
                "ConfigMap",
                o.config_map_namespace,
                o.config_map_name,
                uid=str(obj["metadata"].get("uid", "")),
            )
            text = (obj.get("data") or {}).get(CONFIG_KEY)
            try:
                if text is None:
                    raise ConfigError(
                        [
                            Problem(
                                CONFIG_KEY,
                                f"the ConfigMap has no key {CONFIG_KEY!r}",
                                f"put the config under data.{CONFIG_KEY}",
                            )
                        ]
                    )
                loaded = parse_config(text)
            except ConfigError as e:
                self.metrics.config_reloads.labels("error").inc()
                self.metrics.config_valid.set(0)
                log.error(
                    "config rejected: keeping the last good config, nothing changed",
                    configmap=where,
                    error=str(e),
                )
                self.events.warning(
                    ref, "InvalidConfig", f"config rejected, last good config kept: {e}"
                )
                return
            old = self._current_config()
            self.metrics.config_valid.set(1)
            if loaded.config == old:
                return
            for warning in loaded.warnings:
                log.warning(warning, configmap=where)
            changes = diff_configs(old, loaded.config)
            self.config = loaded.config
            await self.cache.reconfigure(loaded.config)
            self.metrics.config_reloads.labels("success").inc()
            log.info("config reloaded", configmap=where, changes=changes)
            self.events.normal(ref, "ConfigReloaded", "; ".join(changes) or "config reloaded")
            if self.leading:
                await self._resync()

    # -- gauges ---------------------------------------------------------------------------

    def _register_gauges(self) -> None:
        m = self.metrics
        m.managed_virtualservices.set_function(lambda: float(len(self.cache.managed_vs)))
        # These two walk the whole cache: at most once per 2 s, however often scraped.
        m.placeholder_services.set_function(
            _throttled(lambda: float(self.cache.placeholder_count()))
        )
        m.developer_routes.set_function(
            _throttled(
                lambda: float(
                    sum(len(developer_route_names(vs)) for vs in self.cache.managed_vs.values())
                )
            )
        )


def _throttled(compute: Callable[[], float], ttl: float = 2.0) -> Callable[[], float]:
    """`compute`, remembered for `ttl` seconds."""
    last = [float("-inf"), 0.0]

    def value() -> float:
        now = time.monotonic()
        if now - last[0] >= ttl:
            last[0], last[1] = now, compute()
        return last[1]

    return value
