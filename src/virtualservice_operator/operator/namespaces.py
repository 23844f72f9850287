"""Configured namespaces that do not exist: said once, and acted on when they appear.

A configured namespace (the default one or a developer one) may not exist yet, or may be
deleted while the operator runs. Nothing can be written there, and nothing is tried:
desired state leaves it out (the cache knows the namespaces). What an operator needs is
to hear it once, not once per Service: `MissingNamespaces.check()` compares the
configured namespaces with the cache's and, for each one newly missing, logs one warning
and (on the leader only, so that two replicas make one) records one Warning Event
(`NamespaceMissing`) on the operator's ConfigMap. When one comes back, it logs that and
asks for a resync, so its placeholders are made at once (not at the next -sync-period).
It is a leader-only part of the manager: starting means the Lease is won, and the Events
a standby held back are recorded then.

`check()` runs when the caches are synced, after each config reload and whenever a
namespace is created, deleted or starts terminating. It is cheap (a look-up per
configured namespace) and runs on the event loop, so it needs no lock.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from virtualservice_operator.domain.config import OperatorConfig
from virtualservice_operator.operator.cache import ClusterCache
from virtualservice_operator.runtime.events import EventRecorder, ObjectRef

log = structlog.get_logger("manager")


class MissingNamespaces:
    needs_leader = True

    def __init__(
        self,
        cache: ClusterCache,
        config: Callable[[], OperatorConfig | None],
        events: EventRecorder,
        config_map: Callable[[], ObjectRef],
        on_back: Callable[[], None],
    ) -> None:
        self._cache = cache
        self._config = config
        self._events = events
        self._config_map = config_map
        self._on_back = on_back
        self.reported: dict[str, str] = {}  # namespace -> why it cannot be written in
        self._leading = False

    async def start(self) -> None:
        self._leading = True
        for ns, why in self.reported.items():
            self._event(ns, why)

    async def stop(self) -> None:
        self._leading = False

    def check(self) -> None:
        config = self._config()
        if config is None or not self._cache.namespaces.synced.is_set():
            return
        absent = self._cache.absent_namespaces(config)
        for ns, why in absent.items():
            if self.reported.get(ns) == why:
                continue
            log.warning(self._message(ns, why, config), namespace=ns)
            self._event(ns, why)
        back = [ns for ns in self.reported if ns not in absent and ns in config.watched_namespaces]
        for ns in back:
            log.info(f"namespace {ns} exists: resyncing", namespace=ns)
        self.reported = absent
        if back:
            self._on_back()

    def _message(self, ns: str, why: str, config: OperatorConfig) -> str:
        role = "defaultNamespace" if ns == config.default_namespace else "developerNamespaces"
        return (
            f"namespace {ns} {why} ({role} in the config): nothing is written there until "
            "it exists; the operator acts as soon as it is created"
        )

    def _event(self, ns: str, why: str) -> None:
        config = self._config()
        if self._leading and config is not None:
            message = self._message(ns, why, config)
            self._events.warning(self._config_map(), "NamespaceMissing", message)
