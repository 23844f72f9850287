"""`check-config --server`: let the cluster judge a VirtualService rendered from a config.

A sample VirtualService (Service `sample-service` in the default namespace, with a
developer route for each developer namespace, as the operator would write it) is created
with `dryRun=All` and strict field validation: the API server checks it against the
VirtualService CRD it serves and runs the admission chain, so Istio's validating webhook,
where installed, judges it too. Nothing is stored. The sample gets a generated name so
that an existing VirtualService never makes the answer "already exists".
"""

from __future__ import annotations

from dataclasses import dataclass

from virtualservice_operator.commands import CommandError
from virtualservice_operator.commands.inspect import with_client
from virtualservice_operator.domain.config import SAMPLE_SERVICE, OperatorConfig
from virtualservice_operator.domain.desired import compute_desired
from virtualservice_operator.domain.model import ServiceInfo, ServicePort
from virtualservice_operator.kube.client import (
    JSON,
    ApiError,
    Forbidden,
    Invalid,
    KubeClient,
    NotFound,
)
from virtualservice_operator.operator.kinds import virtual_service_kind


@dataclass(frozen=True)
class Verdict:
    """The API server's answer: accepted, or refused with its own message."""

    accepted: bool
    where: str  # apiVersion and namespace the sample was sent to
    message: str = ""


def sample_virtual_service(config: OperatorConfig) -> JSON:
    """The VirtualService the operator would write for a Service in every namespace."""
    port = (ServicePort(80, "http"),)
    services = {ns: ServiceInfo(ns, SAMPLE_SERVICE, ports=port) for ns in config.watched_namespaces}
    manifest = compute_desired(config, SAMPLE_SERVICE, services).virtual_service
    assert manifest is not None  # a Service in the default namespace always gets one
    metadata = manifest["metadata"]
    metadata["generateName"] = f"{metadata.pop('name')}-"
    return manifest


def check_on_server(
    config: OperatorConfig, kubeconfig: str | None, context: str | None = None
) -> Verdict:
    """Dry-run create the sample. Raises CommandError when the cluster cannot answer."""
    manifest = sample_virtual_service(config)
    kind = virtual_service_kind(manifest["apiVersion"])
    where = f"{manifest['apiVersion']} in namespace {config.default_namespace}"

    async def work(client: KubeClient) -> Verdict:
        try:
            await client.create(kind, config.default_namespace, manifest, dry_run=True)
        except ApiError as e:
            if _is_refusal(e):
                return Verdict(False, where, e.message)
            hint = " (is the namespace there, and the VirtualService CRD installed?)"
            raise CommandError(
                f"cannot dry-run a VirtualService ({where}): {e}"
                + (hint if isinstance(e, NotFound) else "")
            ) from e
        return Verdict(True, where)

    return with_client(kubeconfig, work, context)


def _is_refusal(error: ApiError) -> bool:
    """A judgement on the VirtualService itself, not a failure to ask (RBAC, no CRD...)."""
    if isinstance(error, Invalid) or error.status == 400:
        return True  # schema (422), strict field validation or a webhook's denial (400)
    # A webhook may deny with a 403 of its own; RBAC's 403 never names a webhook.
    return isinstance(error, Forbidden) and "admission webhook" in error.message
