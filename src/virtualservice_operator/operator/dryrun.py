"""Let the cluster judge a config's VirtualService without storing anything.

A sample VirtualService (Service `sample-service` in the default namespace, with a
developer route for each developer namespace, as the operator would write it) is created
with `dryRun=All` and strict field validation: the API server checks it against the
VirtualService CRD it serves and runs the admission chain, so Istio's validating webhook
(istiod), where installed, judges it too. The sample gets a generated name so that an
existing VirtualService never makes the answer "already exists".

Used by `check-config --server` and by the operator on a config reload (a template the
cluster refuses is refused like an invalid one, the last good config kept).
"""

from __future__ import annotations

from virtualservice_operator.domain.config import SAMPLE_SERVICE, OperatorConfig
from virtualservice_operator.domain.desired import compute_desired
from virtualservice_operator.domain.model import ServiceInfo, ServicePort
from virtualservice_operator.kube.client import JSON, ApiError, Forbidden, Invalid, KubeClient
from virtualservice_operator.operator.kinds import virtual_service_kind


def sample_virtual_service(config: OperatorConfig) -> JSON:
    """The VirtualService the operator would write for a Service in every namespace."""
    port = (ServicePort(80, "http"),)
    services = {ns: ServiceInfo(ns, SAMPLE_SERVICE, ports=port) for ns in config.watched_namespaces}
    manifest = compute_desired(config, SAMPLE_SERVICE, services).virtual_service
    assert manifest is not None  # a Service in the default namespace always gets one
    metadata = manifest["metadata"]
    metadata["generateName"] = f"{metadata.pop('name')}-"
    return manifest


async def refusal(client: KubeClient, config: OperatorConfig) -> str | None:
    """The cluster's message refusing `config`'s sample VirtualService, or None when it
    admits it. Raises ApiError when the cluster cannot judge it (unreachable, namespace
    or CRD missing, no `create` right, a webhook that cannot be called)."""
    manifest = sample_virtual_service(config)
    kind = virtual_service_kind(manifest["apiVersion"])
    try:
        await client.create(kind, config.default_namespace, manifest, dry_run=True)
    except ApiError as e:
        if is_refusal(e):
            return e.message
        raise
    return None


def is_refusal(error: ApiError) -> bool:
    """A judgement on the VirtualService itself, not a failure to ask (RBAC, no CRD...)."""
    if isinstance(error, Invalid) or error.status == 400:
        return True  # schema (422), strict field validation or a webhook's denial (400)
    # A webhook may deny with a 403 of its own; RBAC's 403 never names a webhook.
    return isinstance(error, Forbidden) and "admission webhook" in error.message
