"""The reconciler: for one Service name, make the cluster equal to the desired state.

Contract (as controller-runtime's): `reconcile(name)` returns a `Result` (optionally
asking to be called again after a delay), raises to be retried with back-off, or raises
`TerminalError` when retrying cannot help (a template error: the config must change).

Level-triggered: nothing about the event that caused the call is known or needed. The
desired state is recomputed from the cache (`desired.compute_desired`), compared with
what is cached (`plan.plan`), and only the difference is written: a converged name costs
no request at all. The VirtualService is written first; a name's placeholders, being
independent objects, are written concurrently (at most `parallel` at once).
A 409 (someone changed the object since we read it) is retried from a fresh read with
exponential back-off; after the last attempt it is logged as "retry exhausted" and
raised, so the queue requeues the name with rate limiting.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import structlog

from virtualservice_operator.cache import ClusterCache
from virtualservice_operator.config import OperatorConfig
from virtualservice_operator.constants import virtual_service_name
from virtualservice_operator.desired import compute_desired
from virtualservice_operator.events import EventRecorder, ObjectRef
from virtualservice_operator.kube import (
    JSON,
    SERVICES,
    VIRTUAL_SERVICES,
    AlreadyExists,
    Conflict,
    Kind,
    KubeClient,
    NotFound,
    virtual_service_kind,
)
from virtualservice_operator.model import ServiceInfo
from virtualservice_operator.plan import Action, plan
from virtualservice_operator.template import TemplateError

log = structlog.get_logger("reconciler")


@dataclass(frozen=True)
class Result:
    requeue_after: float | None = None


class TerminalError(Exception):
    """Retrying will not help until something else changes (the config, a template)."""


class WriteConflict(Conflict):
    """A write refused because the object changed since it was read (or appeared, or went)."""

    def __init__(self, kind: str, status: int, reason: str, message: str) -> None:
        super().__init__(status, reason, f"{kind} {message}")
        self.kind = kind


class RetryExhausted(Exception):
    """Conflicts on every attempt; the queue retries later with rate limiting."""


# One round for up to 16 developer namespaces: a name's placeholders go out together.
PLACEHOLDER_WRITES_IN_FLIGHT = 16


class Reconciler(Protocol):
    async def reconcile(self, key: str) -> Result: ...


class WriteObserver(Protocol):
    def write(self, verb: str, kind: str) -> None: ...
    def conflict(self, kind: str) -> None: ...


class _NoObserver:
    def write(self, verb: str, kind: str) -> None:
        pass

    def conflict(self, kind: str) -> None:
        pass


_PAST = {"create": "created", "update": "updated", "delete": "deleted", "unmark": "released"}


class VirtualServiceReconciler:
    def __init__(
        self,
        client: KubeClient,
        cache: ClusterCache,
        config: Callable[[], OperatorConfig],
        events: EventRecorder,
        *,
        observer: WriteObserver | None = None,
        attempts: int = 5,
        backoff: float = 0.05,
        parallel: int = PLACEHOLDER_WRITES_IN_FLIGHT,
    ) -> None:
        self._client = client
        self._cache = cache
        self._config = config
        self._events = events
        self._observer = observer or _NoObserver()
        self._attempts = attempts
        self._backoff = backoff
        self._parallel = parallel
        self._warned: dict[str, tuple[str, ...]] = {}

    async def reconcile(self, key: str) -> Result:
        config = self._config()
        name = key
        for attempt in range(1, self._attempts + 1):
            if attempt == 1:
                services, vss = self._cache.snapshot(config, name)
            else:
                services, vss = await self._cache.fresh(config, name)
            source = _source_ref(config, name, services)
            try:
                desired = compute_desired(config, name, services)
            except TemplateError as e:
                log.error(
                    "template error: nothing written or deleted",
                    service=name,
                    namespace=config.default_namespace,
                    error=str(e),
                )
                self._events.warning(
                    source,
                    "TemplateError",
                    f"virtualServiceTemplate cannot be rendered for {name}: {e}",
                )
                raise TerminalError(str(e)) from e
            for note in desired.notes:
                log.debug(note, service=name)
            the_plan = plan(desired, config=config, services=services, virtual_services=vss)
            self._warn(name, source, the_plan.warnings)
            done: list[Action] = []
            try:
                await self._apply(the_plan.actions, source, done)
                return Result()
            except Conflict as e:
                self._observer.conflict(e.kind if isinstance(e, WriteConflict) else "Service")
                if attempt == self._attempts:
                    log.error(
                        "conflict: retry exhausted, requeued with back-off",
                        service=name,
                        namespace=config.default_namespace,
                        virtualservice=virtual_service_name(name),
                        attempts=attempt,
                        error=e.message,
                    )
                    raise RetryExhausted(f"{name}: {attempt} conflicts in a row") from e
                delay = self._backoff * 2 ** (attempt - 1)
                log.info(
                    "conflict: object changed since read, retrying from a fresh read",
                    service=name,
                    namespace=config.default_namespace,
                    attempt=attempt,
                    retry_in_s=delay,
                    error=e.message,
                )
                await asyncio.sleep(delay)
            finally:
                self._record_events(source, done)
        raise AssertionError("unreachable")

    async def _apply(
        self, actions: tuple[Action, ...], source: ObjectRef, done: list[Action]
    ) -> None:
        """VirtualService actions in plan order (a new one exists before an orphan goes);
        then the placeholders, which are independent objects, up to `parallel` at once."""
        for action in actions:
            if action.kind == "VirtualService":
                await self._execute(action, source)
                done.append(action)
        services = [a for a in actions if a.kind != "VirtualService"]
        if not services:
            return
        gate = asyncio.Semaphore(self._parallel)

        async def one(action: Action) -> None:
            async with gate:
                await self._execute(action, source)
                done.append(action)

        results = await asyncio.gather(*(one(a) for a in services), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            # A conflict first: it is retried from a fresh read; anything else as it came.
            conflicts = [e for e in errors if isinstance(e, Conflict)]
            raise (conflicts or errors)[0]

    def _record_events(self, source: ObjectRef, done: list[Action]) -> None:
        """One Event per kind of change per reconcile, naming every object it touched: a
        Service whose name gets ten placeholders gets one PlaceholderCreated Event, not ten
        (the same aggregation client-go's event correlator applies to similar events)."""
        groups: dict[tuple[str, str], list[Action]] = {}
        for action in done:
            groups.setdefault((action.kind, action.verb), []).append(action)
        for (kind, verb), actions in groups.items():
            past = _PAST[verb]
            prefix = "VirtualService" if kind == "VirtualService" else "Placeholder"
            objects = ", ".join(f"{a.namespace}/{a.name}" for a in actions)
            why = "; ".join(dict.fromkeys(a.reason for a in actions))
            self._events.normal(
                source, f"{prefix}{past.capitalize()}", f"{kind} {objects} {past}: {why}"
            )

    async def _execute(self, action: Action, source: ObjectRef) -> None:
        if action.kind == "Service":
            kind = SERVICES
        elif action.body:  # the API server wants body and URL versions to agree
            kind = virtual_service_kind(str(action.body["apiVersion"]))
        else:
            kind = VIRTUAL_SERVICES
        ns, name = action.namespace, action.name
        try:
            if action.verb == "delete":
                with contextlib.suppress(NotFound):  # already gone: what we wanted
                    await self._client.delete(
                        kind, ns, name, uid=action.uid, resource_version=action.resource_version
                    )
                self._cache.record_delete(action.kind, ns, name)
            else:
                self._cache.record_write(action.kind, await self._write(kind, action))
        except Conflict as e:
            raise WriteConflict(action.kind, e.status, e.reason, f"{ns}/{name}: {e.message}") from e
        self._observer.write(action.verb, action.kind)
        fields = {"service": source.name, "namespace": ns}
        if action.kind == "VirtualService":
            fields["virtualservice"] = name
        log.info(
            f"{action.kind} {_PAST[action.verb]}", reason=action.reason, kind=action.kind, **fields
        )

    async def _write(self, kind: Kind, action: Action) -> JSON:
        """Create, update or unmark; the API server's answer. A create that finds the
        object there, or an update that finds it gone, is a conflict: re-read and re-plan."""
        ns, name, body = action.namespace, action.name, action.body
        assert body is not None
        if action.verb == "create":
            try:
                return await self._client.create(kind, ns, body)
            except AlreadyExists as e:
                message = f"{action.kind} {ns}/{name} already exists"
                raise Conflict(e.status, e.reason, message) from e
        if action.verb == "update":
            try:
                return await self._client.replace(kind, ns, name, body)
            except NotFound as e:
                raise Conflict(e.status, e.reason, f"{action.kind} {ns}/{name} is gone") from e
        assert action.verb == "unmark", action.verb
        return await self._client.merge_patch(kind, ns, name, body)

    def _warn(self, name: str, source: ObjectRef, warnings: tuple[str, ...]) -> None:
        # Say each warning once per change, not on every resync.
        if self._warned.get(name, ()) == warnings:
            return
        if warnings:
            self._warned[name] = warnings
        else:
            self._warned.pop(name, None)
        for warning in warnings:
            log.warning(
                warning,
                service=name,
                namespace=source.namespace,
                virtualservice=virtual_service_name(name),
            )
            reason = (
                "UnmanagedVirtualService"
                if "without label" in warning
                else "VirtualServiceConflict"
            )
            self._events.warning(source, reason, warning)


def _source_ref(config: OperatorConfig, name: str, services: dict[str, ServiceInfo]) -> ObjectRef:
    svc = services.get(config.default_namespace)
    return ObjectRef("Service", config.default_namespace, name, uid=svc.uid if svc else "")
