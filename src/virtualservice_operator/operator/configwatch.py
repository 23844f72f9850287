"""The operator's config, read from its ConfigMap at start and watched afterwards.

A part of the manager (a cache: the manager waits for it before the others start).
`start()` reads the ConfigMap once: missing or invalid, it raises `StartupError` with
the one line an operator needs, and nothing else starts. Then an informer watches that
one ConfigMap: a valid change is swapped in and handed to `on_change` (which
re-evaluates everything); an invalid one, or one whose VirtualService the cluster refuses
in a dry run (Istio's validating webhook included), is refused with an error log and a
Warning Event, the last good config stays, and nothing in the cluster changes. Reloads run one
at a time, in the informer's order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from virtualservice_operator.domain.config import (
    ConfigError,
    LoadedConfig,
    OperatorConfig,
    config_from_configmap,
    diff_configs,
)
from virtualservice_operator.kube.client import (
    CONFIGMAPS,
    JSON,
    WATCH_IDLE_TIMEOUT,
    WATCH_TIMEOUT,
    ApiError,
    KubeClient,
    NotFound,
)
from virtualservice_operator.operator.dryrun import refusal
from virtualservice_operator.runtime.events import EventRecorder, ObjectRef
from virtualservice_operator.runtime.informer import Informer, strip_managed_fields, version_of_json
from virtualservice_operator.runtime.metrics import OperatorMetrics
from virtualservice_operator.runtime.tasks import cancel_and_wait

log = structlog.get_logger("manager")


class StartupError(Exception):
    """The operator cannot start; the message is the one line an operator needs."""


class ConfigWatcher:
    needs_leader = False

    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        name: str,
        *,
        instance: str,
        metrics: OperatorMetrics,
        events: EventRecorder,
        on_change: Callable[[OperatorConfig], Awaitable[None]],
        watch_timeout: int = WATCH_TIMEOUT,
        idle_timeout: float = WATCH_IDLE_TIMEOUT,
    ) -> None:
        self._client = client
        self._namespace = namespace
        self._name = name
        self._instance = instance
        self._metrics = metrics
        self._events = events
        self._on_change = on_change
        self._where = f"ConfigMap {namespace}/{name}"
        self.current: OperatorConfig | None = None
        self._reloads: asyncio.Queue[JSON | None] = asyncio.Queue()
        self._reloader: asyncio.Task[None] | None = None
        self._informer: Informer[JSON] = Informer(
            client,
            CONFIGMAPS,
            namespace,
            transform=strip_managed_fields,
            version_of=version_of_json,
            handler=lambda old, new: self._reloads.put_nowait(new),
            field_selector=f"metadata.name={name}",
            watch_timeout=watch_timeout,
            idle_timeout=idle_timeout,
        )

    def ref(self) -> ObjectRef:
        """The ConfigMap, for Events about the configuration."""
        obj = self._informer.get(f"{self._namespace}/{self._name}") or {}
        uid = str((obj.get("metadata") or {}).get("uid") or "")
        return ObjectRef("ConfigMap", self._namespace, self._name, uid=uid)

    def config(self) -> OperatorConfig:
        """The config in force (only called once `start()` has returned)."""
        assert self.current is not None, "config read before start()"
        return self.current

    async def start(self) -> None:
        loaded = await self._read()
        self.current = loaded.config
        self._metrics.config_valid.set(1)
        for warning in loaded.warnings:
            log.warning(warning, configmap=self._where)
        log.info(
            "config loaded",
            configmap=f"{self._namespace}/{self._name}",
            default_namespace=loaded.config.default_namespace,
            developer_namespaces=list(loaded.config.developer_namespaces),
            placeholders=loaded.config.enable_placeholder_services,
            instance=self._instance,
        )
        self._reloader = asyncio.create_task(self._reload_loop(), name="config reload")
        self._informer.start()

    async def wait_synced(self) -> None:
        await self._informer.synced.wait()

    async def stop(self) -> None:
        await self._informer.stop()
        await cancel_and_wait(self._reloader)

    def _parse(self, obj: JSON | None) -> LoadedConfig:
        """The config in `obj`, driving this instance. Raises ConfigError."""
        loaded = config_from_configmap(obj, self._where)
        return LoadedConfig(loaded.config.with_instance(self._instance), loaded.warnings)

    async def _read(self) -> LoadedConfig:
        obj: JSON | None
        try:
            obj = await self._client.get(CONFIGMAPS, self._namespace, self._name)
        except NotFound:
            obj = None
        except ApiError as e:
            raise StartupError(f"cannot read {self._where}: {e}") from e
        try:
            return self._parse(obj)
        except ConfigError as e:
            if obj is None:
                raise StartupError(
                    f"{self._where} not found: create it (see deployments/config.yaml) "
                    "and the operator will start"
                ) from e
            problems = "; ".join(str(p) for p in e.problems)
            raise StartupError(f"invalid config in {self._where}: {problems}") from e

    def _reject(self, ref: ObjectRef, error: str) -> None:
        self._metrics.config_reloads.labels("error").inc()
        self._metrics.config_valid.set(0)
        log.error(
            "config rejected: keeping the last good config, nothing changed",
            configmap=f"{self._namespace}/{self._name}",
            error=error,
        )
        self._events.warning(
            ref, "InvalidConfig", f"config rejected, last good config kept: {error}"
        )

    async def _cluster_refusal(self, config: OperatorConfig) -> str | None:
        """The cluster's refusal of the new config's VirtualService (a dry run, so that
        Istio's webhook judges what the offline schema cannot, e.g. a regex istiod cannot
        compile), or None. A cluster that cannot judge it refuses nothing: the config
        passed the offline checks, and istiod being down must not freeze reloads."""
        try:
            return await refusal(self._client, config)
        except ApiError as e:
            log.warning(
                "config reload: could not dry-run its VirtualService; checked offline only",
                configmap=f"{self._namespace}/{self._name}",
                error=str(e),
            )
            return None

    async def _reload_loop(self) -> None:
        while True:
            obj = await self._reloads.get()
            try:
                await self._reload(obj)
            except Exception as e:  # a bug here must not end config reloads for good
                log.error("config reload failed", configmap=self._where, error=repr(e))

    async def _reload(self, obj: JSON | None) -> None:
        where = f"{self._namespace}/{self._name}"
        if obj is None:
            log.error("config map deleted: keeping the last good config", configmap=where)
            return
        ref = ObjectRef(
            "ConfigMap", self._namespace, self._name, uid=str(obj["metadata"].get("uid", ""))
        )
        try:
            loaded = self._parse(obj)
        except ConfigError as e:
            self._reject(ref, str(e))
            return
        old = self.config()
        if loaded.config == old:
            self._metrics.config_valid.set(1)
            return
        if (refused := await self._cluster_refusal(loaded.config)) is not None:
            self._reject(ref, f"the cluster refuses its VirtualService: {refused}")
            return
        self._metrics.config_valid.set(1)
        for warning in loaded.warnings:
            log.warning(warning, configmap=where)
        changes = diff_configs(old, loaded.config)
        self.current = loaded.config
        await self._on_change(loaded.config)
        self._metrics.config_reloads.labels("success").inc()
        log.info("config reloaded", configmap=where, changes=changes)
        self._events.normal(ref, "ConfigReloaded", "; ".join(changes) or "config reloaded")
