"""The reconciler: for one Service name, make the cluster equal to the desired state.

Contract (as controller-runtime's): `reconcile(name)` returns a `Result` (optionally
asking to be called again after a delay, or requeued with the queue's back-off), raises
to be retried with back-off, or raises `TerminalError` when retrying cannot help (a
template error: the config must change).

Level-triggered: nothing about the event that caused the call is known or needed. The
desired state is recomputed from the cache (`desired.compute_desired`), compared with
what is cached (`plan.plan`), and only the difference is written, by the executor: a
converged name costs no request at all. The VirtualService is written first; a name's
placeholders, being independent objects, are written concurrently (at most `parallel`
at once).

A conflict (someone changed the object since we read it) is never retried here, so no
worker ever sleeps: it is logged with the word `conflict` and the name is requeued
with the queue's per-name back-off (`Result(requeue=True)`); that next pass reads the
name's objects from the API server, not the cache. After `CONFLICTS_BEFORE_EXHAUSTED`
conflicts in a row it is logged as "retry exhausted", and requeued with back-off still.

A namespace that does not exist is a state, not an error: desired state makes nothing
there (the cache knows the namespaces), and a write that finds its namespace gone all
the same (`NamespaceGone`, the namespace informer not there yet) is dropped without a
retry: the namespace's creation queues every name again (`namespaces.py`).

Names whose VirtualService a host conflict holds back are kept in `host_conflicts`
(the gauge `virtualservice_operator_host_conflicts`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from virtualservice_operator.domain.config import OperatorConfig
from virtualservice_operator.domain.constants import virtual_service_name
from virtualservice_operator.domain.desired import compute_desired
from virtualservice_operator.domain.model import ServiceInfo
from virtualservice_operator.domain.plan import Action, PlanWarning, plan
from virtualservice_operator.domain.template import TemplateError
from virtualservice_operator.operator.cache import ClusterCache
from virtualservice_operator.operator.executor import (
    Executor,
    MissingPermission,
    NamespaceGone,
    WriteConflict,
    WriteRefused,
)
from virtualservice_operator.runtime.events import EventRecorder, ObjectRef
from virtualservice_operator.runtime.reconcile import Result, TerminalError

log = structlog.get_logger("reconciler")


# One round for up to 16 developer namespaces: a name's placeholders go out together.
PLACEHOLDER_WRITES_IN_FLIGHT = 16
# Conflicts in a row on one name before each further one is logged as "retry exhausted".
CONFLICTS_BEFORE_EXHAUSTED = 5


_PAST = {"create": "created", "update": "updated", "delete": "deleted", "unmark": "released"}


class VirtualServiceReconciler:
    def __init__(
        self,
        cache: ClusterCache,
        config: Callable[[], OperatorConfig],
        events: EventRecorder,
        executor: Executor,
        *,
        parallel: int = PLACEHOLDER_WRITES_IN_FLIGHT,
    ) -> None:
        self._cache = cache
        self._config = config
        self._events = events
        self._executor = executor
        self._parallel = parallel
        self._warned: dict[str, tuple[PlanWarning, ...]] = {}
        # Names whose last pass met a conflict -> conflicts in a row: read them fresh.
        self._conflicts: dict[str, int] = {}
        self.host_conflicts: set[str] = set()

    async def reconcile(self, key: str) -> Result:
        config = self._config()
        name = key
        if name in self._conflicts:
            services, vss = await self._cache.fresh(config, name)
        else:
            services, vss = self._cache.snapshot(config, name)
        source = _source_ref(config, name, services)
        try:
            desired = compute_desired(config, name, services, self._cache.absent_namespaces(config))
        except TemplateError as e:
            log.error(
                "template error: nothing written or deleted",
                service=name,
                namespace=config.default_namespace,
                error=str(e),
            )
            message = f"virtualServiceTemplate cannot be rendered for {name}: {e}"
            self._events.warning(source, "TemplateError", message)
            raise TerminalError(str(e)) from e
        for note in desired.notes:
            log.debug(note, service=name)
        the_plan = plan(desired, config=config, services=services, virtual_services=vss)
        if the_plan.host_conflicts:
            self.host_conflicts.add(name)
        else:
            self.host_conflicts.discard(name)
        self._warn(name, source, the_plan.warnings)
        done, error = await self._apply(the_plan.actions, source)
        if not self._executor.dry_run:
            self._record_events(source, done)
        if isinstance(error, WriteConflict):
            return self._conflict(name, config, error)
        if isinstance(error, NamespaceGone):
            log.debug(
                f"namespace {error.action.namespace} does not exist or is being deleted: "
                "nothing written there; its creation queues every name again",
                service=name,
                namespace=error.action.namespace,
            )
            self._conflicts.pop(name, None)
            return Result()
        if isinstance(error, MissingPermission):
            log.error(
                f"forbidden: {error.message}",
                service=name,
                namespace=error.action.namespace,
                error=str(error),
            )
            self._events.warning(source, "MissingPermission", error.message)
        if isinstance(error, WriteRefused):
            # The controller logs it once and counts it (a terminal error); the Event
            # tells whoever looks at the Service why its VirtualService did not change.
            self._events.warning(source, "WriteRefused", str(error))
        if error is not None:
            raise error
        self._conflicts.pop(name, None)
        return Result()

    def _conflict(self, name: str, config: OperatorConfig, error: WriteConflict) -> Result:
        count = self._conflicts[name] = self._conflicts.get(name, 0) + 1
        fields = {
            "service": name,
            "namespace": config.default_namespace,
            "virtualservice": virtual_service_name(name),
            "conflicts": count,
            "error": error.message,
        }
        if count >= CONFLICTS_BEFORE_EXHAUSTED:
            log.error("conflict: retry exhausted, requeued with back-off", **fields)
        else:
            log.info("conflict: object changed since read, requeued for a fresh read", **fields)
        return Result(requeue=True)

    async def _apply(
        self, actions: tuple[Action, ...], source: ObjectRef
    ) -> tuple[list[Action], BaseException | None]:
        """The actions done, and the error that stopped the rest (a conflict first).

        VirtualService actions in plan order (a new one exists before an orphan goes);
        then the placeholders, which are independent objects, up to `parallel` at once."""
        done: list[Action] = []
        for action in actions:
            if action.kind == "VirtualService":
                try:
                    await self._execute(action, source)
                except Exception as e:
                    return done, e
                done.append(action)
        gate = asyncio.Semaphore(self._parallel)

        async def one(action: Action) -> Action:
            async with gate:
                await self._execute(action, source)
                return action

        placeholders = [one(a) for a in actions if a.kind != "VirtualService"]
        results = await asyncio.gather(*placeholders, return_exceptions=True)
        done += [r for r in results if isinstance(r, Action)]
        errors = [r for r in results if isinstance(r, BaseException)]
        conflicts = [e for e in errors if isinstance(e, WriteConflict)]
        return done, next(iter(conflicts or errors), None)

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
        await self._executor.execute(action)
        if self._executor.dry_run:
            return  # the executor said what it would have done
        fields = {"service": source.name, "namespace": action.namespace}
        if action.kind == "VirtualService":
            fields["virtualservice"] = action.name
        log.info(
            f"{action.kind} {_PAST[action.verb]}", reason=action.reason, kind=action.kind, **fields
        )

    def _warn(self, name: str, source: ObjectRef, warnings: tuple[PlanWarning, ...]) -> None:
        # Say each warning once per change, not on every resync.
        if self._warned.get(name, ()) == warnings:
            return
        if warnings:
            self._warned[name] = warnings
        else:
            self._warned.pop(name, None)
        for warning in warnings:
            log.warning(
                warning.message,
                service=name,
                namespace=source.namespace,
                virtualservice=virtual_service_name(name),
            )
            self._events.warning(source, warning.reason, warning.message)


def _source_ref(config: OperatorConfig, name: str, services: dict[str, ServiceInfo]) -> ObjectRef:
    svc = services.get(config.default_namespace)
    return ObjectRef("Service", config.default_namespace, name, uid=svc.uid if svc else "")
