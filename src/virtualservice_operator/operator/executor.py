"""The one place that sends the operator's writes: it executes the Actions `plan` made.

Every create, update, unmark and delete of a Service or VirtualService goes through
`Executor.execute` (a test checks that no other module calls the client's write
methods, Leases and Events aside). So the planner's safety rules hold for every
writer, and the writes and conflicts are counted where they happen.

Only a leader writes: with leader election, `leading` says whether we hold the Lease
(the elector clears it the moment it sees the Lease lost). No write is sent without it,
and a write answered after the loss was seen raises `NotLeading` instead of being
reported done: the process is ending and another replica may be acting.

With `dry_run`, nothing is sent: each write is logged ("dry-run: would create ...") and
counted (`virtualservice_operator_dry_run_writes_total`) instead, and the cache is left
as it was.

A write into a namespace that does not exist (404 naming the namespace) or is being
deleted (403 NamespaceTerminating) raises `NamespaceGone`: no permission is missing and
no retry can help until the namespace is there, which the namespace informer reports.

After each write the API server's answer is recorded in the cache, so that the next
reconcile sees it before the watch brings it. A write refused because the object
changed since it was read (409, a create that finds the object there, an update that
finds it gone) raises `WriteConflict`: the reconciler requeues the name, and its next
pass reads it afresh and plans again. A write the cluster refuses as such (its schema,
or a validating webhook such as Istio's, denies the object) raises `WriteRefused`:
sending it again cannot help until the object the operator wants changes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog

from virtualservice_operator.domain.plan import Action
from virtualservice_operator.kube.client import (
    JSON,
    SERVICES,
    ApiError,
    Conflict,
    Forbidden,
    Kind,
    KubeClient,
    NotFound,
)
from virtualservice_operator.operator.cache import ClusterCache
from virtualservice_operator.operator.dryrun import is_refusal
from virtualservice_operator.operator.kinds import VIRTUAL_SERVICES, virtual_service_kind
from virtualservice_operator.runtime.leader import NotLeading
from virtualservice_operator.runtime.metrics import OperatorMetrics
from virtualservice_operator.runtime.reconcile import TerminalError

log = structlog.get_logger("executor")


class WriteConflict(Conflict):
    """A write refused because the object changed since it was read (or appeared, or went)."""

    def __init__(self, action: Action, error: Conflict | NotFound) -> None:
        message = f"{action.kind} {action.namespace}/{action.name}: {error.message}"
        super().__init__(error.status, error.reason, message)
        self.action = action


class MissingPermission(Forbidden):
    """A write the operator's RBAC does not allow (403): says which right, where, and how
    to grant it. Retried with back-off: granting the right is all it takes."""

    def __init__(self, action: Action, error: Forbidden) -> None:
        verb = "patch" if action.verb == "unmark" else action.verb
        resource = "services" if action.kind == "Service" else "virtualservices"
        message = (
            f"the operator may not {verb} {resource} in namespace {action.namespace} "
            f"({action.kind} {action.name}): grant it in the operator's ClusterRole, or with "
            f"the chart's rbac.scope=namespaced list {action.namespace} in the config's "
            "namespaces and upgrade the release"
        )
        super().__init__(error.status, error.reason, message)
        self.action = action


# The operator's writes in flight at once, all workers together: what it asks of the API
# server at most, however many names are being reconciled (bench/README.md, "A slow API
# server": the API server's write rate stops rising well below this).
WRITES_IN_FLIGHT = 32


class NamespaceGone(ApiError):
    """A write into a namespace that does not exist, or is being deleted."""

    def __init__(self, action: Action, error: ApiError) -> None:
        super().__init__(error.status, error.reason, error.message, details=error.details)
        self.action = action


def _namespace_gone(error: ApiError) -> bool:
    details = error.details
    if isinstance(error, NotFound):  # `namespaces "staging" not found`
        return details.get("kind") == "namespaces"
    causes = details.get("causes") or []
    return any(isinstance(c, dict) and c.get("reason") == "NamespaceTerminating" for c in causes)


class WriteRefused(TerminalError):
    """A write the cluster judged and refused (schema, field validation, a validating
    webhook such as istiod's): not retried until the name or the config changes."""

    def __init__(self, action: Action, error: ApiError) -> None:
        super().__init__(
            f"{action.kind} {action.namespace}/{action.name} refused by the cluster "
            f"({action.verb}), not retried until the Service or the config changes: "
            f"{error.message}"
        )
        self.action = action


class Executor:
    def __init__(
        self,
        client: KubeClient,
        cache: ClusterCache,
        metrics: OperatorMetrics,
        *,
        leading: Callable[[], bool] = lambda: True,
        dry_run: bool = False,
        in_flight: int = WRITES_IN_FLIGHT,
    ) -> None:
        self._client = client
        self._cache = cache
        self._metrics = metrics
        self._leading = leading
        self.dry_run = dry_run
        self._in_flight = asyncio.Semaphore(in_flight)

    async def execute(self, action: Action) -> None:
        """Send `action`; raises WriteConflict when the object changed since it was read,
        NotLeading when the Lease is lost before or while it is sent."""
        if not self._leading():
            raise NotLeading(f"{action.verb} {action.kind} {action.namespace}/{action.name}")
        if self.dry_run:
            self._pretend(action)
            return
        try:
            async with self._in_flight:
                answer = await self._send(action)
        except (Conflict, NotFound, Forbidden) as e:
            if _namespace_gone(e):
                raise NamespaceGone(action, e) from e
            if isinstance(e, Forbidden):
                if is_refusal(e):  # a webhook's denial, not the operator's RBAC
                    raise WriteRefused(action, e) from e
                self._metrics.forbidden.labels(action.verb, action.kind, action.namespace).inc()
                raise MissingPermission(action, e) from e
            # NotFound: what we were to change is gone
            self._metrics.conflicts.labels(action.kind).inc()
            raise WriteConflict(action, e) from e
        except ApiError as e:
            if action.verb != "delete" and is_refusal(e):
                raise WriteRefused(action, e) from e
            raise
        if not self._leading():
            raise NotLeading(f"{action.verb} {action.kind} {action.namespace}/{action.name}")
        if answer is None:
            self._cache.record_delete(action.kind, action.namespace, action.name)
        else:
            self._cache.record_write(action.kind, answer)
        self._metrics.writes.labels(action.verb, action.kind).inc()

    def _pretend(self, action: Action) -> None:
        fields = {"service": action.name, "namespace": action.namespace}
        if action.kind == "VirtualService":
            fields = {"virtualservice": action.name, "namespace": action.namespace}
        log.info(
            f"dry-run: would {action.verb} {action.kind} {action.namespace}/{action.name}",
            reason=action.reason,
            verb=action.verb,
            kind=action.kind,
            **fields,
        )
        self._metrics.dry_run_writes.labels(action.verb, action.kind).inc()

    async def _send(self, action: Action) -> JSON | None:
        """The API server's answer to the write (None for a delete)."""
        kind, ns, name, body = _kind(action), action.namespace, action.name, action.body
        if action.verb == "delete":
            with contextlib.suppress(NotFound):  # already gone: what we wanted
                await self._client.delete(
                    kind, ns, name, uid=action.uid, resource_version=action.resource_version
                )
            return None
        assert body is not None, action
        if action.verb == "create":
            return await self._client.create(kind, ns, body)  # AlreadyExists is a Conflict
        if action.verb == "update":
            return await self._client.replace(kind, ns, name, body)
        assert action.verb == "unmark", action.verb
        return await self._client.merge_patch(kind, ns, name, body)


def _kind(action: Action) -> Kind:
    if action.kind == "Service":
        return SERVICES
    if action.body:  # the API server wants body and URL versions to agree
        return virtual_service_kind(str(action.body["apiVersion"]))
    return VIRTUAL_SERVICES
