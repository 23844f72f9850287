"""`check-config --server`: let the cluster judge a VirtualService rendered from a config
(operator/dryrun.py: a dry-run create of the sample the operator would write, so Istio's
validating webhook judges it too, where installed). Nothing is stored.
"""

from __future__ import annotations

from dataclasses import dataclass

from virtualservice_operator.commands import CommandError
from virtualservice_operator.commands.inspect import with_client
from virtualservice_operator.domain.config import OperatorConfig
from virtualservice_operator.kube.client import ApiError, KubeClient, NotFound
from virtualservice_operator.operator.dryrun import refusal, sample_virtual_service


@dataclass(frozen=True)
class Verdict:
    """The API server's answer: accepted, or refused with its own message."""

    accepted: bool
    where: str  # apiVersion and namespace the sample was sent to
    message: str = ""


def check_on_server(
    config: OperatorConfig, kubeconfig: str | None, context: str | None = None
) -> Verdict:
    """Dry-run create the sample. Raises CommandError when the cluster cannot answer."""
    where = (
        f"{sample_virtual_service(config)['apiVersion']} in namespace {config.default_namespace}"
    )

    async def work(client: KubeClient) -> Verdict:
        try:
            message = await refusal(client, config)
        except ApiError as e:
            hint = " (is the namespace there, and the VirtualService CRD installed?)"
            raise CommandError(
                f"cannot dry-run a VirtualService ({where}): {e}"
                + (hint if isinstance(e, NotFound) else "")
            ) from e
        return Verdict(message is None, where, message or "")

    return with_client(kubeconfig, work, context)
